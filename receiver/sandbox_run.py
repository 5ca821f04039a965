"""`widen-bot sandbox`: the whole flow on this machine, no credentials.

A local DAM (`widen.sandbox`) and a local Slack (`bot.sandbox`) with the real server between them:
create a webhook configuration, ping it, upload sample assets, and print every Slack message.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from bot.sandbox import SlackSandbox
from receiver.app import INBOX, WIDEN, build_app
from receiver.routes import create_routed_configuration
from receiver.settings import Settings
from widen.sandbox import DamSandbox

CHANNEL = "C0SANDBOX"
SIGNING_SECRET = "sandbox-signing-secret"


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


def say(text: str) -> None:
    print(f"\n▶ {text}", flush=True)


async def run_sandbox(*, once: bool, uploads: int) -> int:
    from receiver import logs

    logs.configure("WARNING")
    with tempfile.TemporaryDirectory(prefix="widen-bot-sandbox-") as tmp:
        slack = SlackSandbox(out=sys.stdout)
        async with running_stack(Path(tmp) / "widen-bot.db", slack=slack) as stack:
            say(f"local DAM at {stack.dam.base_url}, local Slack at {stack.slack.base_url}, "
                f"widen-bot at {stack.base_url}")
            created = await create_routed_configuration(
                stack.app[WIDEN], stack.app[INBOX], public_base_url=stack.base_url,
                event_type="asset_created", created_by="sandbox",
            )
            say(f"created webhook configuration {created.id} for asset_created, delivering to "
                f"{stack.base_url}/webhooks/widen/<token> with a generated secret")
            say(f"pinging configuration {created.id}")
            await stack.app[WIDEN].ping_webhook(created.id)
            ok = await wait_until_posted(stack, 1, timeout=30)
            say(f"uploading {uploads} sample assets to the local DAM")
            for _ in range(uploads):
                await stack.dam.upload()
            ok = ok and await wait_until_posted(stack, 1 + uploads, timeout=60)
            posted = len(stack.slack.messages_in(CHANNEL))
            if not ok:
                say(f"only {posted} of {1 + uploads} messages reached the local Slack in time")
                return 1
            say(f"done: {posted} messages in #{CHANNEL}")
            if once:
                return 0
            say("the sandbox keeps running; Ctrl-C to stop")
            while True:
                await asyncio.sleep(3600)
