"""Operations: /healthz, /readyz, /metrics, `widen-bot check`, graceful shutdown and secret-free JSON logs.

Through the real server over HTTP with the local DAM and the local Slack; the shutdown and log tests run
`widen-bot serve` as a process, as a container would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.sandbox import SlackSandbox
from bot.slack_requests import post_signed, slash_command_body
from receiver.app import INBOX, WIDEN
from receiver.inbox import Inbox, NewDelivery
from receiver.logs import REDACTED, JsonFormatter, TextFormatter, register_secret
from receiver.routes import create_routed_configuration
from receiver.sandbox_run import CHANNEL, running_stack, sandbox_env
from tests.conftest import SHARED_SECRET, deliver, eventually, fixture_json, signed
from tests.serve_process import ServeProcess
from widen.sandbox import DamSandbox

REPO = Path(__file__).resolve().parents[1]
SEED_ASSET_ID = "3db58e3c-fe98-4437-9637-df299f9d1b06"


def asset_event(asset_id: str = SEED_ASSET_ID, **extra: Any) -> dict[str, Any]:
    return fixture_json("events/asset_created.json") | {"webhook_delivery_id": str(uuid.uuid4()),
                                                       "asset_id": asset_id, **extra}


# ---- /healthz and /readyz --------------------------------------------------------------------------


async def test_healthz_and_readyz_are_200_when_store_slack_and_dam_are_good(tmp_path: Path):
    async with running_stack(tmp_path / "bot.db", ready_cache_seconds=0) as stack, \
            httpx.AsyncClient(base_url=stack.base_url) as http:
        assert (await http.get("/healthz")).status_code == 200
        ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"status": "ready"}


async def test_readyz_is_503_naming_slack_when_slack_refuses_the_token(tmp_path: Path):
    async with running_stack(tmp_path / "bot.db", ready_cache_seconds=0) as stack, \
            httpx.AsyncClient(base_url=stack.base_url) as http:
        stack.slack.token = "xoxb-some-other-workspace"
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        problems = ready.json()["problems"]
        assert len(problems) == 1 and problems[0].startswith("slack:"), problems
        assert "invalid_auth" in problems[0] and "SLACK_BOT_TOKEN" in problems[0]
        assert (await http.get("/healthz")).status_code == 200  # alive, only not ready


async def test_readyz_is_503_naming_the_dam_when_its_token_is_revoked(tmp_path: Path):
    async with running_stack(tmp_path / "bot.db", ready_cache_seconds=0) as stack, \
            httpx.AsyncClient(base_url=stack.base_url) as http:
        stack.dam.token = "revoked"
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["problems"] == ["dam: the DAM refused WIDEN_API_TOKEN"]
        assert stack.settings.widen_api_token is not None
        assert stack.settings.widen_api_token.get_secret_value() not in ready.text


async def test_readyz_is_503_naming_the_store_when_it_cannot_be_written(tmp_path: Path):
    async with running_stack(tmp_path / "bot.db", ready_cache_seconds=0) as stack, \
            httpx.AsyncClient(base_url=stack.base_url) as http:
        # A read-only store, as a full disk or a volume remounted read-only would make it.
        stack.app[INBOX].conn.execute("PRAGMA query_only=ON")
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert [p.split(":")[0] for p in ready.json()["problems"]] == ["store"]
        assert "DATABASE_URL" in ready.json()["problems"][0]


async def test_readyz_results_are_cached_for_ready_cache_seconds(tmp_path: Path):
    async with running_stack(tmp_path / "bot.db", ready_cache_seconds=1.0) as stack, \
            httpx.AsyncClient(base_url=stack.base_url) as http:

        def auth_tests() -> int:
            return sum(1 for method, _ in stack.slack.calls if method == "auth.test")

        answers = await asyncio.gather(*(http.get("/readyz") for _ in range(5)))
        assert [a.status_code for a in answers] == [200] * 5
        assert auth_tests() == 1  # concurrent probes share one check
        stack.slack.token = "xoxb-rotated-elsewhere"
        assert (await http.get("/readyz")).status_code == 200  # still the cached answer
        assert auth_tests() == 1
        await asyncio.sleep(1.1)
        assert (await http.get("/readyz")).status_code == 503
        assert auth_tests() == 2


# ---- /metrics --------------------------------------------------------------------------------------


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, by name and sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_metrics_count_deliveries_calls_retries_latency_depth_and_parked(tmp_path: Path):
    async with running_stack(tmp_path / "bot.db", widen_webhook_secret=SHARED_SECRET, slack_channel_rate=50.0,
                             max_attempts=1) as stack, httpx.AsyncClient(base_url=stack.base_url) as http:
        stack.slack.fail_next("chat.postMessage", 1, status=503)  # retried, then posted
        first = asset_event()
        assert (await deliver(http, first)).status_code == 200
        assert (await deliver(http, first)).status_code == 200  # a duplicate
        assert (await deliver(http, asset_event(), secret="wrong")).status_code == 401
        await eventually(lambda: stack.slack.messages_in(CHANNEL))

        # The DAM refuses one asset: with MAX_ATTEMPTS=1 its delivery is parked at once.
        refused = str(uuid.uuid4())
        stack.dam.fail_next(1, 401, f"/assets/{refused}")
        await deliver(http, asset_event(refused))

        # Slack is slow to answer: while it thinks, the delivery is in flight and counted as waiting.
        stack.slack.answer_delay["chat.postMessage"] = 1.5
        await deliver(http, asset_event())
        await eventually(lambda: len(stack.slack.messages_in(CHANNEL)) == 2)
        response = await http.get("/metrics")
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        during = samples(response.text)
        assert during[("widen_inbox_depth", ())] == 1
        assert during[("widen_inbox_oldest_pending_seconds", ())] > 0
        assert during[("widen_parked_deliveries", ())] == 1

        stack.slack.answer_delay.clear()
        await eventually(lambda: _idle(stack))
        text = (await http.get("/metrics")).text
        after = samples(text)

    def value(name: str, **labels: str) -> float:
        return after.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("widen_deliveries_received_total", event_type="asset_created", outcome="accepted") == 3
    assert value("widen_deliveries_received_total", event_type="asset_created", outcome="duplicate") == 1
    assert value("widen_deliveries_received_total", event_type="unknown", outcome="bad_signature") == 1
    assert value("widen_deliveries_processed_total", outcome="posted") == 2
    assert value("widen_deliveries_processed_total", outcome="parked") == 1
    assert value("widen_slack_calls_total", method="chat.postMessage", outcome="ok") == 2
    assert value("widen_slack_calls_total", method="chat.postMessage", outcome="unavailable") == 1
    assert value("widen_dam_calls_total", operation="get_asset", outcome="ok") == 2
    assert value("widen_dam_calls_total", operation="get_asset", outcome="unauthorized") == 1
    assert value("widen_retries_total", target="slack", reason="5xx") == 1
    assert value("widen_processing_latency_seconds_count") == 2
    assert value("widen_processing_latency_seconds_bucket", le="+Inf") == 2
    assert value("widen_inbox_depth") == 0
    assert value("widen_inbox_oldest_pending_seconds") == 0
    assert value("widen_parked_deliveries") == 1
    assert value("widen_build_info", version=_installed_version()) == 1
    assert 'widen_deliveries_received_total{event_type="asset_created",outcome="accepted"} 3.0' in text
    # Every name is ours; label values an outsider controls (event types) stay a bounded set.
    names = {name for name, _ in after}
    assert all(name.startswith("widen_") for name in names), sorted(names)
    assert {dict(labels).get("event_type") for name, labels in after if name.startswith("widen_deliveries_rec")} \
        <= {"asset_created", "unknown"}


async def test_metrics_keep_sender_chosen_event_types_out_of_label_values(tmp_path: Path):
    async with running_stack(tmp_path / "bot.db", widen_webhook_secret=SHARED_SECRET) as stack, \
            httpx.AsyncClient(base_url=stack.base_url) as http:
        for n in range(3):
            assert (await deliver(http, asset_event(event_type=f"made_up_{n}"))).status_code == 200
        text = (await http.get("/metrics")).text
    assert "made_up" not in text
    assert samples(text)[("widen_deliveries_received_total", (("event_type", "other"), ("outcome", "accepted")))] == 3


def _installed_version() -> str:
    from importlib.metadata import version

    return version("widen-bot")


async def _idle(stack: Any) -> bool:
    stats = await stack.app[INBOX].stats()
    return stats.pending + stats.in_flight == 0


# ---- widen-bot check ---------------------------------------------------------------------------------


async def run_cli(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """The command as a process (without blocking the loop the sandboxes answer on): status, output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "receiver.cli", *args, env=env, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    return int(process.returncode or 0), out.decode()


