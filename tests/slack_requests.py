"""Driving the real server the way Slack does: signed slash commands and button presses, and reading the
answers the bot posts to the local Slack's response URLs."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import httpx

from bot.slack_requests import block_actions_body, post_signed, slash_command_body
from receiver.sandbox_run import CHANNEL, SIGNING_SECRET, Stack
from tests.conftest import eventually

ADMIN = "U0ADMIN"
MEMBER = "U0MEMBER"


@dataclass
class Sent:
    """One request as Slack sent it: the server's HTTP answer, how long it took, where answers go."""

    response: httpx.Response
    seconds: float
    response_url: str

    @property
    def key(self) -> str:
        return self.response_url.rsplit("/", 1)[1]


async def slash(
    stack: Stack,
    http: httpx.AsyncClient,
    text: str,
    *,
    user: str = ADMIN,
    secret: str = SIGNING_SECRET,
    timestamp: int | None = None,
) -> Sent:
    url = stack.slack.new_response_url()
    body = slash_command_body(text, user_id=user, response_url=url, channel_id=CHANNEL)
    started = time.monotonic()
    response = await post_signed(http, "/slack/events", body, secret, timestamp=timestamp)
    return Sent(response, time.monotonic() - started, url)


async def press(stack: Stack, http: httpx.AsyncClient, action_id: str, value: str, *, user: str = ADMIN) -> Sent:
    url = stack.slack.new_response_url()
    body = block_actions_body(action_id, value, user_id=user, response_url=url, channel_id=CHANNEL)
    started = time.monotonic()
    response = await post_signed(http, "/slack/events", body, SIGNING_SECRET)
    return Sent(response, time.monotonic() - started, url)


def answers(stack: Stack, sent: Sent) -> list[dict[str, Any]]:
    return stack.slack.responses[sent.key]


async def answer(stack: Stack, sent: Sent, number: int = 1, timeout: float = 10.0) -> dict[str, Any]:
    """The `number`-th answer (1-based) posted to the request's response URL, waiting for it."""
    assert sent.response.status_code == 200, sent.response.text
    found = await eventually(lambda: len(answers(stack, sent)) >= number, timeout=timeout)
    assert found
    return answers(stack, sent)[number - 1]


async def run(stack: Stack, http: httpx.AsyncClient, text: str, *, user: str = ADMIN) -> dict[str, Any]:
    """`/widen <text>` and its first answer."""
    return await answer(stack, await slash(stack, http, text, user=user))


def shown(message: dict[str, Any]) -> str:
    """Every text of an answer, as one string for assertions."""
    return json.dumps(message.get("blocks") or [], ensure_ascii=False) + "\n" + str(message.get("text", ""))


def buttons(message: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The answer's buttons by action id."""
    found = {}
    for block in message.get("blocks") or []:
        for element in block.get("elements") or []:
            if element.get("type") == "button":
                found[element["action_id"]] = element
    return found
