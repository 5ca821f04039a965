"""`widen-bot sandbox`: the whole flow on this machine, no credentials.

A local DAM (`widen.sandbox`) and a local Slack (`bot.sandbox`) with the real server between them:
an admin types `/widen create`, `/widen ping` and `/widen list` (sent to the server signed, as Slack
sends them), sample assets are uploaded, and every Slack message and answer is printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from bot.sandbox import SlackSandbox, count_announced
from bot.slack_requests import post_signed, slash_command_body
from receiver.app import INBOX, build_app
from receiver.settings import Settings
from widen.sandbox import DamSandbox

CHANNEL = "C0SANDBOX"
SIGNING_SECRET = "sandbox-signing-secret"
SANDBOX_ADMIN = "U0ADMIN"  # a workspace admin of the local Slack


@dataclass
class Stack:
    """The three pieces running together, for the sandbox command, the benchmark and the tests."""

    dam: DamSandbox
    slack: SlackSandbox
    app: web.Application
    settings: Settings
    base_url: str

    @property
    def channel(self) -> str:
        return CHANNEL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sandbox_env(dam: DamSandbox, slack: SlackSandbox) -> dict[str, str]:
    """The settings, as environment variables, that point a `serve` process at the local DAM and Slack."""
    return {
        "SLACK_BOT_TOKEN": slack.token,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack.base_url,
        "SLACK_CHANNEL": CHANNEL,
        "WIDEN_API_TOKEN": dam.token,
        "WIDEN_API_URL": dam.base_url,
    }


def sandbox_settings(dam: DamSandbox, slack: SlackSandbox, port: int, database: Path, **extra: Any) -> Settings:
    # model_validate, not Settings(): the sandbox must not pick up the environment or a .env file.
    return Settings.model_validate(
        {
            "slack_bot_token": slack.token,
            "slack_signing_secret": SIGNING_SECRET,
            "slack_api_url": slack.base_url,
            "slack_channel": CHANNEL,
            "widen_api_token": dam.token,
            "widen_api_url": dam.base_url,
            "public_base_url": f"http://127.0.0.1:{port}",
            "database_url": f"sqlite:///{database}",
            "host": "127.0.0.1",
            "port": port,
            **extra,
        }
    )


@contextlib.asynccontextmanager
async def running_stack(
    database: Path,
    *,
    dam: DamSandbox | None = None,
    slack: SlackSandbox | None = None,
    slack_channel_rate: float = 1.0,
    **settings: Any,
) -> AsyncIterator[Stack]:
    dam = dam or DamSandbox()
    slack = slack or SlackSandbox()
    await dam.start()
    await slack.start()
    port = free_port()
    config = sandbox_settings(dam, slack, port, database, **settings)
    app = build_app(config, slack_channel_rate=slack_channel_rate)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield Stack(dam, slack, app, config, f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()
        await dam.stop()
        await slack.stop()


async def wait_until_posted(stack: Stack, count: int, timeout: float) -> bool:
    """True once the channel holds `count` messages and nothing waits in the inbox."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await stack.dam.wait_deliveries_idle()
        stats = await stack.app[INBOX].stats()
        if len(stack.slack.messages_in(CHANNEL)) >= count and stats.pending + stats.in_flight == 0:
            return True
        await asyncio.sleep(0.1)
    return False


async def wait_until_announced(stack: Stack, asset_ids: list[str], timeout: float) -> list[str]:
    """Waits until every asset is in the channel, on its own or in a digest; answers those that are not."""
    keys = {a: str(stack.dam.assets[a]["external_id"]) for a in asset_ids}
    deadline = time.monotonic() + timeout
    while True:
        counts = count_announced(stack.slack.messages_in(CHANNEL), keys)
        missing = [a for a, n in counts.items() if n == 0]
        if not missing or time.monotonic() > deadline:
            return missing
        await asyncio.sleep(0.1)


def say(text: str) -> None:
    print(f"\n▶ {text}", flush=True)


