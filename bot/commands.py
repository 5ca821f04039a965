"""`/widen` subcommands and buttons: parsing, checking, calling the DAM, answering.

Runs after Slack has been acknowledged (bot.app), so it may take as long as the DAM takes. Every
answer goes to the person's response_url; every change is also noted in the alerts channel. Input is
checked for shape before anything reaches the DAM, and DAM failures become plain sentences.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from bot import cards
from bot.blocks import mrkdwn_escape
from bot.notify import Notifier, SlackError, SlackUnavailable
from bot.pings import PingTracker
from bot.replies import Replies
from receiver.inbox import Inbox
from receiver.routes import create_routed_configuration, delivery_url, route_token
from receiver.settings import Settings
from widen.client import (
    BadRequest,
    NotFound,
    RateLimited,
    Unauthorized,
    Unavailable,
    WidenClient,
    WidenError,
    may_have_acted,
)
from widen.models import ASSET_EVENT_TYPES

log = logging.getLogger(__name__)

USAGE: tuple[tuple[str, str], ...] = (
    ("help", "this list"),
    ("list", "every webhook configuration in the DAM"),
    ("create <event_type> [delivery_url]", "a new configuration; without a URL it delivers to widen-bot "
                                           "with its own URL and secret"),
    ("inspect <id>", "one configuration, and what widen-bot received from it (also: show)"),
    ("ping <id>", "the DAM sends a ping; you hear when it arrives and how long it took"),
    ("enable <id>", "turn delivery on"),
    ("disable <id>", "turn delivery off"),
    ("delete <id>", "delete a configuration (asks first)"),
    ("status", "widen-bot's inbox: waiting, parked, recent errors"),
    ("retry <delivery id>|all", "put parked deliveries back in the queue"),
)
# What a person may type; the subcommands in USAGE, with a few aliases.
HANDLED: frozenset[str] = frozenset(syntax.split()[0] for syntax, _ in USAGE)
ALIASES = {"show": "inspect", "ls": "list", "info": "inspect"}
OPEN_TO_EVERYONE = frozenset({"help"})

# The DAM's configuration ids are UUIDs; checked before any call so nothing odd reaches its API.
CONFIGURATION_ID = re.compile(r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$")
# A delivery id is the DAM's webhook_delivery_id, or our "sha256:<hex>" for a delivery without one.
DELIVERY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:._-]{0,199}$")
_WRAPPED = re.compile(r"^<([^<>|]*)(?:\|[^<>]*)?>$")


class UsageError(Exception):
    """What the person typed cannot be run; the message (safe mrkdwn) says why."""


@dataclass(frozen=True)
class Caller:
    user_id: str
    channel_id: str | None
    response_url: str


# ---- parsing --------------------------------------------------------------------------------------


def unwrap(word: str) -> str:
    """`<https://x|x>` or `<id>` as Slack sends pasted links, entities decoded: the bare value."""
    match = _WRAPPED.match(word)
    if match:
        word = match.group(1)
    return word.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def parse(text: str) -> tuple[str, list[str]]:
    """The subcommand (lower case, aliases resolved; "help" when empty) and its arguments."""
    words = text.split()
    if not words:
        return "help", []
    name = words[0].lower()
    return ALIASES.get(name, name), [unwrap(w) for w in words[1:]]


def subcommand_of(text: str) -> str:
    return parse(text)[0]


def is_open_to_everyone(text: str) -> bool:
    """help, and what would only print help (empty or unknown): no admin needed, nothing reaches the DAM."""
    name = subcommand_of(text)
    return name in OPEN_TO_EVERYONE or name not in HANDLED


def configuration_id(args: list[str], syntax: str) -> str:
    if len(args) != 1:
        raise UsageError(f"Usage: {cards.command(syntax)}")
    value = args[0]
    if not CONFIGURATION_ID.match(value):
        raise UsageError(
            f"{cards.code(value[:80])} does not look like a webhook configuration id (a UUID such as "
            "`976cf9b0-95d0-4dbd-acb0-57fbdaef7b6f`). `/widen list` shows them."
        )
    return value


def checked_url(value: str) -> str:
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket
        host = None
    if host is None or parts.scheme.lower() not in ("http", "https") or any(c.isspace() for c in value):
        raise UsageError(f"{cards.code(value[:200])} is not an http(s) URL the DAM can deliver to.")
    return value


def mask_route_token(url: str) -> str:
    """A delivery URL with the secret route token of `/webhooks/widen/{token}` hidden."""
    return re.sub(r"(/webhooks/widen/)[^/?#]+", r"\1…", url)


# ---- running --------------------------------------------------------------------------------------


class Commands:
    def __init__(
        self,
        *,
        widen: WidenClient,
        inbox: Inbox,
        notifier: Notifier,
        settings: Settings,
        pings: PingTracker,
        replies: Replies,
    ) -> None:
        self.widen = widen
        self.inbox = inbox
        self.notifier = notifier
        self.settings = settings
        self.pings = pings
        self.replies = replies
        self._handlers: dict[str, Callable[[list[str], Caller], Awaitable[None]]] = {
            "help": self._help,
            "list": self._list,
            "create": self._create,
            "inspect": self._inspect,
            "ping": self._ping,
            "enable": self._enable,
            "disable": self._disable,
            "delete": self._delete,
            "delete-confirmed": self._delete_confirmed,  # only the confirming button gets here
            "status": self._status,
            "retry": self._retry,
        }

    # ---- entry points --------------------------------------------------------------------------

    async def run(self, text: str, caller: Caller) -> None:
        """A `/widen <text>` from Slack (the caller was authorized for anything but help)."""
        name, args = parse(text)
        if name not in HANDLED:
            note = f"I don't know `{mrkdwn_escape(name[:40]).replace('`', '')}`. These are the subcommands:"
            await self.reply(caller, cards.help_message(USAGE, note))
            return
        await self._guarded(name, args, caller)

    async def press(self, action_id: str, value: str, caller: Caller) -> None:
        """A button of one of our answers (the caller was authorized)."""
        name = {
            cards.ACTION_PING: "ping",
            cards.ACTION_ENABLE: "enable",
            cards.ACTION_DISABLE: "disable",
            cards.ACTION_DELETE: "delete-confirmed",
        }.get(action_id)
        if name is None:
            log.warning("unknown button %s", action_id[:60])
            return
        await self._guarded(name, [value], caller)

    async def _guarded(self, name: str, args: list[str], caller: Caller) -> None:
        try:
            await self._handlers[name](args, caller)
        except UsageError as exc:
            await self.reply(caller, cards.problem(str(exc)))
        except WidenError as exc:
            log.info("/widen %s: the DAM answered %s", name, exc.status)
            await self.reply(caller, cards.problem(dam_problem(exc, args, creating=name == "create")))
        except Exception:
            log.exception("/widen %s failed", name)
            await self.reply(caller, cards.problem("Something went wrong on widen-bot's side; the details "
                                                   "are in its log."))

    async def reply(self, caller: Caller, message: dict[str, Any], *, replace_original: bool = False) -> None:
        await self.replies.send(caller.response_url, message, replace_original=replace_original)

    async def audit(self, caller: Caller, did: str) -> None:
        """A short line in the alerts channel naming who changed what."""
        channel = self.settings.slack_channel
        if not channel:
            return
        try:
            await self.notifier.post(channel, cards.audit_line(caller.user_id, did))
        except (SlackError, SlackUnavailable) as exc:
            log.warning("the audit line could not be posted: %s", exc)

    # ---- subcommands ---------------------------------------------------------------------------

    async def _help(self, args: list[str], caller: Caller) -> None:
        await self.reply(caller, cards.help_message(USAGE))

    async def _list(self, args: list[str], caller: Caller) -> None:
        configs = await self.widen.all_webhooks()
        await self.reply(caller, cards.configuration_list(configs))

    async def _create(self, args: list[str], caller: Caller) -> None:
        if not 1 <= len(args) <= 2:
            raise UsageError(f"Usage: {cards.command('create <event_type> [delivery_url]')}")
        event_type = args[0].lower()
        if event_type not in ASSET_EVENT_TYPES:
            known = ", ".join(cards.code(t) for t in ASSET_EVENT_TYPES)
            raise UsageError(f"{cards.code(args[0][:60])} is not an event type the DAM knows. Use one of: {known}.")
        if len(args) == 2:
            await self._create_for_url(event_type, checked_url(args[1]), caller)
            return
        base = self.settings.public_base_url
        if base is None:
            raise UsageError("widen-bot does not know its public address: set PUBLIC_BASE_URL, or give a "
                             f"delivery URL ({cards.command('create <event_type> <delivery_url>')}).")
        created = await create_routed_configuration(
            self.widen, self.inbox, public_base_url=str(base), event_type=event_type, created_by=caller.user_id
        )
        shown = mrkdwn_escape(mask_route_token(created.delivery_url))
        await self.reply(caller, cards.created(
            created.id, event_type, f"widen-bot at its own URL ({shown})",
            "Deliveries are signed with a secret widen-bot generated and keeps; it is never shown.",
        ))
        await self.audit(caller, f"created webhook configuration {cards.code(created.id)} for "
                                 f"{cards.code(event_type)}, delivering to widen-bot")

    async def _create_for_url(self, event_type: str, url: str, caller: Caller) -> None:
        # widen-bot's shared path verifies with WIDEN_WEBHOOK_SECRET: give the DAM that secret to sign with.
        secret = self.settings.widen_webhook_secret
        shared = self._is_shared_path(url)
        secret_key = secret if shared and secret is not None else None
        config_id = await self.widen.create_webhook(event_type, url, secret_key=secret_key)
        signing = ("Deliveries are signed with WIDEN_WEBHOOK_SECRET." if secret_key is not None
                   else "Deliveries are not signed.")
        await self.reply(caller, cards.created(config_id, event_type, mrkdwn_escape(mask_route_token(url)), signing))
        # Only the host in the channel: a URL may carry credentials of the receiving side.
        host = "widen-bot" if shared else mrkdwn_escape(urlsplit(url).hostname or "another server")
        await self.audit(caller, f"created webhook configuration {cards.code(config_id)} for "
                                 f"{cards.code(event_type)}, delivering to {host}")

    def _is_shared_path(self, url: str) -> bool:
        base = self.settings.public_base_url
        return base is not None and url.rstrip("/") == f"{str(base).rstrip('/')}/webhooks/widen"

    async def _inspect(self, args: list[str], caller: Caller) -> None:
        config_id = configuration_id(args, "inspect <id>")
        config = await self.widen.get_webhook(config_id)
        seen = await self.inbox.configuration_stats(config_id)
        round_trip = self.pings.last.get(config_id)
        card = cards.configuration_card(
            config,
            seen=seen,
            delivers_to=await self._delivers_to(config.delivery_url),
            round_trip=round_trip.seconds if round_trip else None,
        )
        await self.reply(caller, card)

    async def _delivers_to(self, url: str | None) -> str:
        if not url:
            return "not shown by the DAM"
        base = str(self.settings.public_base_url or "").rstrip("/")
        own = f"{base}/webhooks/widen/" if base else None
        if own and url.startswith(own):
            token = url[len(own):].split("/")[0]
            if await self.inbox.route(token) is not None:
                return "widen-bot, at its own URL"
            return "a widen-bot URL this widen-bot does not know (it answers 404): another install's?"
        return mrkdwn_escape(mask_route_token(url))

    async def _ping(self, args: list[str], caller: Caller) -> None:
        config_id = configuration_id(args, "ping <id>")
        pending = self.pings.expect(config_id)  # before asking: the ping may arrive before the DAM answers
        try:
            await self.widen.ping_webhook(config_id)
        except BaseException:
            self.pings.forget(pending)
            raise
        timeout = self.settings.ping_timeout_seconds
        await self.reply(caller, cards.ping_sent(config_id, timeout))
        seconds = await self.pings.wait(pending, timeout)
        if seconds is not None:
            await self.reply(caller, cards.ping_arrived(config_id, seconds))
        else:
            await self.reply(caller, cards.ping_missing(config_id, timeout, await self._ping_hints(config_id)))

    async def _ping_hints(self, config_id: str) -> list[str]:
        hints = []
        try:
            config = await self.widen.get_webhook(config_id)
        except WidenError:
            config = None
        if config is not None and config.delivery_enabled is False:
            hints.append(f"*Delivery is off* for this configuration: `/widen enable {mrkdwn_escape(config_id)}`.")
        base = str(self.settings.public_base_url or "").rstrip("/")
        if config is not None and config.delivery_url and base and not config.delivery_url.startswith(base):
            hints.append(f"It delivers to {mrkdwn_escape(mask_route_token(config.delivery_url))}, not to "
                         "widen-bot, so widen-bot cannot see its pings.")
        hints += [
            "The delivery URL is reachable from the DAM (PUBLIC_BASE_URL is this server as the internet sees "
            "it; widen-bot's log shows a line for every delivery it refuses).",
            "The signature secret matches: WIDEN_WEBHOOK_SECRET for the shared path `/webhooks/widen`; a "
            "configuration made by `/widen create` carries its own.",
            f"Delivery is enabled for the configuration ({cards.command('inspect <id>')} shows it).",
        ]
        return hints

    async def _enable(self, args: list[str], caller: Caller) -> None:
        await self._set_delivery(configuration_id(args, "enable <id>"), True, caller)

    async def _disable(self, args: list[str], caller: Caller) -> None:
        await self._set_delivery(configuration_id(args, "disable <id>"), False, caller)

    async def _set_delivery(self, config_id: str, enabled: bool, caller: Caller) -> None:
        # The API description's PUT may replace the whole configuration: send what it has now (and the
        # secret, when the bot made it), so turning delivery off never drops the URL or the signing.
        current = await self.widen.get_webhook(config_id)
        fields: dict[str, object] = {"delivery_enabled": enabled}
        if current.event_type:
            fields["event_type"] = current.event_type
        if current.delivery_url:
            fields["delivery_url"] = current.delivery_url
        secret = await self._signing_secret(config_id, current.delivery_url)
        if secret is not None:
            fields["secret_key"] = secret
        await self.widen.edit_webhook(config_id, **fields)
        state = "on" if enabled else "off"
        await self.reply(caller, cards.notice(f"Delivery is now *{state}* for {cards.code(config_id)}.",
                                              ":white_check_mark:"))
        await self.audit(caller, f"turned delivery *{state}* for webhook configuration {cards.code(config_id)}")

    async def _signing_secret(self, config_id: str, url: str | None) -> str | SecretStr | None:
        """The secret_key widen-bot gave this configuration, if it gave one: its route's (confirmed, or
        still pending at widen-bot's own URL), or WIDEN_WEBHOOK_SECRET for the shared path."""
        route = await self.inbox.route_of(config_id)
        base, token = self.settings.public_base_url, route_token(url)
        if route is None and base is not None and token and (url or "").rstrip("/") == delivery_url(str(base), token):
            pending = await self.inbox.route(token)
            route = pending if pending is not None and pending.pending else None
        if route is not None:
            return route.secret
        return self.settings.widen_webhook_secret if url and self._is_shared_path(url) else None

    async def _delete(self, args: list[str], caller: Caller) -> None:
        config = await self.widen.get_webhook(configuration_id(args, "delete <id>"))
        await self.reply(caller, cards.delete_confirmation(config))

    async def _delete_confirmed(self, args: list[str], caller: Caller) -> None:
        config_id = configuration_id(args, "delete <id>")
        try:
            await self.widen.delete_webhook(config_id)
        except NotFound:
            await self.inbox.forget_route(config_id)  # gone already: nothing left to deliver to its URL
            raise
        await self.inbox.forget_route(config_id)
        await self.reply(caller, cards.notice(f"Deleted webhook configuration {cards.code(config_id)}.",
                                              ":wastebasket:"), replace_original=True)
        await self.audit(caller, f"deleted webhook configuration {cards.code(config_id)}")

    async def _status(self, args: list[str], caller: Caller) -> None:
        await self.reply(caller, cards.status_message(await self.inbox.stats()))

    async def _retry(self, args: list[str], caller: Caller) -> None:
        if len(args) != 1:
            raise UsageError(f"Usage: {cards.command('retry <delivery id>')} or {cards.command('retry all')}")
        which = args[0]
        if which.lower() == "all":
            count = await self.inbox.unpark(None)
            if count == 0:
                await self.reply(caller, cards.notice("Nothing to retry: no delivery is parked."))
                return
            done = f"{count} parked deliver{'y' if count == 1 else 'ies'}"
        elif DELIVERY_ID.match(which):
            if await self.inbox.unpark(which) == 0:
                await self.reply(caller, cards.notice(f"Nothing to retry: no parked delivery {cards.code(which)}."))
                return
            done = f"parked delivery {cards.code(which)}"
        else:
            raise UsageError(f"{cards.code(which[:80])} does not look like a delivery id. `/widen status` "
                             "shows the recent ones.")
        await self.reply(caller, cards.notice(f"Put {done} back in the queue.", ":recycle:"))
        await self.audit(caller, f"put {done} back in the queue")

