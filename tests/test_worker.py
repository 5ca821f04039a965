"""The worker against faults of Slack and the DAM, through the local sandboxes over HTTP."""

from __future__ import annotations

import asyncio
import copy
import json
import uuid

import httpx
import pytest

from receiver.app import INBOX
from receiver.sandbox_run import CHANNEL, Stack
from tests.conftest import deliver, eventually, fixture_json, texts

SEED_ASSET = "asset.3db58e3c-fe98-4437-9637-df299f9d1b06.json"


def asset_event(asset_id: str, event_type: str = "asset_created") -> dict:
    event = fixture_json("events/asset_created.json")
    event.update(webhook_delivery_id=str(uuid.uuid4()), asset_id=asset_id, event_type=event_type)
    return event


async def idle(stack: Stack) -> bool:
    stats = await stack.app[INBOX].stats()
    return stats.pending + stats.in_flight == 0


async def test_slack_429_is_waited_out_and_posted_once(stack: Stack, http: httpx.AsyncClient):
    stack.slack.fail_next("chat.postMessage", 2, status=429, retry_after=1)
    await deliver(http, asset_event("3db58e3c-fe98-4437-9637-df299f9d1b06"))
    await eventually(lambda: stack.slack.messages_in(CHANNEL), timeout=20)
    await eventually(lambda: idle(stack))
    assert len(stack.slack.messages_in(CHANNEL)) == 1
    assert [c for c in stack.slack.calls if c[0] == "chat.postMessage"].count(("chat.postMessage", "ratelimited")) == 2


async def test_slack_5xx_is_retried(stack: Stack, http: httpx.AsyncClient):
    stack.slack.fail_next("chat.postMessage", 3, status=503)
    await deliver(http, asset_event("3db58e3c-fe98-4437-9637-df299f9d1b06"))
    await eventually(lambda: stack.slack.messages_in(CHANNEL), timeout=30)
    await eventually(lambda: idle(stack))
    assert len(stack.slack.messages_in(CHANNEL)) == 1


@pytest.mark.parametrize("lost", [503, 0], ids=["5xx-after-posting", "connection-dropped-after-posting"])
async def test_a_post_whose_answer_is_lost_is_not_posted_again(stack: Stack, http: httpx.AsyncClient, lost: int):
    # Slack made the message, but its answer never arrived: sending again would post it twice.
    stack.slack.fail_next("chat.postMessage", 1, status=lost, after_acting=True)
    await deliver(http, asset_event("3db58e3c-fe98-4437-9637-df299f9d1b06"))
    await eventually(lambda: idle(stack), timeout=20)
    await asyncio.sleep(0.5)
    assert len(stack.slack.messages_in(CHANNEL)) == 1
    assert [c for c in stack.slack.calls if c[0] == "chat.postMessage"] == [("chat.postMessage", f"lost_{lost}")]
    assert (await stack.app[INBOX].stats()).posted == 1


async def test_a_lost_answer_slack_cannot_be_searched_for_is_checked_again_later(
    stack: Stack, http: httpx.AsyncClient
):
    # The answer is lost and then the channel cannot be read for a while: the delivery waits, marked as
    # maybe posted, and the next attempt finds the message instead of posting a second one.
    stack.slack.fail_next("chat.postMessage", 1, status=503, after_acting=True)
    stack.slack.fail_next("conversations.history", 6, status=503)
    await deliver(http, asset_event("3db58e3c-fe98-4437-9637-df299f9d1b06"))
    await eventually(lambda: idle(stack), timeout=60)
    await asyncio.sleep(0.5)
    assert len(stack.slack.messages_in(CHANNEL)) == 1
    assert sum(1 for c in stack.slack.calls if c[0] == "conversations.history") >= 7
    assert (await stack.app[INBOX].stats()).posted == 1


async def test_a_5xx_that_did_not_post_is_searched_for_once_then_posted(stack: Stack, http: httpx.AsyncClient):
    stack.slack.fail_next("chat.postMessage", 1, status=503)  # refused before acting
    await deliver(http, asset_event("3db58e3c-fe98-4437-9637-df299f9d1b06"))
    await eventually(lambda: idle(stack), timeout=20)
    assert len(stack.slack.messages_in(CHANNEL)) == 1
    # A 5xx cannot be told from a lost answer: the channel is searched once, finds nothing, posts.
    assert sum(1 for c in stack.slack.calls if c[0] == "conversations.history") == 1


async def test_thumbnail_slack_cannot_download_is_dropped_not_the_message(stack: Stack, http: httpx.AsyncClient):
    stack.slack.reject_images = True
    await deliver(http, asset_event("3db58e3c-fe98-4437-9637-df299f9d1b06"))
    messages = await eventually(lambda: stack.slack.messages_in(CHANNEL))
    assert "image" not in json.dumps(messages[0]["blocks"])
    assert "spring-campaign-hero_2400x1200.jpg" in texts(messages[0])


async def test_asset_gone_from_the_dam_still_gets_a_message(stack: Stack, http: httpx.AsyncClient):
    missing = str(uuid.uuid4())
    await deliver(http, asset_event(missing))
    messages = await eventually(lambda: stack.slack.messages_in(CHANNEL))
    shown = texts(messages[0])
    assert missing in shown
    assert "no longer available" in shown


