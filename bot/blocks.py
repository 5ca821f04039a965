"""Block Kit messages for Slack, as plain dicts.

Every text that comes from the DAM goes through `mrkdwn_escape` before it is placed in mrkdwn, so a
filename such as `<!channel>` can never ping a channel or hide a link. The small builders (`header`,
`section`, `context`, ...) take mrkdwn that is already safe and enforce Slack's size limits with `fit`,
so a huge metadata value shortens a message instead of making Slack refuse it.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

from widen.models import ASSET_EVENT_TYPES, PING, Asset, WebhookConfiguration, WebhookEvent

# Slack's limits (https://api.slack.com/reference/block-kit).
MAX_BLOCKS = 50
SECTION_TEXT_LIMIT = 3000
FIELD_TEXT_LIMIT = 2000
MAX_FIELDS = 10
HEADER_LIMIT = 150
BUTTON_TEXT_LIMIT = 75
BUTTON_VALUE_LIMIT = 2000
ACTION_ID_LIMIT = 255
MAX_CONTEXT_ELEMENTS = 10
MAX_ACTION_ELEMENTS = 25
CONTEXT_TEXT_LIMIT = 3000
FALLBACK_TEXT_LIMIT = 3000
ALT_TEXT_LIMIT = 2000
IMAGE_URL_LIMIT = 3000
LINK_URL_LIMIT = 2000

# Our own choices, to keep an asset card readable.
METADATA_VALUE_LIMIT = 300
MAX_METADATA_FIELDS = 30
EXTRA_FIELD_VALUE_LIMIT = 200
MAX_EXTRA_FIELDS = 20

ELLIPSIS = "…"

EVENT_TITLES: dict[str, str] = {
    "asset_created": "New asset uploaded",
    "asset_deleted": "Asset deleted",
    "asset_release_date_updated": "Release date changed",
    "asset_expiration_date_updated": "Expiration date changed",
    "asset_asset_groups_updated": "Asset groups changed",
    "asset_categories_updated": "Categories changed",
    "asset_tags_updated": "Tags changed",
    "asset_version_added": "New version added",
}
GONE_NOTE = "The asset is no longer available in the DAM."


# ---- text safety ---------------------------------------------------------------------------------


def mrkdwn_escape(text: object) -> str:
    """Escape Slack's three control characters so DAM text is shown, never parsed."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def fit(text: str, limit: int) -> str:
    """Shorten `text` to at most `limit` characters, ending with "…" when cut.

    The cut never leaves half an entity (`&am`) or half of one of our links (`<http://…`), which
    Slack would show as garbage or refuse. (Escaped DAM text holds no raw `<`.)
    """
    if len(text) <= limit:
        return text
    cut = text[: max(limit - len(ELLIPSIS), 0)]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    if cut.rfind("<") > cut.rfind(">"):
        cut = cut[: cut.rfind("<")]
    return cut + ELLIPSIS


def safe_url(url: str | None) -> str | None:
    """The URL if it is a plain http(s) URL that cannot break out of `<url|label>`, else None."""
    if not url or len(url) > LINK_URL_LIMIT:
        return None
    if any(ch in url for ch in "|<>") or any(ch.isspace() for ch in url):
        return None
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return url


def link(url: str | None, label: str) -> str | None:
    """`<url|label>` for a safe URL (label escaped here), or None."""
    checked = safe_url(url)
    if checked is None:
        return None
    # Inside `<...>` Slack decodes entities, so a query string's `&` is written `&amp;`.
    return f"<{checked.replace('&', '&amp;')}|{mrkdwn_escape(label)}>"


def slack_date(moment: datetime) -> str:
    """A date Slack shows in the reader's time zone, with a UTC fallback for old clients."""
    moment = _aware(moment)
    try:
        fallback = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
        return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} {{time}}|{fallback}>"
    except (OverflowError, ValueError, OSError):  # year 1 or 9999 with an offset: show it as given
        return mrkdwn_escape(moment.isoformat())


# ---- builders: one per block kind ----------------------------------------------------------------


def plain_text(text: str, limit: int) -> dict[str, Any]:
    # Slack stores plain_text with the three entities encoded and decodes them for display, so DAM
    # text is escaped here too: a raw `<!channel>` then appears nowhere in the payload.
    return {"type": "plain_text", "text": fit(text, limit) or " ", "emoji": True}


def mrkdwn(text: str, limit: int) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": fit(text, limit) or " "}


