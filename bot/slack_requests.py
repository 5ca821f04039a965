"""Requests as Slack sends them to the bot: signed slash commands and button presses.

The sandbox and the tests drive the real server with these, byte for byte the way Slack does: form
bodies, `X-Slack-Request-Timestamp`, and `X-Slack-Signature` computed by slack_sdk's own verifier.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any
from urllib.parse import urlencode

import httpx
from slack_sdk.signature import SignatureVerifier

from bot.sandbox import TEAM_ID

FORM = "application/x-www-form-urlencoded"


def signed_headers(body: str, signing_secret: str, *, timestamp: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(signing_secret).generate_signature(timestamp=stamp, body=body)
    assert signature is not None
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": signature, "Content-Type": FORM}


def slash_command_body(
    text: str, *, user_id: str, response_url: str, channel_id: str, command: str = "/widen"
) -> str:
    return urlencode(
        {
            "token": "legacy-verification-token",  # Slack still sends it; Bolt relies on the signature
            "team_id": TEAM_ID,
            "team_domain": "sandbox",
            "channel_id": channel_id,
            "channel_name": "widen-alerts",
            "user_id": user_id,
            "user_name": user_id.lower(),
            "command": command,
            "text": text,
            "api_app_id": "A0WIDENBOT",
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": f"{int(time.time())}.{secrets.randbelow(10**9)}.{secrets.token_hex(8)}",
        }
    )


def block_actions_body(
    action_id: str, value: str, *, user_id: str, response_url: str, channel_id: str
) -> str:
    """A button press on an ephemeral message, as `payload=<json>`."""
    now = f"{time.time():.6f}"
    payload: dict[str, Any] = {
        "type": "block_actions",
        "team": {"id": TEAM_ID, "domain": "sandbox"},
        "user": {"id": user_id, "username": user_id.lower(), "name": user_id.lower(), "team_id": TEAM_ID},
        "api_app_id": "A0WIDENBOT",
        "token": "legacy-verification-token",
        "container": {"type": "message", "message_ts": now, "channel_id": channel_id, "is_ephemeral": True},
        "trigger_id": f"{int(time.time())}.{secrets.randbelow(10**9)}.{secrets.token_hex(8)}",
        "channel": {"id": channel_id, "name": "widen-alerts"},
        "response_url": response_url,
        "actions": [
            {
                "type": "button",
                "action_id": action_id,
                "block_id": "widen",
                "value": value,
                "text": {"type": "plain_text", "text": action_id, "emoji": True},
                "action_ts": now,
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)})


async def post_signed(
    client: httpx.AsyncClient, url: str, body: str, signing_secret: str, *, timestamp: int | None = None
) -> httpx.Response:
    return await client.post(url, content=body, headers=signed_headers(body, signing_secret, timestamp=timestamp))