def serve_env(dam: DamSandbox, slack: SlackSandbox, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(REPO),
        **sandbox_env(dam, slack),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'data' / 'bot.db'}",
        **extra,
    }


async def test_check_passes_with_one_line_per_check(sandboxes, tmp_path: Path):
    dam, slack = sandboxes
    env = serve_env(dam, slack, tmp_path, PUBLIC_BASE_URL="https://widen-bot.example.com")
    status, out = await run_cli("check", env=env, cwd=tmp_path)
    assert status == 0, out
    lines = out.strip().splitlines()
    assert [line.split(":")[0].split()[-1] for line in lines[:-1]] == ["settings", "store", "slack", "dam"]
    assert all(line.startswith("ok ") for line in lines[:-1]), out
    assert lines[-1] == "all checks passed"
    assert not (tmp_path / "data" / "bot.db").exists()  # a check creates nothing


async def test_check_fails_on_a_store_path_that_holds_something_else(sandboxes, tmp_path: Path):
    dam, slack = sandboxes
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "bot.db").write_bytes(b"not a database, a config file put here by mistake\n" * 100)
    status, out = await run_cli("check", env=serve_env(dam, slack, tmp_path), cwd=tmp_path)
    assert status == 1
    assert "FAIL  store:" in out and "is not a usable SQLite database" in out, out
    assert out.strip().splitlines()[-1] == "check failed: store"