async def widen_command(
    stack: Stack, http: httpx.AsyncClient, text: str, *, answers: int = 1, timeout: float = 30.0
) -> list[dict[str, Any]]:
    """`/widen <text>` typed by the local Slack's admin, sent to the real server exactly as Slack sends
    it (signed form body); returns the answers that reach its response URL (the local Slack prints them)."""
    url = stack.slack.new_response_url()
    body = slash_command_body(text, user_id=SANDBOX_ADMIN, response_url=url, channel_id=CHANNEL)
    response = await post_signed(http, "/slack/events", body, SIGNING_SECRET)
    if response.status_code != 200:
        say(f"/widen {text}: the server answered {response.status_code} {response.text}")
        return []
    received = stack.slack.responses[url.rsplit("/", 1)[1]]
    deadline = time.monotonic() + timeout
    while len(received) < answers and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return list(received)


async def _type_commands(stack: Stack, http: httpx.AsyncClient) -> None:
    """Interactive mode: `upload` uploads another sample asset; any other line (`/widen list`, or just
    `list`) is sent as the admin's /widen command."""
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def read_stdin() -> None:  # a daemon thread: Ctrl-C must not wait for a line to be typed
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=read_stdin, name="sandbox-stdin", daemon=True).start()
    while (line := await lines.get()) is not None:
        text = line.strip().removeprefix("/widen").strip()
        if text == "upload":
            before = len(stack.slack.messages_in(CHANNEL))
            await stack.dam.upload()
            await wait_until_posted(stack, before + 1, timeout=30)
        elif text:
            await widen_command(stack, http, text, timeout=5)
    await asyncio.Event().wait()  # stdin closed: keep serving until Ctrl-C


async def run_sandbox(*, once: bool, uploads: int) -> int:
    from receiver import logs

    logs.configure("WARNING")
    with tempfile.TemporaryDirectory(prefix="widen-bot-sandbox-") as tmp:
        slack = SlackSandbox(out=sys.stdout)
        async with (
            running_stack(Path(tmp) / "widen-bot.db", slack=slack) as stack,
            httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http,
        ):
            say(f"local DAM at {stack.dam.base_url}, local Slack at {stack.slack.base_url}, "
                f"widen-bot at {stack.base_url}")
            say(f"{SANDBOX_ADMIN} (a workspace admin) types: /widen create asset_created")
            await widen_command(stack, http, "create asset_created")
            if not stack.dam.configurations:
                say("the configuration was not created")
                return 1
            config_id = next(iter(stack.dam.configurations))
            say(f"{SANDBOX_ADMIN} types: /widen ping {config_id}")
            pinged = await widen_command(stack, http, f"ping {config_id}", answers=2)
            ok = len(pinged) == 2 and "round trip" in json.dumps(pinged[1])
            say(f"{SANDBOX_ADMIN} types: /widen list")
            await widen_command(stack, http, "list")
            # In the channel: the audit line of the create, and the ping.
            ok = ok and await wait_until_posted(stack, 2, timeout=30)
            say(f"uploading {uploads} sample assets to the local DAM")
            uploaded = [await stack.dam.upload() for _ in range(uploads)]
            missing = await wait_until_announced(stack, uploaded, timeout=60)
            if not ok or missing:
                say(f"{len(missing)} of {uploads} uploads were not announced in the local Slack in time"
                    if missing else "the ping or the audit line did not reach the local Slack in time")
                return 1
            posted = len(stack.slack.messages_in(CHANNEL))
            say(f"done: {uploads} uploads announced, {posted} messages in #{CHANNEL} (more than 10 uploads at "
                "once become a digest with its thread)")
            if once:
                return 0
            say(f"the sandbox keeps running; type /widen commands (e.g. /widen list) to send them as "
                f"{SANDBOX_ADMIN}, or `upload` to upload another sample asset; Ctrl-C to stop")
            await _type_commands(stack, http)
    return 0
