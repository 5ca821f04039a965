"""`widen-bot bench ingest | burst`: figures as `key=value` lines, then a summary line.

ingest: signed, unique deliveries at full speed against `widen-bot serve` and, in the same run and
alternating, against a bare aiohttp handler that only reads the body. The ratio is what matters on a
shared, noisy machine, and so is each server's CPU time per acknowledged delivery. The load generator
speaks minimal HTTP/1.1 over keep-alive sockets so that it, not the servers, is the cheap side.

burst: N uploads through the local DAM (50 requests/s, 429 over it) and the local Slack (1 message/s
per channel, 429 over it), each delivery sent twice, against `widen-bot serve` in its own process.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from bot.sandbox import SlackSandbox, count_announced
from receiver.sandbox_run import CHANNEL, free_port, sandbox_env
from receiver.signing import sign
from widen.sandbox import DamSandbox

BENCH_SECRET = "bench-shared-secret"

BARE_SERVER = """
import sys
from aiohttp import web

async def receive(request):
    await request.read()
    return web.json_response({"status": "accepted"})

try:
    import uvloop
    uvloop.install()
except ImportError:
    pass
app = web.Application(client_max_size=256 * 1024)
app.router.add_post("/webhooks/widen", receive)
app.router.add_get("/healthz", lambda request: web.json_response({"status": "ok"}))
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def figure(key: str, value: object) -> None:
    print(f"{key}={value}", flush=True)


# ---- processes ----------------------------------------------------------------------------------------


def serve_env(port: int, database: Path, dam: DamSandbox, slack: SlackSandbox) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        **sandbox_env(dam, slack),
        "WIDEN_WEBHOOK_SECRET": BENCH_SECRET,
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "DATABASE_URL": f"sqlite:///{database}",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "LOG_LEVEL": "WARNING",
    }


@contextmanager
def process(args: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    # The server's log goes to a file: a pipe nobody reads would block it once full.
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=log)
    proc.log = log  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def log_tail(proc: subprocess.Popen[bytes]) -> str:
    log = proc.log  # type: ignore[attr-defined]
    log.seek(0)
    return str(log.read().decode(errors="replace")[-2000:])


