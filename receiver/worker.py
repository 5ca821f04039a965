"""Drains the inbox: fetch the asset, render, post.

Two stages joined by an in-memory outbox. Fetchers claim due deliveries and fetch their assets from the
DAM (concurrently, under the client's shared rate limit). The poster takes what is ready and posts it to
the channel, paced; in a burst it folds many asset events into one digest (`receiver.bursts`, `bot.digest`). The
inbox stays the source of truth: a row is `posted` only after Slack accepted the message that covers it,
and anything in memory at a crash is still `claimed` on disk and recovered at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bot import blocks
from bot.digest import digest_messages
from bot.notify import InvalidBlocks, Notifier, SlackError, SlackUnavailable, coverage
from receiver.bursts import BurstDetector
from receiver.inbox import Delivery, Inbox
from receiver.settings import Settings
from widen.client import NotFound, RateLimited, Unauthorized, Unavailable, WidenClient, WidenError
from widen.models import ASSET_EVENT_TYPES, PING, Asset, WebhookConfiguration, WebhookEvent

log = logging.getLogger(__name__)

# A burst is over when nothing is being fetched and nothing arrived for this long.
QUIET_SECONDS = 0.3


@dataclass
class Ready:
    """A delivery whose asset has been fetched, waiting to be posted."""

    delivery: Delivery
    event: WebhookEvent
    asset: Asset | None
    configuration: WebhookConfiguration | None = None
    ready_at: float = field(default_factory=time.monotonic)

    @property
    def is_asset_event(self) -> bool:
        return self.event.event_type in ASSET_EVENT_TYPES


class Worker:
    def __init__(
        self,
        inbox: Inbox,
        widen: WidenClient,
        notifier: Notifier,
        settings: Settings,
        *,
        concurrency: int = 16,
        on_ping: Callable[[WebhookEvent], Awaitable[None]] | None = None,
        observe: Callable[[str, Delivery, float], None] | None = None,
    ) -> None:
        self.inbox = inbox
        self.widen = widen
        self.notifier = notifier
        self.settings = settings
        self.channel = settings.slack_channel or ""
        self.concurrency = concurrency
        self.on_ping = on_ping
        # Called with (outcome, delivery, seconds since received) when a delivery leaves the pipeline.
        self.observe = observe or (lambda outcome, delivery, age: None)
        # Bounded: when Slack is slow or down, fetching pauses instead of holding every asset in memory.
        self.outbox: asyncio.Queue[Ready] = asyncio.Queue(maxsize=4 * concurrency)
        self.bursts = BurstDetector(settings.digest_threshold, settings.digest_window_seconds)
        self._claimed: set[int] = set()
        self._fetching: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(concurrency)
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # ---- life -----------------------------------------------------------------------------------

    async def start(self) -> None:
        recovered = await self.inbox.recover()
        if recovered:
            log.warning("recovered %d deliveries left in flight by an earlier run", recovered)
        self.inbox.new_work.set()
        self._tasks = [asyncio.create_task(self._claim_loop()), asyncio.create_task(self._post_loop())]

    async def stop(self, timeout: float) -> None:
        """Stop claiming; let in-flight work finish for up to `timeout` s; give back the rest."""
        self._stopping.set()
        self.inbox.new_work.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drain(), timeout)
        for task in [*self._tasks, *self._fetching]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._fetching, return_exceptions=True)
        if self._claimed:
            log.info("releasing %d unfinished deliveries for the next start", len(self._claimed))
            await self.inbox.release(self._claimed)
            self._claimed.clear()

    async def _drain(self) -> None:
        while self._claimed:
            await asyncio.sleep(0.05)

    def idle(self) -> bool:
        return not self._claimed

    # ---- stage 1: claim and fetch ---------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while not self._stopping.is_set():
            self.inbox.new_work.clear()
            free = self.concurrency - len(self._fetching)
            if free < max(1, self.concurrency // 4):
                # Few free slots: claim in larger batches, when fetches finish (each sets new_work).
                await self.inbox.new_work.wait()
                continue
            batch = await self.inbox.claim(free)
            for delivery in batch:
                self._claimed.add(delivery.row_id)
                await self._slots.acquire()
                task = asyncio.create_task(self._fetch(delivery))
                self._fetching.add(task)
                task.add_done_callback(self._fetch_done)
            if batch and len(batch) == free:
                continue
            due = await self.inbox.next_due_in()
            timeout = 5.0 if due is None else min(max(due, 0.01), 5.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.inbox.new_work.wait(), timeout)

    def _fetch_done(self, task: asyncio.Task[None]) -> None:
        self._fetching.discard(task)
        self._slots.release()
        self.inbox.new_work.set()  # a slot is free: claim more

    async def _fetch(self, delivery: Delivery) -> None:
        try:
            event = WebhookEvent.model_validate(json.loads(delivery.body))
        except ValueError as exc:  # accepted bodies were validated; this is a safety net
            await self._park(delivery, f"unreadable delivery: {exc}")
            return
        try:
            ready = await self._prepare(delivery, event)
        except Unauthorized as exc:
            log.error("the DAM refused WIDEN_API_TOKEN (%s); delivery %s stays pending", exc.status,
                      delivery.delivery_id, extra=_ids(delivery))
            await self._retry(delivery, f"DAM unauthorized ({exc.status}): check WIDEN_API_TOKEN")
            return
        except (RateLimited, Unavailable, WidenError) as exc:
            log.warning("DAM call failed for delivery %s: %s", delivery.delivery_id, exc, extra=_ids(delivery))
            await self._retry(delivery, f"DAM: {exc}")
            return
        await self.outbox.put(ready)

    async def _prepare(self, delivery: Delivery, event: WebhookEvent) -> Ready:
        if event.event_type == PING:
            configuration = None
            with contextlib.suppress(WidenError):
                configuration = await self.widen.get_webhook(event.webhook_configuration_id)
            if self.on_ping is not None:
                await self.on_ping(event)
            return Ready(delivery, event, None, configuration)
        asset = None
        if event.event_type in ASSET_EVENT_TYPES and event.asset_id:
            try:
                asset = await self.widen.get_asset(event.asset_id)
            except NotFound:
                asset = None  # deleted since: the message says it is no longer available
        return Ready(delivery, event, asset)

    # ---- stage 2: post --------------------------------------------------------------------------

    async def _post_loop(self) -> None:
        waiting: list[Ready] = []
        while True:
            fresh = [] if waiting else [await self.outbox.get()]
            while not self.outbox.empty():
                fresh.append(self.outbox.get_nowait())
            for item in await self._skip_already_posted(fresh):
                self.bursts.arrived(item)
                waiting.append(item)
            if not waiting:
                continue
            if self.bursts.in_burst():
                for item in [i for i in waiting if not i.is_asset_event]:
                    await self._post_card(item)
                burst = [i for i in waiting if i.is_asset_event]
                waiting = []
                await self._wait_for_digest(burst)
            else:
                # One card at a time, then look again: while Slack's pace holds this card back, more
                # may arrive and turn out to be a burst.
                await self._post_card(waiting.pop(0))

    async def _wait_for_digest(self, held: list[Ready]) -> None:
        """Gather a burst: keep adding what arrives until the window closes or arrivals stop."""
        deadline = time.monotonic() + self.settings.digest_window_seconds
        while time.monotonic() < deadline:
            try:
                wait = min(QUIET_SECONDS, deadline - time.monotonic())
                item = await asyncio.wait_for(self.outbox.get(), timeout=max(wait, 0.01))
            except TimeoutError:
                if not self._fetching and self.outbox.empty():
                    break  # the burst is over: no reason to keep people waiting
                continue
            for extra in await self._skip_already_posted([item]):
                self.bursts.arrived(extra)
                if extra.is_asset_event:
                    held.append(extra)
                else:  # a ping is never folded into a digest: its round trip is being watched
                    await self._post_card(extra)
        await self._post_digest(held)

    async def _skip_already_posted(self, batch: list[Ready]) -> list[Ready]:
        """A delivery claimed before a crash may already be in the channel: look before posting."""
        suspects = [item for item in batch if item.delivery.maybe_posted]
        if not suspects:
            return batch
        since = min(item.delivery.received_at for item in suspects) - 60
        try:
            posted = await self.notifier.rows_already_posted(self.channel, self.inbox.inbox_id, since)
        except (SlackError, SlackUnavailable) as exc:
            for item in batch:
                await self._retry(item.delivery, f"Slack history: {exc}")
            return []
        keep = []
        for item in batch:
            if item.delivery.row_id in posted:
                log.info("delivery %s was already posted before a restart", item.delivery.delivery_id)
                await self._finish([item], None)
            else:
                keep.append(item)
        return keep

    async def _post_card(self, item: Ready) -> None:
        message = self._render(item)
        covers = coverage(self.inbox.inbox_id, [item.delivery.row_id], [item.delivery.delivery_id])
        await self.inbox.mark_posting([item.delivery.row_id])
        try:
            try:
                ts = await self.notifier.post(self.channel, message, covers=covers)
            except InvalidBlocks as exc:
                if not exc.about_images:
                    raise
                # Slack could not download the thumbnail: the message is still worth posting.
                log.info("Slack refused the thumbnail of %s; posting without it", item.delivery.delivery_id)
                ts = await self.notifier.post(self.channel, blocks.without_images(message), covers=covers)
        except (SlackError, SlackUnavailable) as exc:
            await self._slack_failed([item], exc)
            return
        await self._finish([item], ts)

    async def _post_digest(self, items: list[Ready]) -> None:
        root, replies = digest_messages(
            [(item.event, item.asset) for item in items],
            now=datetime.now(UTC),
            expiry_warning_days=self.settings.expiry_warning_days,
            asset_url_template=self.settings.widen_asset_url_template,
        )
        rows = [item.delivery.row_id for item in items]
        covers = coverage(self.inbox.inbox_id, rows, [item.delivery.delivery_id for item in items])
        await self.inbox.mark_posting(rows)
        try:
            ts = await self.notifier.post(self.channel, root, covers=covers)
        except (SlackError, SlackUnavailable) as exc:
            await self._slack_failed(items, exc)
            return
        # The digest names every asset: they are done, whatever happens to the thread replies.
        await self._finish(items, ts)
        for reply in replies:
            try:
                await self.notifier.post(self.channel, reply, thread_ts=ts)
            except (SlackError, SlackUnavailable) as exc:
                log.warning("a digest reply could not be posted: %s", exc)

    def _render(self, item: Ready) -> dict[str, Any]:
        event = item.event
        if event.event_type == PING:
            return blocks.ping_message(event, item.configuration)
        if event.event_type in ASSET_EVENT_TYPES:
            return blocks.asset_message(
                event,
                item.asset,
                now=datetime.now(UTC),
                expiry_warning_days=self.settings.expiry_warning_days,
                asset_url_template=self.settings.widen_asset_url_template,
            )
        return blocks.generic_message(event)

    async def _slack_failed(self, items: list[Ready], exc: Exception) -> None:
        if isinstance(exc, SlackError) and exc.error in ("invalid_auth", "not_authed", "account_inactive",
                                                          "token_revoked", "channel_not_found", "not_in_channel"):
            log.error("Slack refused the message (%s): check SLACK_BOT_TOKEN and SLACK_CHANNEL", exc.error)
        else:
            log.warning("posting to Slack failed: %s", exc)
        for item in items:
            await self._retry(item.delivery, f"Slack: {exc}")

    # ---- outcomes -------------------------------------------------------------------------------

    async def _finish(self, items: list[Ready], ts: str | None) -> None:
        await self.inbox.finish([i.delivery.row_id for i in items], channel=self.channel, ts=ts)
        for item in items:
            self._claimed.discard(item.delivery.row_id)
            self.observe("posted", item.delivery, time.time() - item.delivery.received_at)

    async def _retry(self, delivery: Delivery, error: str) -> None:
        too_old = time.time() - delivery.received_at > self.settings.max_age_hours * 3600
        if delivery.attempts >= self.settings.max_attempts or too_old:
            await self._park(delivery, error)
            return
        delay = min(600.0, 2.0 ** (delivery.attempts - 1)) * random.uniform(0.8, 1.2)
        await self.inbox.retry_later(delivery.row_id, error, delay)
        self._claimed.discard(delivery.row_id)
        self.observe("retry", delivery, time.time() - delivery.received_at)

    async def _park(self, delivery: Delivery, error: str) -> None:
        log.error("parking delivery %s after %d attempts: %s", delivery.delivery_id, delivery.attempts, error,
                  extra=_ids(delivery))
        await self.inbox.park(delivery.row_id, error)
        self._claimed.discard(delivery.row_id)
        self.observe("parked", delivery, time.time() - delivery.received_at)


def _ids(delivery: Delivery) -> dict[str, Any]:
    return {"delivery_id": delivery.delivery_id, "configuration_id": delivery.configuration_id,
            "asset_id": delivery.asset_id}
