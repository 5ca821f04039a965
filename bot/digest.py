"""Block Kit for a digest: one message for a burst of asset events, the full list in its thread.

The digest itself shows counts by event type, who uploaded, the asset groups involved, flagged assets
first, then up to 20 assets with links. The thread holds every asset, many per reply (never one reply
per asset), so a bulk upload of a thousand assets costs a handful of Slack messages.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.blocks import (
    EVENT_TITLES,
    MAX_BLOCKS,
    SECTION_TEXT_LIMIT,
    asset_flags,
    asset_link,
    context,
    divider,
    fit,
    header,
    link,
    message,
    mrkdwn_escape,
    section,
)
from widen.models import Asset, WebhookEvent

IN_DIGEST = 20
# Sections of the thread's full list per reply (a message holds at most 50 blocks).
SECTIONS_PER_REPLY = MAX_BLOCKS - 1
LINE_LIMIT = 300


@dataclass
class Digest:
    """The digest and its thread replies, each with the items (indices into the input) it names."""

    root: dict[str, Any]
    root_names: list[int]
    replies: list[tuple[dict[str, Any], list[int]]]


def digest_messages(
    items: list[tuple[WebhookEvent, Asset | None]],
    *,
    now: datetime,
    expiry_warning_days: int = 30,
    asset_url_template: str | None = None,
) -> Digest:
    """The digest and its thread replies."""
    lines = []
    for index, (event, asset) in enumerate(items):
        flags = asset_flags(asset, now=now, expiry_warning_days=expiry_warning_days) if asset else []
        lines.append((flags, (index, _line(event, asset, flags, asset_url_template))))
    # Flagged assets first: they are what an admin must look at.
    ordered = [line for flags, line in lines if flags] + [line for flags, line in lines if not flags]
    flagged = sum(1 for flags, _ in lines if flags)

    counts = Counter(event.event_type for event, _ in items)
    uploaders = Counter(event.username or "someone" for event, _ in items)
    groups = Counter(g for _, asset in items if asset and asset.security for g in asset.security.asset_groups)

    title = f"{len(items)} asset events"
    summary = ", ".join(f"{EVENT_TITLES.get(t, mrkdwn_escape(t))}: {n}" for t, n in counts.most_common())
    blocks = [
        header(title),
        section(f"*What happened:* {summary}"),
        section(
            None,
            fields=[
                "*Who:*\n" + _top(uploaders),
                "*Asset groups:*\n" + (_top(groups) or "No asset groups"),
                f"*Needs attention:*\n{flagged} of {len(items)}",
            ],
        ),
        divider(),
        *[section(text) for text, _ in _list_sections(ordered[:IN_DIGEST])],
    ]
    if len(items) > IN_DIGEST:
        blocks.append(context(f"…and {len(items) - IN_DIGEST} more. The full list is in the thread."))
    else:
        blocks.append(context("The full list is in the thread."))
    fallback = f"{title}: {summary}"
    root = message(fallback, blocks)

    sections = _list_sections(ordered)
    replies = []
    for start in range(0, len(sections), SECTIONS_PER_REPLY):
        chunk = sections[start : start + SECTIONS_PER_REPLY]
        span = f"Full list of {len(ordered)} assets, part {start // SECTIONS_PER_REPLY + 1}"
        names = [index for _, indices in chunk for index in indices]
        replies.append((message(span, [context(span), *(section(text) for text, _ in chunk)]), names))
    return Digest(root, [index for index, _ in ordered[:IN_DIGEST]], replies)


def _line(event: WebhookEvent, asset: Asset | None, flags: list[str], template: str | None) -> str:
    name = (asset.filename if asset and asset.filename else None) or event.asset_id or "unknown asset"
    name = fit(name, 120)
    shown = (link(asset_link(asset, template), name) if asset else None) or mrkdwn_escape(name)
    parts = [f"• {shown}"]
    if event.event_type != "asset_created":
        parts.append(EVENT_TITLES.get(event.event_type, mrkdwn_escape(event.event_type)).lower())
    if asset is None and event.asset_id:
        parts.append("no longer available")
    if flags:
        parts.append(":warning: " + ", ".join(flags))
    return " — ".join(parts)


def _list_sections(lines: list[tuple[int, str]]) -> list[tuple[str, list[int]]]:
    """Lines packed into as few section texts as Slack's 3000-character limit allows, each with the
    items its lines name."""
    sections: list[tuple[str, list[int]]] = []
    current, names = "", list[int]()
    for index, line in lines:
        line = fit(line, LINE_LIMIT)
        if current and len(current) + 1 + len(line) > SECTION_TEXT_LIMIT:
            sections.append((current, names))
            current, names = "", list[int]()
        current = f"{current}\n{line}" if current else line
        names.append(index)
    if current:
        sections.append((current, names))
    return sections


def _top(counter: Counter[str], most: int = 5) -> str:
    shown = [f"{mrkdwn_escape(fit(name, 80))} ({n})" for name, n in counter.most_common(most)]
    rest = len(counter) - most
    return ", ".join(shown) + (f" and {rest} more" if rest > 0 else "")
