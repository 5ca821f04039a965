"""The HTTP edge: `build_app(settings)` mounts webhooks, Slack, health and metrics.

Everything with a life (store, DAM client, Slack client, worker) is opened and closed in `cleanup_ctx`
generators below, so start-up and shutdown read top to bottom in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import orjson
from aiohttp import web
from pydantic import ValidationError
from slack_sdk.web.async_client import AsyncWebClient

from bot.app import mount_slack
from bot.notify import ChannelPacer, Notifier
from receiver import signing
from receiver.inbox import Inbox, NewDelivery
from receiver.logs import register_secret
from receiver.metrics import CONTENT_TYPE_LATEST, Metrics
from receiver.readiness import Readiness
from receiver.retention import keep_forgetting
from receiver.routes import keep_settling
from receiver.settings import Settings
from receiver.worker import Worker
from widen.client import WidenClient
from widen.models import ASSET_EVENT_TYPES, PING, DeliveryHead, WebhookEvent

log = logging.getLogger(__name__)

MAX_BODY = 256 * 1024
BODY_SECONDS = 10.0
ACCEPTED = b'{"status": "accepted"}'
DUPLICATE = b'{"status": "duplicate"}'

SETTINGS = web.AppKey("settings", Settings)
INBOX = web.AppKey("inbox", Inbox)
WIDEN = web.AppKey("widen", WidenClient)
SLACK = web.AppKey("slack", AsyncWebClient)
NOTIFIER = web.AppKey("notifier", Notifier)
WORKER = web.AppKey("worker", Worker)
METRICS = web.AppKey("metrics", Metrics)
READINESS = web.AppKey("readiness", Readiness)


def build_app(settings: Settings, *, slack_channel_rate: float = 1.0) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    for secret in (settings.slack_bot_token, settings.slack_signing_secret, settings.slack_app_token,
                   settings.widen_api_token, settings.widen_webhook_secret):
        register_secret(secret.get_secret_value() if secret else None)
    if settings.widen_allow_unsigned:
        log.warning("WIDEN_ALLOW_UNSIGNED is on: unsigned deliveries to /webhooks/widen are accepted. "
                    "Use it only to try things out.")

    app.cleanup_ctx.append(_open_inbox)
    app.cleanup_ctx.append(_open_clients(slack_channel_rate))
    app.cleanup_ctx.append(_run_worker)
    app.cleanup_ctx.append(_in_background(lambda app: keep_forgetting(app[INBOX], app[SETTINGS].retention_days)))
    app.cleanup_ctx.append(_in_background(lambda app: keep_settling(app[WIDEN], app[INBOX])))

    for path in ("/webhooks/widen", "/webhooks/widen/{token}"):
        app.router.add_post(path, receive_delivery)
        app.router.add_post(path + "/", receive_delivery)  # the same URL, as a DAM or an admin may write it
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app[PING_LISTENERS] = []  # called for every ping the worker processes; /widen ping listens here
    mount_slack(app, settings)  # /slack/events (or Socket Mode) and /widen
    return app


# ---- resources with a life ------------------------------------------------------------------------


async def _open_inbox(app: web.Application) -> AsyncIterator[None]:
    inbox = Inbox(app[SETTINGS].database_path)
    await inbox.open()
    app[INBOX] = inbox
    yield
    await inbox.close()


def _open_clients(slack_channel_rate: float) -> Any:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        metrics = app[METRICS]
        widen = WidenClient(
            str(settings.widen_api_url),
            settings.widen_api_token.get_secret_value() if settings.widen_api_token else "",
            rate_limit=settings.widen_rate_limit,
            on_retry=lambda reason: metrics.retried("dam", reason),
            on_call=lambda op, outcome: metrics.dam_calls.labels(op, outcome).inc(),
        )
        slack = AsyncWebClient(
            token=settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None,
            base_url=str(settings.slack_api_url),
            retry_handlers=[],  # retries are ours (bot.notify), so pacing sees every attempt
        )
        app[WIDEN] = widen
        app[SLACK] = slack
        app[NOTIFIER] = Notifier(
            slack,
            pacer=ChannelPacer(rate=slack_channel_rate),
            on_call=lambda method, outcome: metrics.slack_calls.labels(method, outcome).inc(),
            on_retry=lambda reason: metrics.retried("slack", reason),
        )
        app[READINESS] = Readiness(app[INBOX], slack, widen, cache_seconds=settings.ready_cache_seconds)
        yield
        await widen.aclose()
        if slack.session is not None and not slack.session.closed:
            await slack.session.close()

    return ctx


async def _run_worker(app: web.Application) -> AsyncIterator[None]:
    metrics = app[METRICS]

    def observe(outcome: str, delivery: Any, age: float) -> None:
        metrics.processed.labels(outcome).inc()
        if outcome == "posted":
            metrics.latency.observe(age)

    worker = Worker(app[INBOX], app[WIDEN], app[NOTIFIER], app[SETTINGS], observe=observe,
                    on_ping=_ping_hook(app))
    app[WORKER] = worker
    await worker.start()
    yield
    await worker.stop(app[SETTINGS].shutdown_timeout)


def _in_background(job: Callable[[web.Application], Coroutine[Any, Any, None]]) -> Any:
    """Housekeeping that runs as long as the app does (it loops and sleeps on its own)."""
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(job(app))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return ctx


def _ping_hook(app: web.Application) -> Any:
    async def on_ping(event: WebhookEvent) -> None:
        for listener in app.get(PING_LISTENERS, []):
            await listener(event)

    return on_ping


PING_LISTENERS = web.AppKey("ping_listeners", list)


# ---- webhook deliveries ----------------------------------------------------------------------------


def _refuse(status: int, error: str, **extra: Any) -> web.Response:
    return web.json_response({"error": error, **extra}, status=status)


class _Unreadable(Exception):
    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error


async def _read_limited(request: web.Request) -> bytes:
    """The body, within MAX_BODY (aiohttp checks Content-Length and counts as it reads) and BODY_SECONDS."""
    try:
        if request.content.is_eof():  # all of it arrived with the headers, as small bodies do: no timer
            return await request.read()
        async with asyncio.timeout(BODY_SECONDS):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _Unreadable(413, f"body over {MAX_BODY} bytes") from None
    except TimeoutError:  # a sender trickling its body holds a connection, never the store
        raise _Unreadable(408, f"body not received within {BODY_SECONDS} s") from None
    except web.RequestPayloadError:  # e.g. a Content-Encoding that does not decode
        raise _Unreadable(400, "body could not be read (bad encoding or truncated)") from None


async def receive_delivery(request: web.Request) -> web.Response:
    app = request.app
    settings = app[SETTINGS]
    metrics = app[METRICS]
    token = request.match_info.get("token")

    try:
        body = await _read_limited(request)
    except _Unreadable as exc:
        metrics.delivery("unknown", "too_large" if exc.status == 413 else "unreadable")
        return _refuse(exc.status, exc.error)

    header = request.headers.get(settings.widen_signature_header)
    if token is not None:
        route = await app[INBOX].route(token)
        if route is None:
            metrics.delivery("unknown", "unknown_route")
            return _refuse(404, "unknown delivery URL")
        # The unguessable URL authenticates the delivery; a signature, when sent, must also be right.
        if header is not None and not signing.verify(body, route.secret, header):
            metrics.delivery("unknown", "bad_signature")
            return _refuse(401, "signature does not match")
    else:
        route = None
        secret = settings.widen_webhook_secret
        if secret is not None and (header is not None or not settings.widen_allow_unsigned):
            if not signing.verify(body, secret.get_secret_value(), header):
                metrics.delivery("unknown", "bad_signature")
                return _refuse(401, "signature missing or wrong" if header else
                               f"signature missing: send {settings.widen_signature_header}")
        elif secret is None and not settings.widen_allow_unsigned:
            metrics.delivery("unknown", "bad_signature")
            return _refuse(401, "this path is closed: no WIDEN_WEBHOOK_SECRET is set")

    try:
        payload = _parse_json(body)
    except (ValueError, RecursionError):
        metrics.delivery("unknown", "bad_json")
        return _refuse(400, "body is not JSON")
    if not isinstance(payload, dict):
        metrics.delivery("unknown", "bad_json")
        return _refuse(400, "body is not a JSON object")
    try:
        event = DeliveryHead.model_validate(payload)
    except (ValidationError, RecursionError) as exc:
        fields = sorted({str(e["loc"][0]) for e in exc.errors()}) if isinstance(exc, ValidationError) else []
        metrics.delivery("unknown", "invalid")
        return _refuse(422, "event_type and webhook_configuration_id must be non-empty strings", fields=fields)
    if route is not None and not route.pending and event.webhook_configuration_id != route.configuration_id:
        metrics.delivery(_label(event.event_type), "invalid")
        return _refuse(422, "webhook_configuration_id does not match this delivery URL")

    is_new = await app[INBOX].accept(
        NewDelivery(
            body=body,
            delivery_id=event.webhook_delivery_id,
            configuration_id=event.webhook_configuration_id,
            event_type=event.event_type,
            asset_id=event.asset_id,
            route=route.token if route else None,
        )
    )
    metrics.delivery(_label(event.event_type), "accepted" if is_new else "duplicate")
    return web.Response(body=ACCEPTED if is_new else DUPLICATE, content_type="application/json")


def _parse_json(body: bytes) -> Any:
    """orjson, for speed; what it refuses goes to the standard library's parser, which decides as it
    always did (it takes a lone surrogate escape, or UTF-16, that orjson does not)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)


def _label(event_type: str) -> str:
    """Event types are sender-controlled: keep metric labels to a known, bounded set."""
    return event_type if event_type in ASSET_EVENT_TYPES or event_type == PING else "other"


# ---- operations --------------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    problems = await request.app[READINESS].problems()
    if problems:
        return web.json_response({"status": "not ready", "problems": problems}, status=503)
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    app = request.app
    m = app[METRICS]
    stats = await app[INBOX].stats()
    m.inbox_depth.set(stats.pending + stats.in_flight)
    m.oldest_pending.set(stats.oldest_pending_age or 0)
    m.parked.set(stats.parked)
    return web.Response(body=m.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

