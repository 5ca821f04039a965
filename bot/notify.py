"""Posting to Slack: per-channel pacing, retries, the crash check, threads.

Slack allows about one message per second per channel with short bursts. Each channel gets a token
bucket so 429s stay rare; when one comes anyway, the channel waits out `Retry-After`. Network errors
and 5xx are retried with tenacity; what is left is raised as a typed error for the worker to decide.

A post whose answer is lost (5xx, timeout, a dropped connection) may have been made all the same: before
it is sent again, the channel (or the thread) is searched for our message carrying the same metadata,
so a lost answer never makes a second message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

log = logging.getLogger(__name__)

# Our own Slack message metadata type: the inbox rows a message covers, so a restart can tell
# whether a delivery already reached the channel.
METADATA_EVENT_TYPE = "widen_bot_delivery"


class SlackError(Exception):
    """Slack refused the message for a reason retrying will not fix by itself."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


class InvalidBlocks(SlackError):
    def __init__(self, details: list[str]) -> None:
        super().__init__("invalid_blocks")
        self.details = details

    @property
    def about_images(self) -> bool:
        return any("image" in d for d in self.details) or not self.details


class SlackUnavailable(Exception):
    """Slack answered 5xx, 429 for too long, or could not be reached. `maybe_posted`: a message may have
    been posted all the same (an answer was lost, and the channel could not be searched for it)."""

    def __init__(self, reason: str, *, maybe_posted: bool = False) -> None:
        super().__init__(reason)
        self.maybe_posted = maybe_posted