def header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": plain_text(text, HEADER_LIMIT)}


def section(
    text: str | None,
    fields: Iterable[str] | None = None,
    accessory: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A section of mrkdwn `text` and/or `fields` (already escaped); extra fields are dropped."""
    block: dict[str, Any] = {"type": "section"}
    if text is not None:
        block["text"] = mrkdwn(text, SECTION_TEXT_LIMIT)
    if fields:
        block["fields"] = [mrkdwn(f, FIELD_TEXT_LIMIT) for f in list(fields)[:MAX_FIELDS]]
    if "text" not in block and "fields" not in block:
        block["text"] = mrkdwn(" ", SECTION_TEXT_LIMIT)
    if accessory is not None:
        block["accessory"] = accessory
    return block


def context(*texts: str) -> dict[str, Any]:
    elements = [mrkdwn(t, CONTEXT_TEXT_LIMIT) for t in texts[:MAX_CONTEXT_ELEMENTS]]
    return {"type": "context", "elements": elements or [mrkdwn(" ", CONTEXT_TEXT_LIMIT)]}


def divider() -> dict[str, Any]:
    return {"type": "divider"}


def image(url: str, alt: str) -> dict[str, Any]:
    """An image block; the same dict serves as a section's image accessory."""
    return {"type": "image", "image_url": url, "alt_text": fit(alt, ALT_TEXT_LIMIT) or "image"}


def confirm_dialog(title: str, text: str, confirm: str = "Yes", deny: str = "Cancel") -> dict[str, Any]:
    return {
        "title": plain_text(title, 100),
        "text": mrkdwn(text, 300),
        "confirm": plain_text(confirm, 30),
        "deny": plain_text(deny, 30),
    }


def button(
    text: str,
    action_id: str,
    value: str,
    style: str | None = None,
    confirm: dict[str, Any] | None = None,
) -> dict[str, Any]:
    element: dict[str, Any] = {
        "type": "button",
        "text": plain_text(text, BUTTON_TEXT_LIMIT),
        "action_id": action_id[:ACTION_ID_LIMIT],
        "value": value[:BUTTON_VALUE_LIMIT],
    }
    if style in ("primary", "danger"):
        element["style"] = style
    if confirm is not None:
        element["confirm"] = confirm
    return element


def actions(*elements: dict[str, Any]) -> dict[str, Any]:
    return {"type": "actions", "elements": list(elements[:MAX_ACTION_ELEMENTS])}


def message(text: str, blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """The payload for chat.postMessage / a response URL: fallback text and at most 50 blocks."""
    return {"text": fit(text, FALLBACK_TEXT_LIMIT) or " ", "blocks": blocks[:MAX_BLOCKS]}


def error_message(text: str) -> dict[str, Any]:
    safe = mrkdwn_escape(text)
    return message(safe, [section(f":warning: {safe}")])


def without_images(msg: dict[str, Any]) -> dict[str, Any]:
    """The same message without image blocks or image accessories (Slack could not fetch one)."""
    result = copy.deepcopy(msg)
    blocks = []
    for block in result.get("blocks") or []:
        if block.get("type") == "image":
            continue
        if (block.get("accessory") or {}).get("type") == "image":
            del block["accessory"]
        if block.get("type") == "context":
            block["elements"] = [e for e in block.get("elements", []) if e.get("type") != "image"]
            if not block["elements"]:
                continue
        blocks.append(block)
    result["blocks"] = blocks
    return result


# ---- formatting of asset facts -------------------------------------------------------------------


def human_size(size_in_bytes: float) -> str:
    """Binary units, as the DAM counts them (its size_in_kbytes is bytes / 1024): 1843200 -> "1.8 MB"."""
    value = float(size_in_bytes)
    if not math.isfinite(value) or value < 0:
        return "unknown"
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            if unit == "bytes":
                return f"{int(value)} bytes"
            return f"{value:.1f}".removesuffix(".0") + f" {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    """65 -> "1:05", 3723 -> "1:02:03"."""
    if not math.isfinite(seconds):
        return "unknown"
    total = max(round(seconds), 0)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def human_label(key: str) -> str:
    """`usageRights` -> "Usage rights", `release_notes` -> "Release notes"."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", key)
    words = re.sub(r"[_\-\s]+", " ", spaced).strip().lower()
    return words[:1].upper() + words[1:] if words else key


def _value_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False, default=str)