def dam_problem(exc: WidenError, args: list[str], *, creating: bool = False) -> str:
    """A DAM failure as one plain sentence (safe mrkdwn); never a traceback."""
    if creating and may_have_acted(exc):
        # Not retried, as a retry could make a second one: the admin looks, then decides.
        status = f" ({exc.status})" if exc.status else ""
        return (f"The DAM did not confirm the new configuration{status}; it may have made it anyway. "
                f"Check {cards.command('list')} before creating it again.")
    subject = cards.code(args[0][:80]) if args else "that"
    if isinstance(exc, NotFound):
        return f"Not found: the DAM has no webhook configuration {subject}."
    if isinstance(exc, Unauthorized):
        return (f"Not authorized: the DAM refused widen-bot's API token ({exc.status}). Check WIDEN_API_TOKEN: "
                "it must be valid and belong to a DAM user who may manage webhooks.")
    if isinstance(exc, RateLimited):
        wait = max(1, math.ceil(exc.retry_after))
        return f"Rate limited: the DAM asks widen-bot to slow down. Try again in {wait} s."
    if isinstance(exc, Unavailable):
        status = f" ({exc.status})" if exc.status else ""
        return f"The DAM is unavailable right now{status}. Try again in a minute."
    if isinstance(exc, BadRequest):
        return f"The DAM refused the request: {mrkdwn_escape(str(exc))[:300]}"
    return "The DAM gave an answer widen-bot did not understand; the details are in its log."
