"""Digests: one message for a burst, flagged assets first, the full list in a few thread replies."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from slack_sdk.models.blocks import Block

from bot.digest import IN_DIGEST, digest_messages
from bot.sandbox import announcements
from receiver.app import INBOX
from receiver.sandbox_run import CHANNEL, Stack, running_stack
from tests.conftest import SHARED_SECRET, deliver, eventually, fixture_json
from widen.models import Asset, WebhookEvent

NOW = datetime(2026, 12, 3, tzinfo=UTC)


def asset(n: int, *, groups: list[str] | None = None, expires: str | None = None) -> Asset:
    data = copy.deepcopy(fixture_json("api/asset.3db58e3c-fe98-4437-9637-df299f9d1b06.json"))
    data["id"] = f"00000000-0000-4000-8000-{n:012d}"
    data["filename"] = f"file-{n}.jpg"
    data["security"]["asset_groups"] = ["Marketing"] if groups is None else groups
    if expires:
        data["security"]["expiration_date"] = expires
    return Asset.model_validate(data)


def event(a: Asset, user: str = "dam.admin@example.com", event_type: str = "asset_created") -> WebhookEvent:
    payload = fixture_json("events/asset_created.json") | {"asset_id": a.id, "event_type": event_type}
    payload["event_context"]["user"]["username"] = user
    return WebhookEvent.model_validate(payload)


def valid(message: dict) -> None:
    assert len(message["blocks"]) <= 50
    for block in message["blocks"]:
        Block.parse(block).validate_json()
        assert len(block.get("text", {}).get("text", "")) <= 3000


def test_digest_counts_who_groups_and_flags_first():
    items = [(event(asset(n), user=f"user{n % 3}@example.com"), asset(n)) for n in range(30)]
    flagged = asset(99, groups=[])
    items.append((event(flagged, event_type="asset_tags_updated"), flagged))
    root = digest_messages(items, now=NOW).root
    valid(root)
    text = json.dumps(root)
    assert "31 asset events" in text
    assert "New asset uploaded: 30" in text and "Tags changed: 1" in text
    assert "user0@example.com (10)" in text and "Marketing (30)" in text
    sections = [b["text"]["text"] for b in root["blocks"] if b["type"] == "section" and "text" in b]
    listing = [text for text in sections if "•" in text]
    assert "|file-99.jpg>" in listing[0].splitlines()[0]  # the flagged one first
    assert "No asset groups" in listing[0].splitlines()[0]
    assert sum(line.count("•") for line in listing) == IN_DIGEST
    assert "11 more" in text


def test_the_thread_lists_every_asset_in_few_replies():
    items = [(event(asset(n)), asset(n)) for n in range(1000)]
    digest = digest_messages(items, now=NOW)
    replies = [reply for reply, _ in digest.replies]
    assert 1 <= len(replies) <= 10
    for reply in replies:
        valid(reply)
    listed = "\n".join(json.dumps(r) for r in replies)
    for n in range(1000):
        assert f"file-{n}.jpg" in listed
    # What each message names, for the crash check: the root its 20, the replies all, each once.
    assert len(digest.root_names) == IN_DIGEST
    named = [index for _, names in digest.replies for index in names]
    assert sorted(named) == list(range(1000))
    for reply, names in digest.replies:
        assert all(f"file-{i}.jpg" in json.dumps(reply) for i in names)


def test_digest_escapes_what_the_dam_says():
    hostile = asset(1, groups=["<!channel>"])
    hostile.filename = "<!here>.jpg"
    digest = digest_messages([(event(hostile, user="<@U0ADMIN>"), hostile)] * 12, now=NOW)
    root, replies = digest.root, [reply for reply, _ in digest.replies]
    raw = json.dumps([root, *replies])
    for dangerous in ("<!channel>", "<!here>", "<@U0ADMIN>"):
        assert dangerous not in raw


@pytest.mark.parametrize("lost", [None, "digest", "thread reply"])
async def test_a_burst_becomes_a_digest_and_nothing_is_announced_twice(tmp_path, lost: str | None):
    async with running_stack(tmp_path / "db.sqlite", widen_webhook_secret=SHARED_SECRET, slack_channel_rate=1.0,
                             digest_window_seconds=2.0) as stack, httpx.AsyncClient(base_url=stack.base_url) as http:
        if lost is not None:  # Slack posts it, and its answer is lost: it must not be posted again
            def lose_answer(message: dict) -> None:
                is_digest = "asset events" in message["text"]
                if (lost == "digest" and is_digest) or (lost == "thread reply" and message.get("thread_ts")):
                    stack.slack.on_message = None
                    stack.slack.fail_next("chat.postMessage", 1, status=503, after_acting=True)
            stack.slack.on_message = lose_answer
        ids = []
        for n in range(40):
            data = copy.deepcopy(fixture_json("api/asset.3db58e3c-fe98-4437-9637-df299f9d1b06.json"))
            data["id"] = str(uuid.uuid4())
            data["filename"] = f"burst-{n}.jpg"
            stack.dam.add_asset(data)
            ids.append(data["id"])
            payload = fixture_json("events/asset_created.json") | {
                "asset_id": data["id"], "webhook_delivery_id": str(uuid.uuid4())}
            assert (await deliver(http, payload)).status_code == 200

        def every_asset_announced() -> bool:
            units = announcements(stack.slack.messages_in(CHANNEL))
            return all(any(f"burst-{n}.jpg" in unit for unit in units) for n in range(40))

        await eventually(every_asset_announced, timeout=30)
        await eventually(lambda: all_done(stack), timeout=30)  # a repeat would come after the first
        units = announcements(stack.slack.messages_in(CHANNEL))
        for n in range(40):
            assert sum(f"burst-{n}.jpg" in unit for unit in units) == 1, n
        top_level = [m for m in stack.slack.messages_in(CHANNEL) if not m.get("thread_ts")]
        assert len(top_level) <= 6, [m["text"][:60] for m in top_level]  # a few cards, then digests
        assert any("asset events" in m["text"] for m in top_level)
        # No message was posted twice: each one covers its own inbox rows (a thread reply may repeat the
        # digest's names, so counting names alone would not tell).
        messages = stack.slack.messages_in(CHANNEL)
        covered = [m["metadata"]["event_payload"]["rows"] for m in messages if m.get("metadata")]
        assert len(covered) == len(set(covered)), covered
        if lost is not None:
            assert ("chat.postMessage", "lost_503") in stack.slack.calls


async def all_done(stack: Stack) -> bool:
    stats = await stack.app[INBOX].stats()
    return stats.pending + stats.in_flight == 0


async def test_pings_are_never_folded_into_a_digest(stack: Stack, http: httpx.AsyncClient):
    for _ in range(15):
        payload = fixture_json("events/asset_created.json") | {"webhook_delivery_id": str(uuid.uuid4())}
        await deliver(http, payload)
    ping = fixture_json("events/ping.json") | {"webhook_delivery_id": str(uuid.uuid4())}
    await deliver(http, ping)
    messages = await eventually(
        lambda: [m for m in stack.slack.messages_in(CHANNEL) if "976cf9b0" in json.dumps(m) and "ing" in m["text"]
                 and "asset events" not in m["text"] and "uploaded" not in m["text"]], timeout=30)
    assert messages