def metadata_value(values: list[Any]) -> str:
    """List values joined with ", ", empty items skipped; "" when nothing is left."""
    return ", ".join(t for t in (_value_text(v).strip() for v in values if v is not None) if t)


def _aware(moment: datetime) -> datetime:
    # The DAM's dates are UTC; a naive one is read as UTC so comparisons never fail.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _parse_date(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return _aware(datetime.fromisoformat(text))
    except ValueError:
        return None


def _date_text(moment: datetime | None) -> str:
    return slack_date(moment) if moment else "—"


def _when_text(raw: str) -> str:
    """An event's own date: Slack-formatted when it parses, else shown as sent (escaped)."""
    parsed = _parse_date(raw)
    return slack_date(parsed) if parsed else fit(mrkdwn_escape(raw), 100)


# ---- flags ---------------------------------------------------------------------------------------


def asset_flags(asset: Asset, *, now: datetime, expiry_warning_days: int = 30) -> list[str]:
    """What a DAM admin should look at, worded for the card.

    "Expires in N days": N is the number of days left rounded up, so an asset that expires in two
    hours says "Expires in 1 days" and never "0 days"; it is shown when N <= expiry_warning_days.
    """
    now = _aware(now)
    security = asset.security
    flags: list[str] = []
    if security is None or not security.asset_groups:
        flags.append("No asset groups")
    if security is None:
        return flags
    if security.release_date and _aware(security.release_date) > now:
        flags.append("Not yet released")
    if security.expiration_date:
        left = _aware(security.expiration_date) - now
        if left <= timedelta(0):
            flags.append("Expired")
        else:
            days = math.ceil(left / timedelta(days=1))
            if days <= expiry_warning_days:
                flags.append(f"Expires in {days} days")
    return flags


def release_status(asset: Asset, *, now: datetime) -> str:
    now = _aware(now)
    security = asset.security
    if security and security.expiration_date and _aware(security.expiration_date) <= now:
        return "Expired"
    if security and security.release_date and _aware(security.release_date) > now:
        return "Not yet released"
    if asset.released_and_not_expired is False:
        return "Not released"
    return "Released"


# ---- the asset card ------------------------------------------------------------------------------


def thumbnail_url(asset: Asset) -> str | None:
    """The largest thumbnail ("600px" beats "300px") with an http(s) URL Slack can fetch."""

    def width(key: str) -> int:
        digits = re.match(r"\d+", key)
        return int(digits.group()) if digits else 0

    for key in sorted(asset.thumbnails or {}, key=width, reverse=True):
        url = (asset.thumbnails or {})[key].url
        if safe_url(url) and len(url or "") <= IMAGE_URL_LIMIT:
            return url
    return None


def asset_link(asset: Asset, asset_url_template: str | None) -> str | None:
    """The configured DAM URL for the asset, else its share link; None if neither is safe."""
    if asset_url_template:
        try:
            url = asset_url_template.format(
                asset_id=quote(asset.id, safe=""),
                external_id=quote(asset.external_id or "", safe=""),
                filename=quote(asset.filename or "", safe=""),
            )
        except (KeyError, IndexError, ValueError):
            url = None
        if safe_url(url):
            return url
    embeds = asset.embeds or {}
    preferred = [embeds["original"]] if "original" in embeds else []
    for embed in preferred + list(embeds.values()):
        if safe_url(embed.share):
            return embed.share
    return None


def _file_fields(asset: Asset) -> list[str]:
    props = asset.file_properties
    if props is None:
        return []
    fields = []
    kind_parts = [props.format_type.capitalize() if props.format_type else None, props.format]
    if props.format_type and props.format and props.format_type.lower() == props.format.lower():
        kind_parts = [props.format]  # "PDF", not "Pdf · PDF"
    kind = " · ".join(mrkdwn_escape(p) for p in kind_parts if p)
    if kind:
        fields.append(f"*Type*\n{kind}")
    if props.size_in_bytes is not None:
        fields.append(f"*Size*\n{human_size(props.size_in_bytes)}")
    elif props.size_in_kbytes is not None:
        fields.append(f"*Size*\n{human_size(props.size_in_kbytes * 1024)}")
    shape = props.image_properties or props.video_properties
    if shape and shape.width and shape.height:
        fields.append(f"*Dimensions*\n{shape.width} × {shape.height}")
    video = props.video_properties
    if video and video.duration is not None:
        fields.append(f"*Duration*\n{human_duration(video.duration)}")
    return fields


