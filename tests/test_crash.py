"""kill -9 at the worst moments: no acknowledged delivery is lost, none is posted twice."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import httpx

from receiver.sandbox_run import CHANNEL
from tests.conftest import SHARED_SECRET, eventually, fixture_json, signed
from tests.serve_process import ServeProcess

SEED_ASSET_ID = "3db58e3c-fe98-4437-9637-df299f9d1b06"


def event(asset_id: str = SEED_ASSET_ID) -> bytes:
    payload = fixture_json("events/asset_created.json") | {"webhook_delivery_id": str(uuid.uuid4()),
                                                          "asset_id": asset_id}
    return json.dumps(payload).encode()


async def post(server: ServeProcess, body: bytes) -> int:
    async with httpx.AsyncClient() as client:
        response = await client.post(server.base_url + "/webhooks/widen", content=body, headers=signed(body))
        return response.status_code


async def test_kill_9_after_the_200_before_slack_loses_nothing(sandboxes, tmp_path: Path):
    dam, slack = sandboxes
    slack.fail_next("chat.postMessage", 10_000, status=503)  # Slack is down: nothing can be posted yet
    server = ServeProcess(dam, slack, tmp_path / "bot.db", tmp_path / "serve.log", WIDEN_WEBHOOK_SECRET=SHARED_SECRET)
    await server.start()
    try:
        statuses = [await post(server, event()) for _ in range(5)]
        assert statuses == [200] * 5
        await eventually(lambda: any(c == ("chat.postMessage", "http_503") for c in slack.calls))
        server.kill()
        assert slack.messages_in(CHANNEL) == []
        slack._faults.clear()  # Slack is back
        await server.start()
        await eventually(lambda: len(slack.messages_in(CHANNEL)) >= 5, timeout=30)
        await asyncio.sleep(1.5)
        assert len(slack.messages_in(CHANNEL)) == 5
    finally:
        server.stop()


async def test_kill_9_after_slack_posted_before_it_was_recorded_posts_once(sandboxes, tmp_path: Path):
    dam, slack = sandboxes
    slack.answer_delay["chat.postMessage"] = 30  # Slack has the message; the bot has not heard back
    server = ServeProcess(dam, slack, tmp_path / "bot.db", tmp_path / "serve.log", WIDEN_WEBHOOK_SECRET=SHARED_SECRET)
    await server.start()
    try:
        assert await post(server, event()) == 200
        await eventually(lambda: slack.messages_in(CHANNEL))
        server.kill()
        slack.answer_delay.clear()
        await server.start()
        await eventually(lambda: any(c[0] == "conversations.history" for c in slack.calls), timeout=20)
        await asyncio.sleep(1.5)
        assert len(slack.messages_in(CHANNEL)) == 1
        assert "already posted" in (tmp_path / "serve.log").read_text()
    finally:
        server.stop()


async def test_sigterm_exits_0_and_pending_work_resumes(sandboxes, tmp_path: Path):
    dam, slack = sandboxes
    slack.fail_next("chat.postMessage", 10_000, status=503)
    server = ServeProcess(dam, slack, tmp_path / "bot.db", tmp_path / "serve.log", WIDEN_WEBHOOK_SECRET=SHARED_SECRET,
                          SHUTDOWN_TIMEOUT="2")
    await server.start()
    try:
        assert await post(server, event()) == 200
        await eventually(lambda: any(c == ("chat.postMessage", "http_503") for c in slack.calls))
        assert server.terminate() == 0
        log = (tmp_path / "serve.log").read_text()
        assert "widen-bot listening on http://127.0.0.1:" in log and "shared webhook path: open" in log
        assert "widen-bot stopped" in log
        slack._faults.clear()
        await server.start()
        await eventually(lambda: len(slack.messages_in(CHANNEL)) == 1, timeout=30)
    finally:
        server.stop()