class _Retryable(Exception):
    def __init__(self, reason: str, wait: float | None = None, *, maybe_done: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.wait = wait
        self.maybe_done = maybe_done  # the call reached Slack and its answer was lost: it may have acted


class ChannelPacer:
    """Token bucket per channel; a 429 pauses that channel until Retry-After has passed."""

    def __init__(self, rate: float = 1.0, burst: int = 3) -> None:
        self.rate = rate
        self.burst = burst
        self._state: dict[str, tuple[float, float]] = {}  # channel -> (tokens, updated_at)
        self._paused_until: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def wait_turn(self, channel: str) -> None:
        async with self._locks.setdefault(channel, asyncio.Lock()):
            while True:
                now = time.monotonic()
                pause = self._paused_until.get(channel, 0.0) - now
                if pause > 0:
                    await asyncio.sleep(pause)
                    continue
                tokens, updated = self._state.get(channel, (float(self.burst), now))
                tokens = min(float(self.burst), tokens + (now - updated) * self.rate)
                if tokens >= 1.0:
                    self._state[channel] = (tokens - 1.0, now)
                    return
                self._state[channel] = (tokens, now)
                await asyncio.sleep((1.0 - tokens) / self.rate)

    def pause(self, channel: str, seconds: float) -> None:
        until = time.monotonic() + seconds
        self._paused_until[channel] = max(self._paused_until.get(channel, 0.0), until)
        self._state[channel] = (0.0, until)


class Notifier:
    def __init__(
        self,
        client: AsyncWebClient,
        *,
        pacer: ChannelPacer | None = None,
        attempts: int = 5,
        max_wait: float = 30.0,
        on_call: Callable[[str, str], None] | None = None,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self.pacer = pacer or ChannelPacer()
        self.attempts = attempts
        self.max_wait = max_wait
        self._on_call = on_call or (lambda method, outcome: None)
        self._on_retry = on_retry or (lambda reason: None)

    async def post(
        self,
        channel: str,
        message: dict[str, Any],
        *,
        covers: dict[str, Any] | None = None,
        thread_ts: str | None = None,
    ) -> str:
        """Post a message; returns its ts. `covers` (see `coverage`) becomes its metadata."""
        kwargs: dict[str, Any] = {"channel": channel, "text": message.get("text", ""),
                                  "unfurl_links": False, "unfurl_media": False}
        if message.get("blocks"):
            kwargs["blocks"] = message["blocks"]
        if thread_ts:
            kwargs["thread_ts"] = thread_ts
        already_posted = None
        if covers:
            kwargs["metadata"] = {"event_type": METADATA_EVENT_TYPE, "event_payload": covers}
            since = time.time() - 60  # Slack's clock and ours may differ a little
            already_posted = partial(self._posted_ts, channel, covers, thread_ts, since)
        data = await self._call("chat.postMessage", channel, kwargs, already_done=already_posted)
        if not isinstance(data.get("ts"), str):
            raise SlackError("no_ts")  # an answer that says ok but names no message: not trusted
        return data["ts"]

    async def _posted_ts(self, channel: str, covers: dict[str, Any], thread_ts: str | None,
                         since: float) -> dict[str, Any] | None:
        """Our message that carries exactly `covers`, posted since `since` (in the thread, for a reply),
        as chat.postMessage would have answered: after a lost answer, it tells whether the post was made."""
        if thread_ts:
            messages = self._pages("conversations.replies", {"channel": channel, "ts": thread_ts})
        else:
            messages = self._pages("conversations.history", {"channel": channel, "oldest": f"{since:.6f}"})
        async for message in messages:
            if _ours(message, str(covers["inbox"])) and (message["metadata"].get("event_payload") or {}).get(
                "rows"
            ) == covers["rows"]:
                return {"ok": True, "channel": channel, "ts": message.get("ts")}
        return None

    async def rows_already_posted(self, channel: str, inbox_id: str, since: float) -> set[int]:
        """Rows of this inbox named in our own messages in the channel since `since` (epoch seconds),
        digest threads included."""
        found: set[int] = set()
        threads: list[str] = []
        async for message in self._pages("conversations.history", {"channel": channel, "oldest": f"{since:.6f}"}):
            if _ours(message, inbox_id):
                found.update(_rows(message))
                if message.get("reply_count"):
                    threads.append(str(message["ts"]))
        for ts in threads:
            async for message in self._pages("conversations.replies", {"channel": channel, "ts": ts}):
                if _ours(message, inbox_id):
                    found.update(_rows(message))
        return found

    async def _pages(self, method: str, params: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        cursor: str | None = None
        while True:
            kwargs = {**params, "limit": 200, "include_all_metadata": True}
            if cursor:
                kwargs["cursor"] = cursor
            data = await self._call(method, None, kwargs)
            for message in data.get("messages") or []:
                if isinstance(message, dict):
                    yield message
            cursor = (data.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor or not data.get("has_more", True):
                return

    async def _call(
        self,
        method: str,
        channel: str | None,
        kwargs: dict[str, Any],
        *,
        already_done: Callable[[], Awaitable[dict[str, Any] | None]] | None = None,
    ) -> dict[str, Any]:
        """Call with retries. `already_done`, for a call that must not act twice: after an answer was lost,
        it is asked before the next attempt, and what it finds is the answer."""
        maybe_done = False
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(_Retryable),
                stop=stop_after_attempt(self.attempts),
                wait=self._wait,
                reraise=True,
            ):
                with attempt:
                    if maybe_done and already_done is not None:
                        found = await self._look(already_done)
                        if found is not None:
                            return found
                        maybe_done = False  # it was not done: sending again is safe
                    if channel is not None:
                        await self.pacer.wait_turn(channel)
                    try:
                        return await self._call_once(method, channel, kwargs)
                    except _Retryable as exc:
                        maybe_done = maybe_done or exc.maybe_done
                        raise
        except _Retryable as exc:
            raise SlackUnavailable(f"{method}: {exc.reason}", maybe_posted=maybe_done) from None
        except SlackUnavailable as exc:  # the search after a lost answer failed: it may have been done
            raise SlackUnavailable(f"{method}: answer lost, then {exc}", maybe_posted=True) from None
        raise AssertionError("unreachable")

    @staticmethod
    async def _look(already_done: Callable[[], Awaitable[dict[str, Any] | None]]) -> dict[str, Any] | None:
        try:
            return await already_done()
        except SlackError as exc:  # e.g. the thread is not found yet: we cannot tell, so it may be done
            raise SlackUnavailable(f"search: {exc.error}") from None

    def _wait(self, retry_state: Any) -> float:
        exc = retry_state.outcome.exception()
        if isinstance(exc, _Retryable) and exc.wait is not None:
            return min(exc.wait, self.max_wait)
        return float(wait_exponential_jitter(initial=0.5, max=self.max_wait)(retry_state))

    async def _call_once(self, method: str, channel: str | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        try:
            if method == "chat.postMessage":
                response = await self.client.chat_postMessage(**kwargs)
            else:
                response = await self.client.api_call(method, http_verb="GET", params=kwargs)
        except SlackApiError as exc:
            status = exc.response.status_code
            data = exc.response.data if isinstance(exc.response.data, dict) else {}
            error = str(data.get("error") or f"http_{status}")
            if status == 429 or error == "ratelimited":
                wait = _retry_after(exc.response.headers)
                if channel is not None:
                    self.pacer.pause(channel, wait)
                self._on_call(method, "rate_limited")
                self._on_retry("slack_429")
                raise _Retryable("rate limited", wait) from None
            if status >= 500 or error in ("internal_error", "fatal_error", "service_unavailable",
                                          "request_timeout"):
                self._on_call(method, "unavailable")
                self._on_retry("slack_5xx")
                raise _Retryable(error, maybe_done=True) from None
            self._on_call(method, error)
            if error == "invalid_blocks":
                raise InvalidBlocks([str(e) for e in data.get("errors", [])]) from None
            raise SlackError(error) from None
        except (TimeoutError, OSError, aiohttp.ClientError) as exc:
            self._on_call(method, "unavailable")
            self._on_retry("slack_network")
            # Only a connection that was never made surely did nothing.
            raise _Retryable(type(exc).__name__, maybe_done=not isinstance(exc, aiohttp.ClientConnectorError)) from None
        self._on_call(method, "ok")
        return dict(response.data) if isinstance(response.data, dict) else {}


def _retry_after(headers: Any) -> float:
    try:
        return max(0.0, float(headers.get("Retry-After", "1")))
    except (TypeError, ValueError):
        return 1.0


def _ours(message: dict[str, Any], inbox_id: str) -> bool:
    metadata = message.get("metadata") or {}
    return metadata.get("event_type") == METADATA_EVENT_TYPE and (metadata.get("event_payload") or {}).get(
        "inbox"
    ) == inbox_id


def _rows(message: dict[str, Any]) -> set[int]:
    return decode_rows(str((message["metadata"].get("event_payload") or {}).get("rows", "")))


def coverage(inbox_id: str, rows: list[int], delivery_ids: list[str]) -> dict[str, Any]:
    """Metadata payload naming what a message covers: inbox rows (compact) and, for short lists, the
    DAM's delivery ids (a digest may cover a thousand deliveries; metadata must stay small)."""
    payload: dict[str, Any] = {"inbox": inbox_id, "rows": encode_rows(rows)}
    if len(delivery_ids) <= 20:
        payload["delivery_ids"] = delivery_ids
    return payload


def encode_rows(rows: list[int]) -> str:
    """Compact ranges: [1,2,3,7] -> "1-3,7" (a digest may cover a thousand rows)."""
    parts: list[str] = []
    ordered = sorted(set(rows))
    start = prev = ordered[0] if ordered else 0
    for row in ordered[1:] + [None]:  # type: ignore[list-item]
        if row is not None and row == prev + 1:
            prev = row
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if row is not None:
            start = prev = row
    return ",".join(parts) if ordered else ""


def decode_rows(text: str) -> set[int]:
    rows: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        try:
            lo = int(first)
            hi = int(last) if last else lo
        except ValueError:
            continue
        if 0 <= hi - lo <= 100_000:
            rows.update(range(lo, hi + 1))
    return rows