def files_in(directory: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in directory.iterdir()}


async def test_check_reads_a_store_serve_left_after_a_crash_without_changing_it(sandboxes, tmp_path: Path):
    dam, slack = sandboxes
    data = tmp_path / "data"
    data.mkdir()
    inbox = Inbox(data / "bot.db")  # as serve leaves it when killed: the WAL not checkpointed
    await inbox.open()
    assert await inbox.accept(NewDelivery(body=b"{}", delivery_id="x", configuration_id="c",
                                          event_type="asset_created", asset_id="a"))
    before = files_in(data)
    assert {"bot.db-wal", "bot.db-shm"} <= before.keys()
    try:
        status, out = await run_cli("check", env=serve_env(dam, slack, tmp_path), cwd=tmp_path)
        assert files_in(data) == before  # no checkpoint, no new or removed file
    finally:
        await inbox.close()
    assert status == 0, out
    assert "ok    store: " in out and "is writable" in out


async def test_check_fails_on_another_programs_sqlite_database(sandboxes, tmp_path: Path):
    dam, slack = sandboxes
    (tmp_path / "data").mkdir()
    with contextlib.closing(sqlite3.connect(tmp_path / "data" / "bot.db")) as conn:
        conn.execute("CREATE TABLE deliveries (id INTEGER, what TEXT)")
        conn.commit()
    status, out = await run_cli("check", env=serve_env(dam, slack, tmp_path), cwd=tmp_path)
    assert status == 1
    assert "has a table deliveries that is not widen-bot's" in out, out


async def test_check_follows_a_symlink_to_the_store_as_serve_does(sandboxes, tmp_path: Path):
    dam, slack = sandboxes
    (tmp_path / "volume").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "bot.db").symlink_to(tmp_path / "volume" / "bot.db")
    status, out = await run_cli("check", env=serve_env(dam, slack, tmp_path), cwd=tmp_path)
    assert status == 0 and f"{tmp_path / 'volume' / 'bot.db'} can be created" in out, out
    # serve opens the target, with its WAL beside it, and keeps what it accepts.
    async with running_stack(tmp_path / "data" / "bot.db", widen_webhook_secret=SHARED_SECRET,
                             slack_channel_rate=50.0) as stack, httpx.AsyncClient(base_url=stack.base_url) as http:
        assert (await deliver(http, asset_event())).status_code == 200
        await eventually(lambda: len(stack.slack.messages_in(CHANNEL)) == 1)
    assert (tmp_path / "volume" / "bot.db").is_file() and not (tmp_path / "data" / "bot.db-wal").exists()