async def test_asset_deleted_event_says_what_is_known(stack: Stack, http: httpx.AsyncClient):
    missing = str(uuid.uuid4())
    await deliver(http, asset_event(missing, "asset_deleted"))
    messages = await eventually(lambda: stack.slack.messages_in(CHANNEL))
    assert "deleted" in texts(messages[0]).lower()
    assert missing in texts(messages[0])


async def test_dam_401_keeps_the_delivery_pending_until_the_token_works(stack: Stack, http: httpx.AsyncClient):
    good = stack.dam.token
    stack.dam.token = "revoked-token"
    event = asset_event("3db58e3c-fe98-4437-9637-df299f9d1b06")
    assert (await deliver(http, event)).status_code == 200
    await asyncio.sleep(1.5)
    assert stack.slack.messages_in(CHANNEL) == []
    stats = await stack.app[INBOX].stats()
    assert stats.pending + stats.in_flight == 1 and stats.parked == 0
    assert any("WIDEN_API_TOKEN" in error for _, _, error in stats.last_errors)
    stack.dam.token = good
    messages = await eventually(lambda: stack.slack.messages_in(CHANNEL), timeout=20)
    assert len(messages) == 1 and "Marketing" in texts(messages[0])


async def test_dam_503_then_recovers(stack: Stack, http: httpx.AsyncClient):
    stack.dam.fail_next(4, 503, "/assets")
    await deliver(http, asset_event("3db58e3c-fe98-4437-9637-df299f9d1b06"))
    await eventually(lambda: stack.slack.messages_in(CHANNEL), timeout=30)


async def test_mrkdwn_injection_in_filename_and_metadata_never_reaches_slack_raw(stack: Stack, http: httpx.AsyncClient):
    hostile = copy.deepcopy(fixture_json(f"api/{SEED_ASSET}"))
    hostile["id"] = str(uuid.uuid4())
    hostile["filename"] = "<!channel> <http://evil.example|click here> & <@U0ADMIN>.jpg"
    hostile["metadata"]["fields"]["description"] = ["<!here> see <https://phish.example|your bank>"]
    hostile["security"]["asset_groups"] = ["<!everyone>"]
    stack.dam.add_asset(hostile)
    await deliver(http, asset_event(hostile["id"]))
    messages = await eventually(lambda: stack.slack.messages_in(CHANNEL))
    raw = json.dumps(messages[0], ensure_ascii=False)
    for dangerous in ("<!channel>", "<!here>", "<!everyone>", "<@U0ADMIN>", "<http://evil", "<https://phish"):
        assert dangerous not in raw, dangerous
    assert "&lt;!channel&gt;" in raw


async def test_every_asset_event_type_gets_a_message(stack: Stack, http: httpx.AsyncClient):
    from widen.models import ASSET_EVENT_TYPES

    for event_type in ASSET_EVENT_TYPES:
        await deliver(http, asset_event("3db58e3c-fe98-4437-9637-df299f9d1b06", event_type))
    messages = await eventually(lambda: len(stack.slack.messages_in(CHANNEL)) >= 8 and stack.slack.messages_in(CHANNEL))
    assert len(messages) == 8


async def test_a_delivery_that_cannot_be_rendered_is_still_announced_and_blocks_nothing(
    stack: Stack, http: httpx.AsyncClient
):
    poison = asset_event("3db58e3c-fe98-4437-9637-df299f9d1b06") | {"date_created": "0001-01-01T00:00:00+05:00"}
    await deliver(http, poison)
    for _ in range(3):
        await deliver(http, asset_event("3db58e3c-fe98-4437-9637-df299f9d1b06"))
    messages = await eventually(lambda: len(stack.slack.messages_in(CHANNEL)) >= 4 and stack.slack.messages_in(CHANNEL))
    assert len(messages) == 4
    assert await idle(stack)


async def test_assets_of_odd_shapes_still_get_their_message(stack: Stack, http: httpx.AsyncClient):
    odd_shapes = [
        {"metadata": [1]}, {"metadata": {"fields": [1]}}, {"security": ["x"]},
        {"security": {"asset_groups": None, "expiration_date": "9999-12-31T23:59:59-05:00"}},
        {"security": {"asset_groups": [{"name": "x"}], "release_date": "0001-01-01T00:00:00+05:00"}},
        {"thumbnails": [1]}, {"embeds": "x"}, {"status": "x"}, {"released_and_not_expired": "maybe"},
        {"file_properties": {"size_in_bytes": 1.5, "size_in_kbytes": float("-inf"),
                             "video_properties": {"duration": float("nan")}}},
    ]
    for n, change in enumerate(odd_shapes):
        asset = copy.deepcopy(fixture_json(f"api/{SEED_ASSET}")) | change
        asset["id"] = str(uuid.uuid4())
        asset["filename"] = f"odd-{n}.jpg"
        stack.dam.add_asset(asset)
        await deliver(http, asset_event(asset["id"]))
    await eventually(lambda: len(stack.slack.messages_in(CHANNEL)) >= len(odd_shapes), timeout=30)
    shown = "\n".join(texts(m) for m in stack.slack.messages_in(CHANNEL))
    for n in range(len(odd_shapes)):
        assert f"odd-{n}.jpg" in shown, odd_shapes[n]
    assert (await stack.app[INBOX].stats()).parked == 0
