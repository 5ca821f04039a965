"""The Slack side of the server: Bolt's AsyncApp with `/widen` and its buttons.

HTTP mode: Slack POSTs commands and button presses to /slack/events and Bolt verifies each signature
with SLACK_SIGNING_SECRET (401 when it is wrong or stale). Socket Mode (SLACK_APP_TOKEN set): the same
app over a websocket that widen-bot opens itself, so no public URL is needed; /slack/events is then not
mounted at all.

Every listener acknowledges first and hands the work to `Background`, because Slack wants an answer
within 3 s and the DAM may take longer. Who may do what is decided once, by the `admins_only` listener
middleware that guards both listeners.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped
from slack_bolt.response import BoltResponse
from slack_sdk.web.async_client import AsyncWebClient

from bot import cards
from bot.admins import Admins, Decision
from bot.background import Background
from bot.commands import Caller, Commands, is_open_to_everyone
from bot.pings import PingTracker
from bot.replies import Replies
from receiver.settings import Settings

log = logging.getLogger(__name__)

SLACK_EVENTS_PATH = "/slack/events"
COMMAND = "/widen"

PINGS = web.AppKey("pings", PingTracker)
BOLT = web.AppKey("bolt", AsyncApp)
SOCKET_MODE = web.AppKey("socket_mode", AsyncSocketModeHandler)


def mount_slack(app: web.Application, settings: Settings) -> None:
    """Adds the Slack side to the server: the ping tracker, Bolt's life, and /slack/events in HTTP mode."""
    from receiver.app import PING_LISTENERS  # receiver.app imports this module: read its keys late

    pings = PingTracker()
    app[PINGS] = pings
    listeners = app.get(PING_LISTENERS)
    if listeners is None:
        listeners = app[PING_LISTENERS] = []
    listeners.append(pings.on_ping)
    app.cleanup_ctx.append(_run_slack)
    if not settings.socket_mode:
        app.router.add_post(SLACK_EVENTS_PATH, slack_events)


def _missing(settings: Settings) -> str | None:
    if settings.slack_bot_token is None:
        return "SLACK_BOT_TOKEN is not set"
    if not settings.socket_mode and settings.slack_signing_secret is None:
        return "SLACK_SIGNING_SECRET is not set (or set SLACK_APP_TOKEN for Socket Mode)"
    return None


async def _run_slack(app: web.Application) -> AsyncIterator[None]:
    from receiver.app import INBOX, NOTIFIER, SETTINGS, SLACK, WIDEN  # see mount_slack

    settings = app[SETTINGS]
    missing = _missing(settings)
    if missing:
        log.warning("/widen is off: %s", missing)
        yield
        return
    background = Background()
    replies = Replies()
    commands = Commands(
        widen=app[WIDEN], inbox=app[INBOX], notifier=app[NOTIFIER], settings=settings,
        pings=app[PINGS], replies=replies,
    )
    admins = Admins(app[SLACK], settings.admin_user_ids)
    bolt = build_bolt(app[SLACK], settings, commands, admins, replies, background)
    app[BOLT] = bolt
    connecting: asyncio.Task[None] | None = None
    if settings.socket_mode and settings.slack_app_token is not None:
        handler = AsyncSocketModeHandler(bolt, settings.slack_app_token.get_secret_value())
        app[SOCKET_MODE] = handler
        connecting = asyncio.create_task(_connect(handler))
    try:
        yield
    finally:
        if connecting is not None:
            connecting.cancel()
            await asyncio.gather(connecting, return_exceptions=True)
            await app[SOCKET_MODE].close_async()
        await background.close()


async def _connect(handler: AsyncSocketModeHandler) -> None:
    """Opens the Socket Mode connection in the background, so webhook deliveries are served meanwhile.
    slack_sdk's client retries a failed connect by itself (logging why) and reconnects when dropped."""
    await handler.connect_async()
    log.info("connected to Slack over Socket Mode")


class _SameTokenNotice(logging.Filter):
    """Bolt warns that its `token` goes unused whenever SLACK_BOT_TOKEN is in the environment and a client
    is given, though that client was made with the very same token: nothing for an operator to do."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != warning_client_prioritized_and_token_skipped()


logging.getLogger("slack_bolt.AsyncApp").addFilter(_SameTokenNotice())


def build_bolt(
    client: AsyncWebClient,
    settings: Settings,
    commands: Commands,
    admins: Admins,
    replies: Replies,
    background: Background,
) -> AsyncApp:
    secret = settings.slack_signing_secret
    bolt = AsyncApp(
        name="widen-bot",
        client=client,  # points at SLACK_API_URL
        signing_secret=secret.get_secret_value() if secret else "",
        # Socket Mode requests come over widen-bot's own authenticated websocket: nothing to verify.
        request_verification_enabled=not settings.socket_mode,
    )

    async def admins_only(body: dict[str, Any], next: Callable[[], Awaitable[None]]) -> BoltResponse | None:
        """Anything but help is for DAM admins; a refusal is acknowledged and nothing reaches the DAM."""
        if "command" in body and is_open_to_everyone(str(body.get("text") or "")):
            await next()
            return None
        user_id = body.get("user_id") or (body.get("user") or {}).get("id")
        decision = await admins.check(user_id)
        if decision is Decision.ALLOWED:
            await next()
            return None
        log.info("refused a /widen request of %s (%s)", user_id, decision.value)
        refusal = cards.refusal(could_not_check=decision is Decision.UNKNOWN)
        background.spawn(replies.send(str(body.get("response_url") or ""), refusal))
        return BoltResponse(status=200, body="")

    async def on_command(ack: Any, command: dict[str, Any]) -> None:
        await ack()
        caller = Caller(str(command.get("user_id") or ""), command.get("channel_id"),
                        str(command.get("response_url") or ""))
        background.spawn(commands.run(str(command.get("text") or ""), caller))

    async def on_button(ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
        caller = Caller(str((body.get("user") or {}).get("id") or ""), channel, str(body.get("response_url") or ""))
        background.spawn(commands.press(str(action.get("action_id")), str(action.get("value") or ""), caller))

    bolt.command(COMMAND, middleware=[admins_only])(on_command)
    bolt.action(re.compile("^" + re.escape(cards.ACTION_PREFIX)), middleware=[admins_only])(on_button)
    return bolt


async def slack_events(request: web.Request) -> web.Response:
    """Slash commands and button presses (HTTP mode): Bolt verifies, acknowledges and dispatches."""
    bolt = request.app.get(BOLT)
    if bolt is None:
        return web.json_response({"error": "/widen is off; widen-bot's log says why"}, status=503)
    if not _plausibly_signed(request):
        return web.json_response({"error": "invalid request"}, status=401)
    try:
        bolt_request = await to_bolt_request(request)
    except UnicodeDecodeError:  # Slack sends UTF-8; anything else is not from Slack
        return web.json_response({"error": "invalid request"}, status=401)
    return await to_aiohttp_response(await bolt.async_dispatch(bolt_request))


def _plausibly_signed(request: web.Request) -> bool:
    """Headers Bolt's verifier would choke on (it expects Slack's shapes) are refused before it."""
    timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
    signature = request.headers.get("X-Slack-Signature", "")
    return timestamp.isdigit() and len(timestamp) <= 12 and signature.isascii()