async def test_check_names_a_store_path_it_cannot_reach_without_a_traceback(sandboxes, tmp_path: Path):
    dam, slack = sandboxes
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "bot.db").symlink_to(tmp_path / "data" / "bot.db")  # a loop
    status, out = await run_cli("check", env=serve_env(dam, slack, tmp_path), cwd=tmp_path)
    assert status == 1 and "FAIL  store:" in out and "cannot be reached" in out, out
    assert "Traceback" not in out


@pytest.mark.parametrize("name", ["a#b.db", "a?mode=ro.db", "a%20b.db"])
async def test_a_store_path_with_uri_characters_works(sandboxes, tmp_path: Path, name: str):
    dam, slack = sandboxes
    env = serve_env(dam, slack, tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'data' / name}")
    status, out = await run_cli("check", env=env, cwd=tmp_path)
    assert status == 0, out
    async with running_stack(tmp_path / "data" / name, widen_webhook_secret=SHARED_SECRET,
                             slack_channel_rate=50.0) as stack, httpx.AsyncClient(base_url=stack.base_url) as http:
        assert (await deliver(http, asset_event())).status_code == 200
        await eventually(lambda: len(stack.slack.messages_in(CHANNEL)) == 1)
        assert (await http.get("/metrics")).status_code == 200
        assert (await http.post("/webhooks/widen/not-a-token", content=b"{}")).status_code == 404
    assert sorted(p.name for p in (tmp_path / "data").iterdir() if not p.name.startswith(name)) == []


async def test_check_notes_a_missing_public_base_url_without_failing(sandboxes, tmp_path: Path):
    dam, slack = sandboxes
    status, out = await run_cli("check", env=serve_env(dam, slack, tmp_path), cwd=tmp_path)
    assert status == 0, out
    assert "note  settings: PUBLIC_BASE_URL is not set" in out and out.strip().endswith("all checks passed")


async def test_check_counts_a_missing_token_once_as_a_settings_failure(sandboxes, tmp_path: Path):
    dam, slack = sandboxes
    env = serve_env(dam, slack, tmp_path)
    del env["WIDEN_API_TOKEN"]
    status, out = await run_cli("check", env=env, cwd=tmp_path)
    assert status == 1
    assert "skip  dam: WIDEN_API_TOKEN is not set" in out
    assert out.strip().splitlines()[-1] == "check failed: settings"


async def test_check_names_slack_when_it_refuses_the_token(sandboxes, tmp_path: Path):
    dam, slack = sandboxes
    status, out = await run_cli("check", env=serve_env(dam, slack, tmp_path, SLACK_BOT_TOKEN="xoxb-not-this-one"),
                                cwd=tmp_path)
    assert status != 0
    assert "FAIL  slack: auth.test answered invalid_auth" in out
    assert out.strip().splitlines()[-1] == "check failed: slack"
    assert "xoxb-not-this-one" not in out


async def test_check_names_the_dam_when_it_is_down(sandboxes, tmp_path: Path):
    dam, slack = sandboxes
    env = serve_env(dam, slack, tmp_path)
    await dam.stop()
    status, out = await run_cli("check", env=env, cwd=tmp_path)
    assert status != 0
    assert "FAIL  dam:" in out and "WIDEN_API_URL" in out
    assert out.strip().splitlines()[-1] == "check failed: dam"
    assert "Traceback" not in out


async def test_check_names_an_invalid_setting_without_a_traceback(sandboxes, tmp_path: Path):
    dam, slack = sandboxes
    env = serve_env(dam, slack, tmp_path, WIDEN_API_URL="not a url")
    del env["SLACK_CHANNEL"]
    status, out = await run_cli("check", env=env, cwd=tmp_path)
    # Exits as any failed check does, naming every problem at once: the invalid value and the missing one.
    assert status == 1
    lines = out.strip().splitlines()
    assert lines[0].startswith("FAIL  settings: WIDEN_API_URL:")
    assert any(line.startswith("FAIL  settings: SLACK_CHANNEL") for line in lines), out
    assert lines[-1] == "check failed: settings"
    assert "Traceback" not in out


