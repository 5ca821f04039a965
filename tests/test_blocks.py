"""The Block Kit messages: content, Slack's limits, and escaping of everything the DAM sends."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.models.blocks import Block

from bot import blocks
from bot.blocks import asset_flags, asset_message, message_for, mrkdwn_escape, without_images
from widen.models import ASSET_EVENT_TYPES, Asset, WebhookConfiguration, WebhookEvent

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ASSET_ID = "3db58e3c-fe98-4437-9637-df299f9d1b06"
NOW = datetime(2025, 1, 15, 12, 0, tzinfo=UTC)
SHARE = "https://example.widen.net/s/qzbsmyb3ua/spring-campaign-hero_2400x1200"


def load(path: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / path).read_text())
    return data


@pytest.fixture
def asset_data() -> dict[str, Any]:
    return load(f"api/asset.{ASSET_ID}.json")


@pytest.fixture
def asset(asset_data: dict[str, Any]) -> Asset:
    return Asset.model_validate(asset_data)


def event(event_type: str = "asset_created", **changes: Any) -> WebhookEvent:
    data = {**load("events/asset_created.json"), "event_type": event_type, **changes}
    return WebhookEvent.model_validate(data)


def mrkdwn_texts(message: dict[str, Any]) -> list[str]:
    found = [message["text"]]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn":
                found.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(message["blocks"])
    return found


def assert_valid(message: dict[str, Any]) -> None:
    """What Slack would check: slack_sdk's models, the block count, the section and fallback sizes."""
    assert set(message) >= {"text", "blocks"}
    assert 0 < len(message["text"]) <= blocks.FALLBACK_TEXT_LIMIT
    assert 0 < len(message["blocks"]) <= blocks.MAX_BLOCKS
    for block in message["blocks"]:
        parsed = Block.parse(block)
        assert parsed is not None, block
        parsed.validate_json()
        parsed.to_dict()  # nested elements too
        if block["type"] == "section":
            assert len(block.get("text", {}).get("text", "")) <= blocks.SECTION_TEXT_LIMIT
            assert len(block.get("fields", [])) <= blocks.MAX_FIELDS
            assert all(len(f["text"]) <= blocks.FIELD_TEXT_LIMIT for f in block.get("fields", []))
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= blocks.HEADER_LIMIT
        if block["type"] == "context":
            assert len(block["elements"]) <= blocks.MAX_CONTEXT_ELEMENTS
    # Every `<...>` in mrkdwn is ours: a date or a safe http(s) link.
    for text in mrkdwn_texts(message):
        for token in re.findall(r"<([^>]*)>", text):
            assert token.startswith(("!date^", "http://", "https://")), token


# ---- the fixture asset ---------------------------------------------------------------------------


def test_fixture_asset_card(asset: Asset) -> None:
    message = asset_message(event(), asset, now=NOW)
    assert_valid(message)
    dumped = json.dumps(message, ensure_ascii=False)
    first = message["blocks"][0]
    assert first == blocks.header("spring-campaign-hero_2400x1200.jpg")
    assert message["text"] == "New asset uploaded: spring-campaign-hero_2400x1200.jpg"
    assert "1.8 MB" in dumped
    assert "2400 × 1200" in dumped
    assert "Image · JPEG" in dumped
    assert "*Uploaded by*\\ndam.admin@example.com" in dumped
    assert "*Description*\\nHero banner for the spring campaign landing page" in dumped
    assert "*Keywords*\\nspring, campaign, hero, banner" in dumped
    assert "*Usage rights*\\nInternal and web use until end of season" in dumped
    assert "Photographer" not in dumped
    assert "Marketing, Web Team" in dumped
    assert f"<{SHARE}|Open in the DAM>" in dumped
    assert "?w=600" in dumped  # the largest thumbnail
    assert "No issues found" in dumped
    assert "<!date^1612995527^" in dumped  # the event's date_created


def test_asset_url_template_wins_over_share_link(asset: Asset) -> None:
    template = "https://dam.example.com/asset/{external_id}?id={asset_id}&name={filename}"
    message = asset_message(event(), asset, now=NOW, asset_url_template=template)
    dumped = json.dumps(message)
    assert SHARE not in dumped
    expected = (
        f"https://dam.example.com/asset/qzbsmyb3ua?id={ASSET_ID}&amp;name=spring-campaign-hero_2400x1200.jpg"
    )
    assert f"<{expected}|Open in the DAM>" in dumped


def test_broken_template_falls_back_to_share_link(asset: Asset) -> None:
    message = asset_message(event(), asset, now=NOW, asset_url_template="https://x.example/{nope}")
    assert f"<{SHARE}|" in json.dumps(message)


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "https://evil.example/a|b",
        "https://evil.example/a>b",
        "https://evil.example/a b",
        "ftp://files.example/x",
        "data:text/html,hi",
        "//no-scheme.example/x",
    ],
)
def test_unsafe_urls_are_not_linked(asset_data: dict[str, Any], url: str) -> None:
    asset_data["embeds"] = {"original": {"share": url}}
    asset_data["thumbnails"] = {"600px": {"url": url}}
    message = asset_message(event(), Asset.model_validate(asset_data), now=NOW)
    assert_valid(message)
    assert "Open in the DAM" not in json.dumps(message)
    assert "image_url" not in json.dumps(message)


