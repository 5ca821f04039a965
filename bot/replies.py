"""Answers through a command's or a button's `response_url` (Slack keeps one valid for 30 minutes).

Answers go there rather than through chat.postEphemeral because a response URL works in every
conversation the command was typed in, even one the bot is not a member of.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk.webhook.async_client import AsyncWebhookClient

log = logging.getLogger(__name__)


class Replies:
    def __init__(self, *, timeout: int = 10) -> None:
        self.timeout = timeout

    async def send(self, response_url: str, message: dict[str, Any], *, replace_original: bool = False) -> bool:
        """Posts an ephemeral answer; False (logged) if Slack did not take it."""
        if not response_url:
            log.warning("no response_url to answer on")
            return False
        body = {"response_type": "ephemeral", "replace_original": replace_original, **message}
        try:
            response = await AsyncWebhookClient(response_url, timeout=self.timeout).send_dict(body)
        except Exception as exc:  # network errors of every kind: the person simply gets no answer
            log.warning("answering on the response_url failed: %s", type(exc).__name__)
            return False
        if response.status_code != 200:
            log.warning("the response_url refused the answer: %s %s", response.status_code, response.body[:200])
            return False
        return True