# ---- graceful shutdown -----------------------------------------------------------------------------


def rows(database: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(database) as conn:
        return conn.execute("SELECT state, attempts FROM deliveries ORDER BY row_id").fetchall()


async def test_sigterm_stops_accepting_releases_in_flight_work_and_checkpoints_the_store(sandboxes, tmp_path: Path):
    dam, slack = sandboxes
    database = tmp_path / "bot.db"
    server = ServeProcess(dam, slack, database, tmp_path / "serve.log", WIDEN_WEBHOOK_SECRET=SHARED_SECRET,
                          SHUTDOWN_TIMEOUT="1", LOG_FORMAT="json")
    dam.latency = 4  # the DAM is slow: the delivery's asset fetch is in flight when SIGTERM comes
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            assert (await deliver(http, asset_event())).status_code == 200
            await eventually(lambda: rows(database) == [("claimed", 1)])
            assert server.process is not None
            started = time.monotonic()
            server.process.send_signal(15)
            await asyncio.sleep(0.5)
            with pytest.raises(httpx.TransportError):  # no longer accepting while it winds down
                await deliver(http, asset_event())
            while server.process.poll() is None:
                await asyncio.sleep(0.05)
            took = time.monotonic() - started
        assert server.process.returncode == 0
        assert took < 1 + 2, took  # SHUTDOWN_TIMEOUT plus a little, not the DAM's 4 s
        # Released untouched (the attempt does not count) and the WAL folded into the database.
        assert rows(database) == [("pending", 0)]
        wal = database.with_name(database.name + "-wal")
        assert not wal.exists() or wal.stat().st_size == 0
        log = (tmp_path / "serve.log").read_text()
        assert "releasing 1 unfinished deliveries" in log

        dam.latency = 0
        await server.start()
        await eventually(lambda: len(slack.messages_in(CHANNEL)) == 1, timeout=20)
        await eventually(lambda: rows(database) == [("posted", 1)])
        assert server.terminate() == 0
    finally:
        server.stop()


# ---- logs: JSON lines, and never a secret ------------------------------------------------------------


def realistic_secrets() -> dict[str, str]:
    return {
        "slack_bot_token": f"xoxb-{secrets.randbelow(10**12)}-{secrets.randbelow(10**13)}-{secrets.token_hex(12)}",
        "slack_signing_secret": secrets.token_hex(16),
        "widen_api_token": f"acme/{secrets.token_hex(16)}",
        "widen_webhook_secret": secrets.token_urlsafe(32),
    }


def settled(database: Path, count: int) -> bool:
    """`count` deliveries stored and every one of them posted."""
    states = [state for state, _ in rows(database)]
    return len(states) == count and set(states) == {"posted"}


async def slash_command(slack: SlackSandbox, http: httpx.AsyncClient, text: str, signing_secret: str) -> list[Any]:
    """`/widen <text>` as Slack sends it, signed; the answers the bot gives (filled in as they come)."""
    url = slack.new_response_url()
    body = slash_command_body(text, user_id="U0ADMIN", response_url=url, channel_id=CHANNEL)
    assert (await post_signed(http, "/slack/events", body, signing_secret)).status_code == 200
    return slack.responses[url.rsplit("/", 1)[1]]


async def test_a_full_run_at_debug_logs_json_lines_and_no_secret(tmp_path: Path):
    values = realistic_secrets()
    dam, slack = DamSandbox(token=values["widen_api_token"]), SlackSandbox(token=values["slack_bot_token"])
    await dam.start()
    await slack.start()
    log_file, database = tmp_path / "serve.log", tmp_path / "bot.db"
    server = ServeProcess(dam, slack, database, log_file, LOG_LEVEL="DEBUG", LOG_FORMAT="json",
                          SLACK_SIGNING_SECRET=values["slack_signing_secret"],
                          WIDEN_WEBHOOK_SECRET=values["widen_webhook_secret"], READY_CACHE_SECONDS="0")
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=20) as http:
            secret = values["widen_webhook_secret"]
            # Secrets where the libraries print them: in request URLs (the DAM client), in request and response
            # bodies (slack_sdk), URL-encoded ("/" in the DAM token) or not. Slack fails twice first, and
            # the DAM refuses the token once (that delivery is retried later).
            slack.fail_next("chat.postMessage", 2, status=503)
            dam.fail_next(1, 401, "/assets/")
            for leaky in (asset_event(asset_id=secret), asset_event(asset_id=values["widen_api_token"]),
                          asset_event(event_type=f"{values['slack_bot_token']} {values['slack_signing_secret']}")):
                assert (await deliver(http, leaky, secret=secret)).status_code == 200
            await eventually(lambda: settled(database, 3), timeout=30)

            # /widen create generates a secret_key (sent to the DAM, kept in the store), then a ping uses it.
            created = await slash_command(slack, http, "create asset_created", values["slack_signing_secret"])
            await eventually(lambda: created and dam.configurations, timeout=20)
            (configuration,) = dam.configurations.values()
            values["generated secret_key"] = str(configuration.secret_key)
            pinged = await slash_command(slack, http, f"ping {configuration.id}", values["slack_signing_secret"])
            await eventually(lambda: pinged and settled(database, 4), timeout=20)
            odd = await slash_command(slack, http, f"inspect {secret}", values["slack_signing_secret"])
            await eventually(lambda: odd, timeout=20)
            # A delivery to the new URL, signed with the generated key and carrying it.
            routed = fixture_json("events/ping.json") | {
                "webhook_configuration_id": configuration.id, "webhook_delivery_id": str(uuid.uuid4()),
                "event_type": f"key {configuration.secret_key}"}
            assert (await deliver(http, routed, secret=values["generated secret_key"],
                                  path=urlsplit(configuration.delivery_url).path)).status_code == 200
            await eventually(lambda: settled(database, 5), timeout=20)

            # Wrong signatures with secrets in odd places: the signature header, the body, the URL, a header.
            body = json.dumps(asset_event(event_type=values["slack_bot_token"])).encode()
            await http.post("/webhooks/widen", content=body, headers={"X-Widen-Signature": secret})
            await http.post("/webhooks/widen", content=b"{" + secret.encode(), headers=signed(b"{", "nope"))
            await http.post(f"/webhooks/widen/{secret}", content=body, headers=signed(body, secret))
            await http.post(f"/webhooks/widen?token={values['slack_bot_token']}", content=body,
                            headers={"Authorization": f"Bearer {values['widen_api_token']}"})
            # Readiness while Slack is down and while the DAM refuses the token, then healthy again.
            slack.fail_next("auth.test", 1, status=503)
            assert (await http.get("/readyz")).status_code == 503
            dam.token = "revoked"
            assert (await http.get("/readyz")).status_code == 503
            dam.token = values["widen_api_token"]
            assert (await http.get("/readyz")).status_code == 200
            await eventually(lambda: settled(database, 5), timeout=30)
        assert server.terminate() == 0
    finally:
        server.stop()
        await dam.stop()
        await slack.stop()

    text = log_file.read_text()
    entries = [json.loads(line) for line in text.splitlines()]  # every line is one JSON object
    assert entries and all(isinstance(e, dict) and {"time", "level", "message"} <= e.keys() for e in entries)
    loggers = {e["logger"] for e in entries}
    # Everyone really spoke at DEBUG: slack_sdk prints requests, responses and headers, Bolt the
    # requests it handles, the DAM client every call to the DAM (its URL carries the odd ids above).
    assert any(name.startswith("slack_sdk") for name in loggers), loggers
    assert any(name.startswith("slack_bolt") for name in loggers), loggers
    assert "widen.client" in loggers, loggers
    # The ids of a delivery travel with its lines.
    assert any(e.get("delivery_id") and e.get("asset_id") for e in entries)
    for name, value in values.items():
        assert value not in text, f"{name} appears in the log"
        assert value not in json.dumps([e["message"] for e in entries], ensure_ascii=False), name
    assert "xoxb-" not in text  # nothing token-shaped either