_ACTOR_LABELS: dict[str, tuple[str, str]] = {
    "asset_created": ("Uploaded by", "Uploaded"),
    "asset_version_added": ("Uploaded by", "Uploaded"),
    "asset_deleted": ("Deleted by", "Deleted"),
}


def _upload_fields(event: WebhookEvent, asset: Asset | None) -> list[str]:
    """Who did it and when: the event's own user and date, else the asset's upload date."""
    by, when = _ACTOR_LABELS.get(event.event_type, ("Changed by", "Changed"))
    fields = []
    if event.username:
        fields.append(f"*{by}*\n{mrkdwn_escape(event.username)}")
    if event.date_created:
        fields.append(f"*{when}*\n{_when_text(event.date_created)}")
    elif asset and asset.file_upload_date:
        fields.append(f"*Uploaded*\n{slack_date(asset.file_upload_date)}")
    return fields


def _metadata_blocks(asset: Asset) -> list[dict[str, Any]]:
    """Metadata fields that have values, ten to a section; the rest counted, not shown."""
    filled = []
    for key, values in (asset.metadata.fields if asset.metadata else {}).items():
        text = metadata_value(values)
        if text:
            label = fit(mrkdwn_escape(human_label(key)), 100)
            filled.append(f"*{label}*\n{fit(mrkdwn_escape(text), METADATA_VALUE_LIMIT)}")
    shown = filled[:MAX_METADATA_FIELDS]
    blocks = [section(None, shown[i : i + MAX_FIELDS]) for i in range(0, len(shown), MAX_FIELDS)]
    if len(filled) > len(shown):
        blocks.append(context(f"…and {len(filled) - len(shown)} more metadata fields"))
    return blocks


def _security_block(asset: Asset, *, now: datetime) -> dict[str, Any]:
    security = asset.security
    groups = ", ".join(mrkdwn_escape(g) for g in security.asset_groups) if security else ""
    return section(
        "*Security*",
        [
            f"*Asset groups*\n{groups or 'None'}",
            f"*Status*\n{release_status(asset, now=now)}",
            f"*Release date*\n{_date_text(security.release_date if security else None)}",
            f"*Expiration date*\n{_date_text(security.expiration_date if security else None)}",
        ],
    )


def _flags_block(flags: list[str]) -> dict[str, Any]:
    if flags:
        return section(":warning: *Needs attention:* " + " · ".join(flags))
    return context(":white_check_mark: No issues found")


def _event_title(event: WebhookEvent) -> str:
    return EVENT_TITLES.get(event.event_type, human_label(event.event_type))


def _summary_line(event: WebhookEvent, url: str | None) -> str:
    # The filename is in the header already; this line says what happened and where to look.
    parts = [f"*{_event_title(event)}*"]
    opened = link(url, "Open in the DAM")
    if opened:
        parts.append(opened)
    return " · ".join(parts)


def _gone_message(event: WebhookEvent, title: str) -> dict[str, Any]:
    asset_id = mrkdwn_escape(event.asset_id or "unknown")
    blocks = [
        header(title),
        section(f"*{title}* · asset `{asset_id}`\n{GONE_NOTE}", _upload_fields(event, None)),
    ]
    return message(f"{title}: asset {asset_id}. {GONE_NOTE}", blocks)


def asset_message(
    event: WebhookEvent,
    asset: Asset | None,
    *,
    now: datetime,
    expiry_warning_days: int = 30,
    asset_url_template: str | None = None,
    include_image: bool = True,
) -> dict[str, Any]:
    """The card for an asset event: what happened, the file, its metadata and its security.

    `asset` is None when the DAM no longer has it (404). A deleted asset gets no "needs attention"
    line: its release and expiry no longer matter.
    """
    title = _event_title(event)
    if asset is None:
        return _gone_message(event, title)
    url = asset_link(asset, asset_url_template)
    thumb = thumbnail_url(asset) if include_image else None
    name = mrkdwn_escape(asset.filename or f"Asset {asset.id}")
    accessory = image(thumb, name) if thumb else None
    deleted = event.event_type == "asset_deleted" or asset.deleted_date is not None

    blocks = [
        header(name),
        section(_summary_line(event, url), accessory=accessory),
        section(None, [*_file_fields(asset), *_upload_fields(event, asset)]),
    ]
    if deleted and asset.deleted_date:
        blocks.append(context(f"Deleted {_date_text(asset.deleted_date)}"))
    metadata = _metadata_blocks(asset)
    if metadata:
        blocks += [divider(), *metadata]
    blocks += [divider(), _security_block(asset, now=now)]
    if not deleted:
        blocks.append(_flags_block(asset_flags(asset, now=now, expiry_warning_days=expiry_warning_days)))
    blocks.append(context(f"Asset ID: {mrkdwn_escape(asset.id)}"))
    return message(f"{title}: {name}", blocks)


