"""Block Kit for `/widen` answers: help, the configuration list and card, and the short answers.

Built from the small builders of `bot.blocks`; every text that comes from the DAM or from what a person
typed is escaped with `mrkdwn_escape` before it is placed in mrkdwn.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from bot.blocks import (
    actions,
    button,
    confirm_dialog,
    context,
    header,
    message,
    mrkdwn_escape,
    section,
    slack_date,
)
from receiver.inbox import ConfigurationStats, InboxStats
from widen.models import WebhookConfiguration

# Button action ids; bot.app routes every action starting with ACTION_PREFIX to bot.commands.
ACTION_PREFIX = "widen_"
ACTION_PING = "widen_ping"
ACTION_ENABLE = "widen_enable"
ACTION_DISABLE = "widen_disable"
ACTION_DELETE = "widen_delete"

LINES_PER_SECTION = 12  # list lines are ~200 characters with their date markup; a section holds 3000
MAX_LIST_SECTIONS = 45  # Slack allows 50 blocks per message

_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,20}$")


def code(text: object) -> str:
    """Inline code of escaped text (a backtick inside would end it early, so it is dropped)."""
    return f"`{mrkdwn_escape(text).replace('`', '')}`"


def command(syntax: str) -> str:
    """`/widen <syntax>` as inline code; the angle brackets of placeholders escaped so Slack shows them."""
    return code(f"/widen {syntax}")


def mention(user_id: str) -> str:
    return f"<@{user_id}>" if _USER_ID.match(user_id) else mrkdwn_escape(user_id)


def on_off(value: bool | None) -> str:
    return "unknown" if value is None else ("on" if value else "off")


def when(moment: datetime | float | None, never: str = "never") -> str:
    if moment is None:
        return never
    if isinstance(moment, int | float):
        moment = datetime.fromtimestamp(moment, UTC)
    return slack_date(moment)


def notice(text: str, emoji: str = ":information_source:") -> dict[str, Any]:
    """A one-section answer; `text` is mrkdwn that is already safe."""
    return message(_plain(text), [section(f"{emoji} {text}")])


def problem(text: str) -> dict[str, Any]:
    return notice(text, ":warning:")


def _plain(text: str) -> str:
    """Fallback text for notifications: the mrkdwn without its markup characters."""
    return re.sub(r"[*`]", "", text)


# ---- help -----------------------------------------------------------------------------------------


def help_message(usage: Sequence[tuple[str, str]], note: str | None = None) -> dict[str, Any]:
    lines = "\n".join(f"{command(syntax)}  {mrkdwn_escape(what)}" for syntax, what in usage)
    blocks = [header("/widen: the DAM's webhooks from Slack")]
    if note:
        blocks.append(section(f":grey_question: {note}"))
    blocks += [
        section(lines),
        context("Everything but `help` is for DAM admins. Answers are visible only to you; changes are "
                "also noted in the alerts channel."),
    ]
    return message("/widen usage: " + ", ".join(syntax.split()[0] for syntax, _ in usage), blocks)


def refusal(could_not_check: bool = False) -> dict[str, Any]:
    if could_not_check:
        return problem("Sorry, I could not check your Slack role just now. Please try again in a moment.")
    return notice(
        "Sorry, managing the DAM's webhooks is for DAM admins only (the people in widen-bot's "
        "ADMIN_USER_IDS, or workspace admins and owners when that list is empty). `/widen help` works "
        "for everyone.",
        ":lock:",
    )


# ---- list -----------------------------------------------------------------------------------------


def configuration_line(config: WebhookConfiguration) -> str:
    return " · ".join(
        [
            code(config.id),
            code(config.event_type or "unknown event"),
            f"delivery *{on_off(config.delivery_enabled)}*",
            f"signing {on_off(config.signing_enabled)}",
            f"last delivered {when(config.last_delivered_date)}",
        ]
    )


def configuration_list(configs: Sequence[WebhookConfiguration]) -> dict[str, Any]:
    if not configs:
        return notice("The DAM has no webhook configurations yet. Create one with `/widen create asset_created`.")
    lines = [configuration_line(c) for c in configs]
    chunks = [lines[i : i + LINES_PER_SECTION] for i in range(0, len(lines), LINES_PER_SECTION)]
    shown = chunks[:MAX_LIST_SECTIONS]
    count = len(configs)
    blocks = [header(f"{count} webhook configuration{'' if count == 1 else 's'}")]
    blocks += [section("\n".join(chunk)) for chunk in shown]
    hidden = count - sum(len(chunk) for chunk in shown)
    if hidden:
        blocks.append(context(f"…and {hidden} more not shown here."))
    blocks.append(context(f"id · event type · delivery · signing · last delivered. {command('inspect <id>')} for one."))
    return message(f"{count} webhook configurations", blocks)


# ---- one configuration ----------------------------------------------------------------------------


def configuration_card(
    config: WebhookConfiguration,
    *,
    seen: ConfigurationStats,
    delivers_to: str,
    round_trip: float | None = None,
) -> dict[str, Any]:
    """`delivers_to` is mrkdwn that is already safe (the caller masks secret route tokens)."""
    creator = config.created_by_user.uuid if config.created_by_user else None
    fields = [
        f"*Event type:* {code(config.event_type or 'unknown')}",
        f"*Created by:* {code(creator) if creator else 'unknown'}",
        f"*Created:* {when(config.created_date, 'unknown')}",
        f"*Last delivered:* {when(config.last_delivered_date)}",
        f"*Last pinged:* {when(config.last_pinged_date)}",
        f"*Signing:* {on_off(config.signing_enabled)}",
        f"*Delivery:* {on_off(config.delivery_enabled)}",
        f"*Delivers to:* {delivers_to}",
    ]
    seen_fields = [
        f"*Deliveries received:* {seen.received}",
        f"*Last received:* {when(seen.last_received)}",
        f"*Failures:* {seen.failures}",
    ]
    if round_trip is not None:
        seen_fields.append(f"*Last ping round trip:* {round_trip:.2f} s")
    toggle = (
        button("Disable delivery", ACTION_DISABLE, config.id)
        if config.delivery_enabled is not False
        else button("Enable delivery", ACTION_ENABLE, config.id, style="primary")
    )
    blocks = [
        header("Webhook configuration"),
        section(code(config.id), fields),
        section("*What widen-bot received*", seen_fields),
        actions(button("Ping", ACTION_PING, config.id), toggle, _delete_button(config)),
    ]
    return message(f"Webhook configuration {mrkdwn_escape(config.id)}", blocks)


def _delete_button(config: WebhookConfiguration) -> dict[str, Any]:
    dialog = confirm_dialog(
        "Delete this webhook?",
        f"The DAM stops delivering {code(config.event_type or 'its')} events for {code(config.id)}. "
        "This cannot be undone.",
        confirm="Delete",
    )
    return button("Delete", ACTION_DELETE, config.id, style="danger", confirm=dialog)


def delete_confirmation(config: WebhookConfiguration) -> dict[str, Any]:
    text = (
        f":warning: Delete webhook configuration {code(config.id)} ({code(config.event_type or 'unknown')})? "
        "The DAM stops delivering its events. Press *Delete* to confirm."
    )
    return message(_plain(text), [section(text), actions(_delete_button(config))])


def created(config_id: str, event_type: str, delivers_to: str, signing: str) -> dict[str, Any]:
    """`delivers_to` and `signing` are mrkdwn that is already safe."""
    text = (
        f":white_check_mark: Created webhook configuration {code(config_id)} for {code(event_type)}.\n"
        f"Delivers to {delivers_to}. {signing}"
    )
    return message(_plain(text), [section(text), actions(button("Ping", ACTION_PING, config_id, style="primary"))])


# ---- pings ----------------------------------------------------------------------------------------


def ping_sent(config_id: str, timeout: float) -> dict[str, Any]:
    return notice(
        f"Ping sent to webhook configuration {code(config_id)}. I will tell you when it arrives "
        f"(waiting up to {timeout:g} s).",
        ":satellite_antenna:",
    )


def ping_arrived(config_id: str, seconds: float) -> dict[str, Any]:
    return notice(
        f"The ping of {code(config_id)} reached widen-bot: round trip *{seconds:.2f} s* "
        "(from asking the DAM to the delivery being processed here).",
        ":white_check_mark:",
    )


def ping_missing(config_id: str, timeout: float, hints: Sequence[str]) -> dict[str, Any]:
    text = f"No ping from {code(config_id)} arrived within {timeout:g} s. Things to check:\n" + "\n".join(
        f"• {hint}" for hint in hints
    )
    return message(_plain(text), [section(f":hourglass: {text}")])


# ---- inbox ----------------------------------------------------------------------------------------


def _age(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def status_message(stats: InboxStats) -> dict[str, Any]:
    oldest = "none waiting" if stats.oldest_pending_age is None else f"{_age(stats.oldest_pending_age)} old"
    fields = [
        f"*Waiting:* {stats.pending + stats.in_flight} ({stats.in_flight} in progress)",
        f"*Oldest waiting:* {oldest}",
        f"*Parked:* {stats.parked}",
        f"*Posted:* {stats.posted}",
    ]
    blocks = [header("widen-bot inbox"), section(None, fields)]
    if stats.last_errors:
        lines = [
            f"• {code(delivery_id)} ({code(event_type)}): {mrkdwn_escape(error)[:300]}"
            for delivery_id, event_type, error in stats.last_errors
        ]
        blocks.append(section("*Last errors*\n" + "\n".join(lines)))
    if stats.parked:
        blocks.append(context(f"Put parked deliveries back with {command('retry <delivery id>')} or "
                              f"{command('retry all')}."))
    text = f"Inbox: {stats.pending + stats.in_flight} waiting, {stats.parked} parked"
    return message(text, blocks)


# ---- the alerts channel -----------------------------------------------------------------------------


def audit_line(user_id: str, did: str) -> dict[str, Any]:
    """`did` is mrkdwn that is already safe, e.g. "deleted webhook configuration `…`"."""
    text = f":memo: {mention(user_id)} {did}"
    return message(_plain(f"{user_id} {did}"), [context(text)])