@contextmanager
def captured_logs() -> Iterator[list[str]]:
    """Every record of every logger at DEBUG, formatted as serve would write it (JSON and text)."""
    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(JsonFormatter().format(record))
            lines.append(TextFormatter().format(record))

    root = logging.getLogger()
    handler, level = Capture(), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    quiet = {name: logging.getLogger(name).level for name in ("httpx", "httpcore", "aiohttp.access")}
    for name in quiet:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        for name, old in quiet.items():
            logging.getLogger(name).setLevel(old)


async def test_generated_secret_keys_never_reach_a_log_line(tmp_path: Path):
    with captured_logs() as lines:
        async with running_stack(tmp_path / "bot.db", slack_channel_rate=50.0) as stack:
            created = await create_routed_configuration(
                stack.app[WIDEN], stack.app[INBOX], public_base_url=stack.base_url,
                event_type="asset_created", created_by="U0ADMIN",
            )
            secret_key = stack.dam.configurations[created.id].secret_key
            assert secret_key
            await stack.app[WIDEN].ping_webhook(created.id)
            await stack.dam.upload()
            await eventually(lambda: len(stack.slack.messages_in(CHANNEL)) == 2)
            # Whatever a library might log about it, at any level, with or without a traceback.
            logging.getLogger("some.library").debug("signing with %s", secret_key)
            try:
                raise RuntimeError(f"could not verify with {secret_key}")
            except RuntimeError:
                logging.getLogger("some.library").exception("failed")
    assert any("signing with" in line for line in lines)
    assert not [line for line in lines if secret_key in line]