def test_share_link_from_any_embed(asset_data: dict[str, Any]) -> None:
    asset_data["embeds"] = {
        "original": {"share": None},
        "640px": {"share": "https://example.widen.net/s/other"},
    }
    message = asset_message(event(), Asset.model_validate(asset_data), now=NOW)
    assert "<https://example.widen.net/s/other|Open in the DAM>" in json.dumps(message)


def test_without_images(asset: Asset) -> None:
    message = asset_message(event(), asset, now=NOW)
    message["blocks"].append(blocks.image("https://example.widen.net/x.png", "x"))
    bare = without_images(message)
    assert "image_url" not in json.dumps(bare)
    assert "image_url" in json.dumps(message)  # the original is untouched
    assert_valid(bare)
    assert asset_message(event(), asset, now=NOW, include_image=False) == without_images(
        asset_message(event(), asset, now=NOW)
    )


# ---- every kind of message passes Slack's checks ----------------------------------------------------


@pytest.mark.parametrize("event_type", ASSET_EVENT_TYPES)
def test_every_asset_event(asset: Asset, event_type: str) -> None:
    message = message_for(event(event_type), asset, now=NOW)
    assert_valid(message)
    assert message["text"].startswith(blocks.EVENT_TITLES[event_type])
    assert "spring-campaign-hero_2400x1200.jpg" in message["text"]


@pytest.mark.parametrize("event_type", ASSET_EVENT_TYPES)
def test_asset_gone(event_type: str) -> None:
    message = message_for(event(event_type), None, now=NOW)
    assert_valid(message)
    dumped = json.dumps(message)
    assert ASSET_ID in dumped
    assert blocks.EVENT_TITLES[event_type] in message["text"]
    assert "The asset is no longer available in the DAM." in dumped


def test_deleted_asset_shows_what_is_known(asset_data: dict[str, Any]) -> None:
    asset_data["deleted_date"] = "2025-01-14T10:00:00Z"
    message = message_for(event("asset_deleted"), Asset.model_validate(asset_data), now=NOW)
    assert_valid(message)
    dumped = json.dumps(message)
    assert message["text"] == "Asset deleted: spring-campaign-hero_2400x1200.jpg"
    assert "Deleted <!date^" in dumped
    assert "Needs attention" not in dumped and "No issues found" not in dumped


def test_ping() -> None:
    ping = WebhookEvent.model_validate(load("events/ping.json"))
    config = WebhookConfiguration.model_validate(load("api/webhook-configuration.seed.json"))
    message = message_for(ping, None, configuration=config)
    assert_valid(message)
    dumped = json.dumps(message)
    assert "976cf9b0-95d0-4dbd-acb0-57fbdaef7b6f" in dumped
    assert "asset_asset_groups_updated" in dumped
    assert "dam.admin@example.com" in dumped
    assert_valid(blocks.ping_message(ping))


def test_unknown_event_type_lists_its_fields() -> None:
    odd = event(
        "collection_created",
        collection={"name": "<!here> launch"},
        note="x" * 5000,
        **{f"extra_{i}": i for i in range(30)},
    )
    message = message_for(odd, None)
    assert_valid(message)
    dumped = json.dumps(message)
    assert "collection_created" in dumped
    assert ASSET_ID in dumped and "dam.admin@example.com" in dumped
    assert "*collection*" in dumped and "&lt;!here&gt; launch" in dumped
    assert "<!here>" not in dumped
    assert "more" in dumped


def test_video(asset_data: dict[str, Any]) -> None:
    asset_data["file_properties"] = {
        "format": "MP4",
        "format_type": "video",
        "size_in_bytes": 734003200,
        "video_properties": {"width": 1920, "height": 1080, "duration": 3723.4},
    }
    message = asset_message(event(), Asset.model_validate(asset_data), now=NOW)
    assert_valid(message)
    dumped = json.dumps(message, ensure_ascii=False)
    assert "1:02:03" in dumped and "1920 × 1080" in dumped and "700 MB" in dumped and "Video · MP4" in dumped


def test_huge_asset_stays_within_limits(asset_data: dict[str, Any]) -> None:
    asset_data["filename"] = "f" * 5000 + ".jpg"
    asset_data["metadata"] = {"fields": {f"field_{i}": ["v" * 10_000, "<@U123>"] for i in range(200)}}
    asset_data["security"]["asset_groups"] = [f"Group {i} & co" for i in range(500)]
    message = asset_message(event(), Asset.model_validate(asset_data), now=NOW)
    assert_valid(message)
    assert "170 more metadata fields" in json.dumps(message)


