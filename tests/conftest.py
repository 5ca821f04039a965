"""Shared fixtures: the real server between the local DAM and the local Slack, over loopback HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.sandbox import SlackSandbox
from receiver.sandbox_run import Stack, running_stack
from receiver.signing import sign
from widen.sandbox import DamSandbox

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHARED_SECRET = "shared-path-secret-for-tests"


def fixture_json(relative: str) -> dict[str, Any]:
    return json.loads((FIXTURES / relative).read_text())


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(
        tmp_path / "widen-bot.db", widen_webhook_secret=SHARED_SECRET, slack_channel_rate=50.0
    ) as running:
        yield running


@pytest.fixture
async def sandbox() -> AsyncIterator[DamSandbox]:
    """The local DAM alone, for the client's and the local DAM's own tests."""
    dam = DamSandbox()
    await dam.start()
    yield dam
    await dam.stop()


@pytest.fixture
async def sandboxes() -> AsyncIterator[tuple[DamSandbox, SlackSandbox]]:
    """The local DAM and the local Slack, for tests that run `widen-bot serve` as a process."""
    dam, slack = DamSandbox(), SlackSandbox()
    await dam.start()
    await slack.start()
    yield dam, slack
    await dam.stop()
    await slack.stop()


@pytest.fixture
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
        yield client


def signed(body: bytes, secret: str = SHARED_SECRET, header: str = "X-Widen-Signature") -> dict[str, str]:
    return {header: sign(body, secret), "Content-Type": "application/json"}


async def deliver(http: httpx.AsyncClient, payload: Any, *, secret: str = SHARED_SECRET,
                  path: str = "/webhooks/widen") -> httpx.Response:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return await http.post(path, content=body, headers=signed(body, secret))


async def eventually(check: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Wait until `check()` is truthy (it may be async); fail with what it last returned."""
    deadline = time.monotonic() + timeout
    result: Any = None
    while time.monotonic() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s (last: {result!r})")


def texts(message: dict[str, Any]) -> str:
    """Every text of a Slack message, for assertions about what a reader sees."""
    return json.dumps(message.get("blocks") or [], ensure_ascii=False) + "\n" + str(message.get("text", ""))
