"""Delivery URLs of our own: `/webhooks/widen/{token}`, each with its configuration's secret.

A configuration made through the bot gets an unguessable URL and a generated secret_key, so its
deliveries are authenticated by the URL even if the DAM's signature header turns out to differ.
A create whose answer was lost leaves its route pending; `keep_settling` later asks the DAM whether the
configuration exists after all, and confirms or forgets the route.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sqlite3
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from receiver.inbox import PENDING, Inbox
from receiver.logs import register_secret
from widen.client import WidenClient, may_have_acted

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CreatedConfiguration:
    id: str
    delivery_url: str


def delivery_url(public_base_url: str, token: str) -> str:
    return f"{public_base_url.rstrip('/')}/webhooks/widen/{token}"


async def create_routed_configuration(
    widen: WidenClient, inbox: Inbox, *, public_base_url: str, event_type: str, created_by: str | None
) -> CreatedConfiguration:
    token = secrets.token_urlsafe(24)
    secret_key = secrets.token_urlsafe(32)  # 32 random bytes
    register_secret(secret_key)
    url = delivery_url(public_base_url, token)
    # Store the route first: the DAM may deliver (or we may ping) before create even returns.
    pending_id = PENDING + token
    await inbox.add_route(token, pending_id, secret_key, created_by)
    try:
        configuration_id = await widen.create_webhook(event_type, url, secret_key=secret_key)
    except BaseException as exc:
        # Unless the DAM may have made the configuration anyway (then its deliveries must still be taken,
        # and `keep_settling` finds out later): an unreadable 2xx, a 5xx, a timeout, a stop meanwhile.
        if not may_have_acted(exc):
            await inbox.forget_route(pending_id)
        raise
    await inbox.add_route(token, configuration_id, secret_key, created_by)
    return CreatedConfiguration(configuration_id, url)


# A create's DAM call is over within a minute, answered or not; a route still pending after this is one
# whose answer was lost.
PENDING_GRACE_SECONDS = 600.0
SETTLE_EVERY_SECONDS = 3600.0


@dataclass(frozen=True)
class Settled:
    confirmed: int
    forgotten: int


def route_token(url: str | None) -> str | None:
    """The token of a `/webhooks/widen/{token}` delivery URL (whatever the host), else None."""
    path = urlsplit(url or "").path.rstrip("/")
    head, _, token = path.rpartition("/")
    return token if head.endswith("/webhooks/widen") and token else None


async def settle_pending_routes(widen: WidenClient, inbox: Inbox, *, grace: float = PENDING_GRACE_SECONDS) -> Settled:
    """Routes of creates the DAM never confirmed: if the DAM has a configuration delivering to the route's
    URL, the route is confirmed with its id (so its deliveries keep coming in); if it has none, nothing
    will ever deliver there, and the route and its secret are forgotten."""
    pending = await inbox.pending_routes(made_before=time.time() - grace)
    if not pending:
        return Settled(0, 0)
    made = await _configurations_by_token(widen)
    if any(route.token not in made for route in pending):
        # Forgetting cannot be undone: look twice. A configuration deleted while the first listing was
        # paged shifts the pages, and one of them could be missed.
        made = await _configurations_by_token(widen) | made
    confirmed = forgotten = 0
    for route in pending:
        configuration_id = made.get(route.token)
        if configuration_id is None:
            forgotten += await inbox.forget_route(route.configuration_id)
            log.info("the DAM never made the configuration of an unanswered create: its route is forgotten")
            continue
        try:
            confirmed += await inbox.confirm_route(route.token, configuration_id)
        except sqlite3.IntegrityError:  # its URL was edited to this one: it has a route of its own already
            log.warning("configuration %s delivers to an unconfirmed URL but has its own already; left pending",
                        configuration_id)
            continue
        log.info("the DAM did make configuration %s after an unanswered create: its route is kept", configuration_id)
    return Settled(confirmed, forgotten)


async def _configurations_by_token(widen: WidenClient) -> dict[str, str]:
    """Configuration id by the token of its `/webhooks/widen/{token}` delivery URL."""
    found: dict[str, str] = {}
    for configuration in await widen.all_webhooks():
        token = route_token(configuration.delivery_url)
        if token is not None:
            found[token] = configuration.id
    return found


async def keep_settling(widen: WidenClient, inbox: Inbox) -> None:
    """At start, then every hour. A DAM that cannot answer now is asked again next time."""
    while True:
        try:
            await settle_pending_routes(widen, inbox)
        except Exception as exc:
            log.warning("checking unconfirmed webhook configurations failed (%s); trying again in an hour", exc)
        await asyncio.sleep(SETTLE_EVERY_SECONDS)