def test_sparse_asset() -> None:
    message = asset_message(event(date_created=None, event_context=None), Asset(id="abc"), now=NOW)
    assert_valid(message)
    assert "No asset groups" in json.dumps(message)


# ---- escaping ------------------------------------------------------------------------------------


RAW_MARKUP = ("<!channel>", "<http://evil.example|click>", "<@U123>", "<!everyone>", "<!here>", "<#C123>")


def test_dam_text_cannot_ping_or_hide_links(asset_data: dict[str, Any]) -> None:
    nasty = "<!channel> <http://evil.example|click> & co"
    asset_data["filename"] = nasty
    asset_data["metadata"]["fields"]["description"] = ["call <@U123> now"]
    asset_data["security"]["asset_groups"] = ["<!everyone>"]
    asset_data["file_properties"]["format"] = "<#C123>"
    hostile = event(event_context={"user": {"username": "<!here>"}})
    for message in (
        asset_message(hostile, Asset.model_validate(asset_data), now=NOW),
        generic_of(nasty),
    ):
        assert_valid(message)
        dumped = json.dumps(message)
        for raw in RAW_MARKUP:
            assert raw not in dumped
        assert "&lt;!channel&gt;" in dumped
    card = asset_message(hostile, Asset.model_validate(asset_data), now=NOW)
    assert card["text"] == "New asset uploaded: &lt;!channel&gt; &lt;http://evil.example|click&gt; &amp; co"


def generic_of(text: str) -> dict[str, Any]:
    return blocks.generic_message(event(text, webhook_delivery_id=text))


def test_escape_and_fit() -> None:
    assert mrkdwn_escape("a<b>&c") == "a&lt;b&gt;&amp;c"
    assert blocks.fit("abcdef", 4) == "abc…"
    assert blocks.fit("abc", 3) == "abc"
    # A cut never leaves half an entity or half a link behind.
    assert blocks.fit("ab&amp;cd", 5) == "ab…"
    assert blocks.fit("x <https://a.example|label> y", 12) == "x …"


def test_labels_and_units() -> None:
    assert blocks.human_label("usageRights") == "Usage rights"
    assert blocks.human_label("photographer") == "Photographer"
    assert blocks.human_label("release_notes") == "Release notes"
    assert blocks.human_size(1843200) == "1.8 MB"
    assert blocks.human_size(512) == "512 bytes"
    assert blocks.human_duration(65) == "1:05"
    assert blocks.human_duration(3723) == "1:02:03"


# ---- flags ---------------------------------------------------------------------------------------


def flags_for(asset_data: dict[str, Any], **security: Any) -> list[str]:
    asset_data["security"] = {"asset_groups": ["Marketing"], **security}
    return asset_flags(Asset.model_validate(asset_data), now=NOW, expiry_warning_days=30)


def test_no_flags(asset: Asset) -> None:
    assert asset_flags(asset, now=NOW) == []


def test_no_asset_groups(asset_data: dict[str, Any]) -> None:
    assert flags_for(asset_data, asset_groups=[]) == ["No asset groups"]
    asset_data["security"] = None
    assert asset_flags(Asset.model_validate(asset_data), now=NOW) == ["No asset groups"]


def test_not_yet_released(asset_data: dict[str, Any]) -> None:
    assert flags_for(asset_data, release_date=(NOW + timedelta(hours=1)).isoformat()) == ["Not yet released"]
    assert flags_for(asset_data, release_date=(NOW - timedelta(hours=1)).isoformat()) == []


def test_expired(asset_data: dict[str, Any]) -> None:
    assert flags_for(asset_data, expiration_date=(NOW - timedelta(seconds=1)).isoformat()) == ["Expired"]


@pytest.mark.parametrize(
    ("left", "flags"),
    [
        (timedelta(hours=2), ["Expires in 1 days"]),
        (timedelta(days=1), ["Expires in 1 days"]),
        (timedelta(days=10, hours=3), ["Expires in 11 days"]),
        (timedelta(days=30), ["Expires in 30 days"]),
        (timedelta(days=30, seconds=1), []),
        (timedelta(days=400), []),
    ],
)
def test_expires_soon(asset_data: dict[str, Any], left: timedelta, flags: list[str]) -> None:
    assert flags_for(asset_data, expiration_date=(NOW + left).isoformat()) == flags


def test_flags_are_shown(asset_data: dict[str, Any]) -> None:
    asset_data["security"] = {"asset_groups": [], "expiration_date": "2025-01-01T00:00:00Z"}
    message = asset_message(event(), Asset.model_validate(asset_data), now=NOW)
    dumped = json.dumps(message, ensure_ascii=False)
    assert ":warning: *Needs attention:* No asset groups · Expired" in dumped
    assert "*Status*\\nExpired" in dumped


def test_naive_now_is_utc(asset: Asset) -> None:
    assert asset_flags(asset, now=NOW.replace(tzinfo=None)) == []