async def wait_healthy(base_url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}: {log_tail(proc)}")
            try:
                if (await client.get(base_url + "/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{base_url} did not come up")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far, all its threads together."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---- ingest ----------------------------------------------------------------------------------------


def _request(body: bytes) -> bytes:
    head = (
        "POST /webhooks/widen HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"X-Widen-Signature: {sign(body, BENCH_SECRET)}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _deliveries(count: int) -> list[bytes]:
    template = {
        "webhook_configuration_id": "976cf9b0-95d0-4dbd-acb0-57fbdaef7b6f",
        "event_context": {"user": {"id": "5f6f1f60-1b5e-4690-8ba0-a40c09b2cf0c", "username": "dam.admin@example.com"}},
        "event_type": "asset_created",
        "date_created": "2021-02-10T22:18:47Z",
    }
    # Each about a different asset, as in a real bulk upload: the worker fetches them at the DAM's pace.
    fresh = ({"webhook_delivery_id": str(uuid.uuid4()), "asset_id": str(uuid.uuid4())} for _ in range(count))
    return [_request(json.dumps(template | ids).encode()) for ids in fresh]


async def _connection(port: int, requests: list[bytes], deadline: float, latencies: list[float],
                      errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while requests and time.perf_counter() < deadline:
            request = requests.pop()
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            if status == 200:
                latencies.append(time.perf_counter() - started)
            else:
                errors.append(status)
    finally:
        writer.close()


async def _load(port: int, seconds: float, connections: int, requests: list[bytes]) -> dict[str, float]:
    latencies: list[float] = []
    errors: list[int] = []
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(*(_connection(port, requests, deadline, latencies, errors) for _ in range(connections)))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies) or [float("nan")]
    return {
        "acknowledged": float(len(latencies)),
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        "errors": float(len(errors)),
    }


async def ingest(*, seconds: float = 5.0, connections: int = 32, rounds: int = 2) -> int:
    figure("machine", f"{os.cpu_count()} cores, python {sys.version.split()[0]}")
    figure("connections", connections)
    figure("seconds_per_round", seconds)
    dam, slack = DamSandbox(), SlackSandbox(channel_rate=1.0)
    await dam.start()
    await slack.start()
    ours_port, bare_port = free_port(), free_port()
    results: dict[str, list[dict[str, float]]] = defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="widen-bot-bench-") as tmp:
        env = serve_env(ours_port, Path(tmp) / "bench.db", dam, slack)
        with process([sys.executable, "-m", "receiver.cli", "serve"], env) as ours, \
                process([sys.executable, "-c", BARE_SERVER, str(bare_port)]) as bare:
            await wait_healthy(f"http://127.0.0.1:{ours_port}", ours)
            await wait_healthy(f"http://127.0.0.1:{bare_port}", bare)
            # Warm both up, then alternate so drifts in machine load hit both sides alike.
            for port in (bare_port, ours_port):
                await _load(port, 0.5, connections, _deliveries(2000))
            for _ in range(rounds):
                for name, port, pid in (("bare", bare_port, bare.pid), ("ours", ours_port, ours.pid)):
                    requests = _deliveries(int(seconds * 12_000))
                    cpu_before = cpu_seconds(pid)
                    result = await _load(port, seconds, connections, requests)
                    # What each acknowledged delivery cost the server: steadier than rates on a busy machine.
                    result["cpu_us"] = (cpu_seconds(pid) - cpu_before) / max(1.0, result["acknowledged"]) * 1e6
                    results[name].append(result)
            ours_rss = peak_rss_mb(ours.pid)
    await dam.stop()
    await slack.stop()

    def mean(name: str, key: str) -> float:
        return statistics.fmean(r[key] for r in results[name])

    for name in ("bare", "ours"):
        figure(f"{name}_deliveries_per_s", f"{mean(name, 'rps'):.0f}")
        figure(f"{name}_p50_ms", f"{mean(name, 'p50_ms'):.2f}")
        figure(f"{name}_p99_ms", f"{mean(name, 'p99_ms'):.2f}")
        figure(f"{name}_errors", f"{sum(r['errors'] for r in results[name]):.0f}")
        figure(f"{name}_cpu_us_per_delivery", f"{mean(name, 'cpu_us'):.0f}")
    figure("ours_peak_rss_mb", f"{ours_rss:.0f}")
    ratio = mean("ours", "rps") / mean("bare", "rps")
    figure("ingest_ratio", f"{ratio:.2f}")
    p99 = mean("ours", "p99_ms")
    verdict = "meets" if ratio >= 0.8 and p99 < 20 else "misses"
    print(f"summary: ingest {mean('ours', 'rps'):.0f}/s acknowledged (durably stored), ratio {ratio:.2f} "
          f"against a bare handler, p99 {p99:.1f} ms at {connections} connections: {verdict} the target "
          f"(ratio >= 0.8, p99 < 20 ms)")
    return 0


# ---- burst -----------------------------------------------------------------------------------------


async def burst(*, events: int = 1000) -> int:
    figure("machine", f"{os.cpu_count()} cores, python {sys.version.split()[0]}")
    figure("events", events)
    dam = DamSandbox(rate_limit=50.0, duplicate_deliveries=True)
    slack = SlackSandbox(channel_rate=1.0)
    await dam.start()
    await slack.start()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="widen-bot-bench-") as tmp:
        env = serve_env(port, Path(tmp) / "bench.db", dam, slack)
        with process([sys.executable, "-m", "receiver.cli", "serve"], env) as ours:
            await wait_healthy(f"http://127.0.0.1:{port}", ours)
            # A configuration delivering to the shared path, signed with its secret.
            async with httpx.AsyncClient(base_url=dam.base_url,
                                         headers={"Authorization": f"Bearer {dam.token}"}) as api:
                await api.post("/webhooks/configurations", json={
                    "event_type": "asset_created", "secret_key": BENCH_SECRET,
                    "delivery_url": f"http://127.0.0.1:{port}/webhooks/widen",
                })
            started = time.monotonic()
            uploaded = [await dam.upload() for _ in range(events)]
            await dam.wait_deliveries_idle()
            figure("delivered_seconds", f"{time.monotonic() - started:.1f}")
            keys = {a: str(dam.assets[a]["external_id"]) for a in uploaded}
            deadline = started + max(120.0, events / 50 * 5)
            counts = count_announced(slack.messages_in(CHANNEL), keys)
            while min(counts.values()) == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.25)
                counts = count_announced(slack.messages_in(CHANNEL), keys)
            burst_seconds = time.monotonic() - started
            await asyncio.sleep(2)  # anything posted late would be a duplicate: give it the chance
            counts = count_announced(slack.messages_in(CHANNEL), keys)
            rss = peak_rss_mb(ours.pid)
            if os.environ.get("BENCH_SHOW_LOG"):
                print(log_tail(ours), file=sys.stderr)
    await dam.stop()
    await slack.stop()

    floor = events / 50
    lost = sum(1 for n in counts.values() if n == 0)
    duplicated = sum(1 for n in counts.values() if n > 1)
    slack_calls = sum(1 for method, _ in slack.calls if method == "chat.postMessage")
    rate_limited = sum(1 for method, outcome in slack.calls if method == "chat.postMessage" and outcome != "ok")
    dam_429 = sum(1 for _, _, status in dam.calls if status == 429)
    figure("burst_seconds", f"{burst_seconds:.1f}")
    figure("floor_seconds", f"{floor:.1f}")
    figure("burst_over_floor", f"{burst_seconds / floor:.2f}")
    figure("slack_calls", slack_calls)
    figure("slack_429", rate_limited)
    figure("slack_messages", len(slack.messages_in(CHANNEL)))
    figure("dam_calls", len(dam.calls))
    figure("dam_429", dam_429)
    figure("lost", lost)
    figure("duplicated", duplicated)
    figure("peak_rss_mb", f"{rss:.0f}")
    ok = lost == 0 and duplicated == 0 and burst_seconds <= 1.2 * floor and slack_calls <= 100 and rss < 150
    print(f"summary: {events} uploads announced in {burst_seconds:.1f} s ({burst_seconds / floor:.2f} x the "
          f"DAM's floor) with {slack_calls} Slack calls, lost {lost}, duplicated {duplicated}, peak RSS "
          f"{rss:.0f} MB: {'meets' if ok else 'misses'} the target")
    return 0 if lost == 0 and duplicated == 0 else 1
