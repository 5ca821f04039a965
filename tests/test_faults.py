"""Bursts under faults, against `widen-bot serve` as a real process: after each, the channel holds
every accepted asset exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bot.sandbox import SlackSandbox, count_announced
from receiver.sandbox_run import CHANNEL
from tests.conftest import SHARED_SECRET, eventually
from tests.serve_process import ServeProcess
from widen.sandbox import DamSandbox


class Burst:
    def __init__(self, dam: DamSandbox, slack: SlackSandbox, server: ServeProcess) -> None:
        self.dam, self.slack, self.server = dam, slack, server
        self.uploaded: list[str] = []

    async def configure(self) -> None:
        async with httpx.AsyncClient(base_url=self.dam.base_url,
                                     headers={"Authorization": f"Bearer {self.dam.token}"}) as api:
            response = await api.post("/webhooks/configurations", json={
                "event_type": "asset_created", "secret_key": SHARED_SECRET,
                "delivery_url": self.server.base_url + "/webhooks/widen"})
            response.raise_for_status()

    async def upload(self, count: int) -> None:
        for _ in range(count):
            self.uploaded.append(await self.dam.upload())

    def accepted(self) -> set[str]:
        """Assets whose delivery the server answered 200 (the DAM may have given up on others)."""
        return {d["body"]["asset_id"] for d in self.dam.deliveries if d.get("status") == 200}

    def counts(self) -> dict[str, int]:
        keys = {a: str(self.dam.assets[a]["external_id"]) for a in self.uploaded}
        return count_announced(self.slack.messages_in(CHANNEL), keys)

    async def assert_each_accepted_asset_once(self, timeout: float = 60) -> None:
        await self.dam.wait_deliveries_idle()
        accepted = self.accepted()
        assert accepted, "no delivery was accepted"
        await eventually(lambda: all(self.counts()[a] >= 1 for a in accepted), timeout=timeout)
        await asyncio.sleep(1.5)  # anything posted late would be a duplicate: give it the chance
        counts = self.counts()
        assert [a for a in accepted if counts[a] != 1] == []
        assert max(counts.values()) <= 1


@pytest.fixture
async def burst(tmp_path: Path) -> AsyncIterator[Burst]:
    dam = DamSandbox()
    slack = SlackSandbox(channel_rate=1.0)
    await dam.start()
    await slack.start()
    server = ServeProcess(dam, slack, tmp_path / "bot.db", tmp_path / "serve.log", WIDEN_WEBHOOK_SECRET=SHARED_SECRET,
                          DIGEST_WINDOW_SECONDS="3")
    await server.start()
    running = Burst(dam, slack, server)
    await running.configure()
    yield running
    server.stop()
    await dam.stop()
    await slack.stop()


async def test_kill_9_in_the_middle_of_a_burst_and_restart(burst: Burst):
    burst.dam.latency = 0.05  # a slowish DAM keeps the burst going while we pull the plug
    uploading = asyncio.create_task(burst.upload(60))
    await eventually(lambda: burst.slack.messages_in(CHANNEL), timeout=20)
    burst.server.kill()
    await uploading
    await burst.dam.wait_deliveries_idle()
    await burst.server.start()
    # Deliveries the DAM could not make while the bot was down are made again by hand, as the DAM's
    # own retries would: repeats of accepted ones must not show twice.
    for delivery in list(burst.dam.deliveries):
        if delivery.get("status") != 200:
            await burst.dam.emit("asset_created", delivery["body"]["asset_id"])
    await burst.assert_each_accepted_asset_once()


async def test_slack_down_for_a_while_then_back(burst: Burst):
    burst.slack.fail_next("chat.postMessage", 12, status=503)
    burst.slack.fail_next("conversations.history", 3, status=503)
    await burst.upload(30)
    await burst.assert_each_accepted_asset_once()


async def test_dam_answering_429_and_503(burst: Burst):
    burst.dam.fail_next(10, 429, "/assets", reset_after=0.5)
    burst.dam.fail_next(10, 503, "/assets")
    await burst.upload(30)
    await burst.assert_each_accepted_asset_once()
    assert any(status == 429 for _, _, status in burst.dam.calls)


async def test_slack_429_storm(burst: Burst):
    burst.slack.fail_next("chat.postMessage", 15, status=429, retry_after=1)
    await burst.upload(30)
    await burst.assert_each_accepted_asset_once()


@pytest.mark.parametrize("stop", ["kill", "term"])
async def test_stopped_right_after_a_digest_before_its_thread(burst: Burst, stop: str):
    # The digest names 20 assets; the rest are in its thread. Stopping in between must not lose them.
    if stop == "term":  # no grace period: SIGTERM lands between the digest and its replies
        burst.server.stop()
        burst.server.env["SHUTDOWN_TIMEOUT"] = "0"
        await burst.server.start()
    await burst.upload(60)
    await eventually(lambda: any("asset events" in m["text"] for m in burst.slack.messages_in(CHANNEL)), timeout=30)
    if stop == "kill":
        burst.server.kill()
    else:
        assert burst.server.terminate() == 0
    await burst.server.start()
    await burst.assert_each_accepted_asset_once()