def record(message: str, *args: object, exc: BaseException | None = None, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("test", logging.INFO, __file__, 1, message, args,
                            (type(exc), exc, exc.__traceback__) if exc else None)
    rec.__dict__.update(extra)
    return rec


def test_json_lines_have_time_level_message_and_ids_and_stay_json_when_scrubbed():
    secret = 'we"ird\\secret/with spaces+ünïcode'
    register_secret(secret)
    try:
        raise ValueError(f"bad key {secret}")
    except ValueError as exc:
        error = exc
    line = JsonFormatter().format(record("posted %s; Authorization: Bearer abc\\\"def", secret, exc=error,
                                         delivery_id="d-1", configuration_id="c-1", asset_id="a-1"))
    assert "\n" not in line
    entry = json.loads(line)
    assert {"time", "level", "message", "logger", "exception"} <= entry.keys()
    assert entry["level"] == "INFO"
    assert (entry["delivery_id"], entry["configuration_id"], entry["asset_id"]) == ("d-1", "c-1", "a-1")
    assert secret not in json.dumps(entry, ensure_ascii=False) and secret not in line
    assert entry["message"].startswith(f"posted {REDACTED}; Authorization: {REDACTED}")
    assert REDACTED in entry["exception"] and "ValueError" in entry["exception"]


def test_secrets_are_scrubbed_in_their_url_encoded_and_token_shaped_forms():
    secret = "acme/0123456789abcdef+="
    register_secret(secret)
    text = TextFormatter().format(record("GET /x?key=acme%2F0123456789abcdef%2B%3D and xoxb-1-2-abc and xapp-1-A-2"))
    assert "0123456789abcdef" not in text
    assert "xoxb-1" not in text and "xapp-1" not in text
    assert text.count(REDACTED) == 3


def test_short_values_are_not_treated_as_secrets():
    register_secret("abc")  # would redact ordinary words
    assert "abc" in TextFormatter().format(record("abc def"))


def test_uncaught_exceptions_and_warnings_become_scrubbed_json_lines(tmp_path: Path):
    script = (
        "import warnings\n"
        "from receiver import logs\n"
        "logs.configure('INFO', 'json')\n"
        "logs.register_secret('hunter2-but-longer')\n"
        "warnings.warn('careful with hunter2-but-longer')\n"
        "raise RuntimeError('failed with hunter2-but-longer')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30,
                            cwd=tmp_path, env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO)})
    assert result.returncode == 1
    entries = [json.loads(line) for line in result.stderr.splitlines()]
    assert [e["level"] for e in entries] == ["WARNING", "CRITICAL"]
    assert "RuntimeError" in entries[1]["exception"]
    assert "hunter2" not in result.stderr
