"""Delivery URLs of our own: `/webhooks/widen/{token}`, each with its configuration's secret.

A configuration made through the bot gets an unguessable URL and a generated secret_key, so its
deliveries are authenticated by the URL even if the DAM's signature header turns out to differ.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from receiver.inbox import PENDING, Inbox
from receiver.logs import register_secret
from widen.client import Unavailable, WidenClient


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
        # Unless the DAM may have made the configuration anyway: then its deliveries must still be taken.
        if not (isinstance(exc, Unavailable) and exc.sent):
            await inbox.forget_route(pending_id)
        raise
    await inbox.add_route(token, configuration_id, secret_key, created_by)
    return CreatedConfiguration(configuration_id, url)
