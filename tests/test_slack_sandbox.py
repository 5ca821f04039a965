"""The local Slack Web API, driven by slack_sdk's real AsyncWebClient over HTTP."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot import blocks
from bot.sandbox import SlackSandbox, render
from widen.models import Asset, WebhookEvent

TOKEN = "xoxb-sandbox-token"
CHANNEL = "C0CHANNEL"
HERO = {"type": "section", "text": {"type": "mrkdwn", "text": "hello"}}
THUMB = "https://example.widen.net/content/qzbsmyb3ua/jpeg/hero.jpg?w=600"


@pytest.fixture
def out() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
async def sandbox(out: io.StringIO) -> AsyncIterator[SlackSandbox]:
    box = SlackSandbox(out=out)
    await box.start()
    yield box
    await box.stop()


@pytest.fixture
def client(sandbox: SlackSandbox) -> AsyncWebClient:
    return AsyncWebClient(token=TOKEN, base_url=sandbox.base_url)


async def test_auth_test_and_wrong_token(sandbox: SlackSandbox, client: AsyncWebClient) -> None:
    answer = await client.auth_test()
    assert answer["user_id"] == "U0BOT" and answer["team_id"] == "T0SANDBOX"
    sandbox.token = "xoxb-rotated"
    with pytest.raises(SlackApiError) as caught:
        await client.auth_test()
    assert caught.value.response.status_code == 200
    assert caught.value.response["error"] == "invalid_auth"
    assert sandbox.calls == [("auth.test", "ok"), ("auth.test", "invalid_auth")]


async def test_post_message_is_recorded(
    sandbox: SlackSandbox, client: AsyncWebClient, out: io.StringIO
) -> None:
    first = await client.chat_postMessage(channel=CHANNEL, text="one", blocks=[HERO])
    second = await client.chat_postMessage(channel=CHANNEL, text="two", thread_ts=first["ts"])
    assert first["channel"] == CHANNEL and first["message"]["text"] == "one"
    assert float(second["ts"]) > float(first["ts"])
    assert [m["text"] for m in sandbox.messages_in(CHANNEL)] == ["one", "two"]
    assert sandbox.messages[0]["blocks"] == [HERO]
    assert sandbox.messages[1]["thread_ts"] == first["ts"]
    printed = out.getvalue()
    assert f"── #{CHANNEL}\nhello" in printed
    assert f"── #{CHANNEL}  (thread {first['ts']})\ntwo" in printed


LONG_HEADER = {"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"channel": "", "text": "x"}, "channel_not_found"),
        ({"channel": CHANNEL, "text": ""}, "no_text"),
        ({"channel": CHANNEL, "text": "x", "blocks": [{"type": "section"}]}, "invalid_blocks"),
        ({"channel": CHANNEL, "text": "x", "blocks": [{"type": "no_such_block"}]}, "invalid_blocks"),
        ({"channel": CHANNEL, "text": "x", "blocks": [blocks.divider()] * 51}, "invalid_blocks"),
        ({"channel": CHANNEL, "text": "x", "blocks": [LONG_HEADER]}, "invalid_blocks"),
    ],
)
@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
async def test_post_message_errors(client: AsyncWebClient, kwargs: dict[str, Any], error: str) -> None:
    with pytest.raises(SlackApiError) as caught:
        await client.chat_postMessage(**kwargs)
    assert caught.value.response["error"] == error


async def test_invalid_blocks_names_the_block(client: AsyncWebClient) -> None:
    with pytest.raises(SlackApiError) as caught:
        await client.chat_postMessage(channel=CHANNEL, text="x", blocks=[HERO, {"type": "section"}])
    assert caught.value.response["errors"][0].endswith("[json-pointer:/blocks/1]")


async def test_metadata_round_trip_and_paging(sandbox: SlackSandbox, client: AsyncWebClient) -> None:
    metadata = {"event_type": "widen_asset", "event_payload": {"delivery_id": "d-1"}}
    posted = [
        await client.chat_postMessage(channel=CHANNEL, text=f"m{i}", metadata=metadata) for i in range(5)
    ]
    await client.chat_postMessage(channel="C0OTHER", text="elsewhere")
    await client.chat_postMessage(channel=CHANNEL, text="reply", thread_ts=posted[0]["ts"])

    plain = await client.conversations_history(channel=CHANNEL)
    assert [m["text"] for m in plain["messages"]] == ["m4", "m3", "m2", "m1", "m0"]
    assert all("metadata" not in m for m in plain["messages"])

    page = await client.conversations_history(channel=CHANNEL, limit=2, include_all_metadata=True)
    assert [m["text"] for m in page["messages"]] == ["m4", "m3"]
    assert page["messages"][0]["metadata"] == metadata
    assert page["has_more"] is True
    rest = await client.conversations_history(
        channel=CHANNEL, limit=10, cursor=page["response_metadata"]["next_cursor"]
    )
    assert [m["text"] for m in rest["messages"]] == ["m2", "m1", "m0"]
    assert rest["response_metadata"]["next_cursor"] == ""

    newer = await client.conversations_history(channel=CHANNEL, oldest=posted[2]["ts"])
    assert [m["text"] for m in newer["messages"]] == ["m4", "m3"]


async def test_update_and_ephemeral(sandbox: SlackSandbox, client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(channel=CHANNEL, text="before")
    await client.chat_update(channel=CHANNEL, ts=posted["ts"], text="after")
    assert sandbox.messages[0]["text"] == "after"
    with pytest.raises(SlackApiError) as caught:
        await client.chat_update(channel=CHANNEL, ts="1.000001", text="x")
    assert caught.value.response["error"] == "message_not_found"
    answer = await client.chat_postEphemeral(channel=CHANNEL, user="U0ADMIN", text="just you")
    assert answer["message_ts"]
    assert sandbox.ephemerals[0]["user"] == "U0ADMIN" and len(sandbox.messages) == 1


async def test_reject_images_and_without_images(sandbox: SlackSandbox, client: AsyncWebClient) -> None:
    sandbox.reject_images = True
    message = blocks.message("pic", [blocks.section("hi", accessory=blocks.image(THUMB, "hero"))])
    with pytest.raises(SlackApiError) as caught:
        await client.chat_postMessage(channel=CHANNEL, **message)
    assert caught.value.response["error"] == "invalid_blocks"
    assert caught.value.response["errors"] == [
        "downloading image failed [json-pointer:/blocks/0/accessory/image_url]"
    ]
    await client.chat_postMessage(channel=CHANNEL, **blocks.without_images(message))
    assert len(sandbox.messages) == 1


async def test_channel_rate_limit() -> None:
    box = SlackSandbox(channel_rate=1.0, channel_burst=2)
    url = await box.start()
    try:
        client = AsyncWebClient(token=TOKEN, base_url=url)
        await client.chat_postMessage(channel=CHANNEL, text="1")
        await client.chat_postMessage(channel=CHANNEL, text="2")
        with pytest.raises(SlackApiError) as caught:
            await client.chat_postMessage(channel=CHANNEL, text="3")
        assert caught.value.response.status_code == 429
        assert caught.value.response["error"] == "ratelimited"
        assert int(caught.value.response.headers["Retry-After"]) >= 1
        await client.chat_postMessage(channel="C0OTHER", text="other channels have their own pace")
        assert box.calls[-2:] == [("chat.postMessage", "ratelimited"), ("chat.postMessage", "ok")]
    finally:
        await box.stop()


async def test_fail_next(sandbox: SlackSandbox, client: AsyncWebClient) -> None:
    sandbox.fail_next("chat.postMessage", 1, status=429, retry_after=7)
    sandbox.fail_next("chat.postMessage", 1, error="invalid_blocks")
    sandbox.fail_next("chat.postMessage", 1, status=503)
    with pytest.raises(SlackApiError) as caught:
        await client.chat_postMessage(channel=CHANNEL, text="x")
    assert caught.value.response.status_code == 429
    assert caught.value.response.headers["Retry-After"] == "7"
    with pytest.raises(SlackApiError) as caught:
        await client.chat_postMessage(channel=CHANNEL, text="x")
    assert caught.value.response["error"] == "invalid_blocks"
    with pytest.raises(SlackApiError) as caught:
        await client.chat_postMessage(channel=CHANNEL, text="x")
    assert caught.value.response.status_code == 503
    await client.chat_postMessage(channel=CHANNEL, text="fine again")
    assert [outcome for _, outcome in sandbox.calls] == ["ratelimited", "invalid_blocks", "http_503", "ok"]


async def test_users_info(client: AsyncWebClient) -> None:
    admin = await client.users_info(user="U0ADMIN")
    member = await client.users_info(user="U0MEMBER")
    assert admin["user"]["is_admin"] is True
    assert member["user"]["is_admin"] is False and member["user"]["is_owner"] is False
    with pytest.raises(SlackApiError) as caught:
        await client.users_info(user="U0NOBODY")
    assert caught.value.response["error"] == "user_not_found"


async def test_form_encoded_requests(sandbox: SlackSandbox) -> None:
    async with aiohttp.ClientSession() as session:
        form = {"token": TOKEN, "channel": CHANNEL, "text": "form", "blocks": '[{"type": "divider"}]'}
        async with session.post(sandbox.base_url + "chat.postMessage", data=form) as resp:
            assert (await resp.json())["ok"] is True
    assert sandbox.messages[0]["blocks"] == [{"type": "divider"}]


async def test_response_url(sandbox: SlackSandbox, out: io.StringIO) -> None:
    url = sandbox.new_response_url()
    key = url.rsplit("/", 1)[1]
    payload = {"text": "done", "response_type": "ephemeral", "replace_original": True}
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=payload) as resp:
            assert resp.status == 200 and await resp.text() == "ok"
        async with session.post(url + "x", json=payload) as resp:
            assert resp.status == 404
    assert sandbox.responses[key] == [payload]
    assert "── response_url  (ephemeral, replace_original)\ndone" in out.getvalue()


def test_render_is_readable() -> None:
    asset = Asset(
        id="a1",
        filename="<b> & co.jpg",
        file_properties={"format": "JPEG", "format_type": "image", "size_in_bytes": 1843200},  # type: ignore[arg-type]
        thumbnails={"600px": {"url": THUMB}},  # type: ignore[dict-item]
        embeds={"original": {"share": "https://example.widen.net/s/a1"}},  # type: ignore[dict-item]
    )
    event = WebhookEvent(webhook_configuration_id="c1", event_type="asset_created", asset_id="a1")
    message = blocks.asset_message(event, asset, now=datetime(2025, 1, 1, tzinfo=UTC))
    message["blocks"].append(blocks.actions(blocks.button("Ping", "ping", "c1")))
    text = render(message)
    assert "# <b> & co.jpg" in text
    assert "New asset uploaded* · Open in the DAM (https://example.widen.net/s/a1)" in text
    assert "Size: 1.8 MB" in text
    assert f"[image: {THUMB}]" in text
    assert "[ Ping ]" in text
    assert "&lt;" not in text and "&amp;" not in text