# ---- other events --------------------------------------------------------------------------------


def ping_message(event: WebhookEvent, configuration: WebhookConfiguration | None = None) -> dict[str, Any]:
    """A ping from the DAM: which configuration, and who pressed it. The delivery URL is not shown,
    because it carries the configuration's secret route token."""
    config_id = mrkdwn_escape(event.webhook_configuration_id)
    fields = [f"*Configuration*\n`{config_id}`"]
    if configuration and configuration.event_type:
        fields.append(f"*Event type*\n`{mrkdwn_escape(configuration.event_type)}`")
    if event.username:
        fields.append(f"*Pinged by*\n{mrkdwn_escape(event.username)}")
    if event.webhook_delivery_id:
        fields.append(f"*Delivery*\n`{mrkdwn_escape(event.webhook_delivery_id)}`")
    text = f":satellite_antenna: *Ping received* from webhook configuration `{config_id}`"
    return message(f"Ping received from webhook configuration {config_id}", [section(text, fields)])


def _extra_fields_text(event: WebhookEvent) -> str | None:
    extras = event.model_extra or {}
    if not extras:
        return None
    lines = []
    for key, value in list(extras.items())[:MAX_EXTRA_FIELDS]:
        shown = fit(mrkdwn_escape(_value_text(value)), EXTRA_FIELD_VALUE_LIMIT)
        lines.append(f"• *{fit(mrkdwn_escape(key), 100)}*: {shown}")
    if len(extras) > MAX_EXTRA_FIELDS:
        lines.append(f"…and {len(extras) - MAX_EXTRA_FIELDS} more")
    return "*Other fields*\n" + "\n".join(lines)


def generic_message(event: WebhookEvent) -> dict[str, Any]:
    """An event type the bot does not know yet: show what the delivery says, all escaped."""
    event_type = mrkdwn_escape(event.event_type)
    fields = [
        f"*Event type*\n`{event_type}`",
        f"*Configuration*\n`{mrkdwn_escape(event.webhook_configuration_id)}`",
    ]
    if event.webhook_delivery_id:
        fields.append(f"*Delivery*\n`{mrkdwn_escape(event.webhook_delivery_id)}`")
    if event.asset_id:
        fields.append(f"*Asset*\n`{mrkdwn_escape(event.asset_id)}`")
    if event.username:
        fields.append(f"*User*\n{mrkdwn_escape(event.username)}")
    if event.date_created:
        fields.append(f"*When*\n{_when_text(event.date_created)}")
    blocks = [section(f":grey_question: *Webhook event* `{event_type}`", fields)]
    extras = _extra_fields_text(event)
    if extras:
        blocks.append(section(extras))
    return message(f"Webhook event {event_type}", blocks)


def plain_message(event: WebhookEvent) -> dict[str, Any]:
    """The last resort when a message cannot be rendered: what happened, to what, by whom; no dates."""
    what = EVENT_TITLES.get(event.event_type, "Webhook event")
    facts = [f"*{what}*", f"Event type: `{mrkdwn_escape(fit(event.event_type, 100))}`"]
    if event.asset_id:
        facts.append(f"Asset ID: `{mrkdwn_escape(fit(event.asset_id, 100))}`")
    if event.username:
        facts.append(f"By: {mrkdwn_escape(fit(event.username, 200))}")
    facts.append(f"Configuration: `{mrkdwn_escape(fit(event.webhook_configuration_id, 100))}`")
    text = f"{what}: {mrkdwn_escape(fit(event.asset_id or event.event_type, 100))}"
    return message(text, [section("\n".join(facts))])


def message_for(
    event: WebhookEvent,
    asset: Asset | None = None,
    *,
    configuration: WebhookConfiguration | None = None,
    now: datetime | None = None,
    **asset_options: Any,
) -> dict[str, Any]:
    """The message for any delivery. `asset_options` go to `asset_message`."""
    if event.event_type == PING:
        return ping_message(event, configuration)
    if event.event_type in ASSET_EVENT_TYPES:
        return asset_message(event, asset, now=now or datetime.now(UTC), **asset_options)
    return generic_message(event)
