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
from dataclasses import dataclass
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

    # ---- stage 1: claim and fetch ---------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._claim_some()
            except Exception:  # a store that fails now may work in a moment: keep trying, say so
                log.exception("claiming deliveries failed; trying again in 1 s")
                await asyncio.sleep(1)

    async def _claim_some(self) -> None:
        """Claim what fits in the free fetch slots, or wait for a slot or for new work."""
        self.inbox.new_work.clear()
        free = self.concurrency - len(self._fetching)
        if free < max(1, self.concurrency // 4):
            # Few free slots: claim in larger batches, when fetches finish (each sets new_work).
            await self.inbox.new_work.wait()
            return
        batch = await self.inbox.claim(free)
        for delivery in batch:
            self._claimed.add(delivery.row_id)
            task = asyncio.create_task(self._fetch(delivery))
            self._fetching.add(task)
            task.add_done_callback(self._fetch_done)
        if batch and len(batch) == free:
            return
        due = await self.inbox.next_due_in()
        timeout = 5.0 if due is None else min(max(due, 0.01), 5.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.inbox.new_work.wait(), timeout)

    def _fetch_done(self, task: asyncio.Task[None]) -> None:
        self._fetching.discard(task)
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
        except Exception:
            log.exception("preparing delivery %s failed", delivery.delivery_id, extra=_ids(delivery))
            await self._give_back(delivery, "internal error while preparing")
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
            try:
                waiting = await self._post_some(waiting)
            except Exception:  # posts are guarded; this is the last line of defence for the loop itself
                log.exception("the poster failed; the deliveries it held are retried later")
                for item in waiting:
                    await self._give_back(item.delivery, "internal error while posting")
                waiting = []
                await asyncio.sleep(1)

    async def _post_some(self, waiting: list[Ready]) -> list[Ready]:
        fresh = [] if waiting else [await self.outbox.get()]
        while not self.outbox.empty():
            fresh.append(self.outbox.get_nowait())
        for item in await self._skip_already_posted(fresh):
            self.bursts.arrived(item)
            waiting.append(item)
        if not waiting:
            return waiting
        if self.bursts.in_burst():
            for item in [i for i in waiting if not i.is_asset_event]:
                await self._post_card(item)
            await self._wait_for_digest([i for i in waiting if i.is_asset_event])
            return []
        # One card at a time, then look again: while Slack's pace holds this card back, more may
        # arrive and turn out to be a burst.
        await self._post_card(waiting.pop(0))
        return waiting

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
        except Exception as exc:  # Slack errors, and odd answers: look again later
            log.warning("could not read the channel's history: %s", exc)
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
        await self._guarded([item], self._post_card_unguarded(item))

    async def _post_digest(self, items: list[Ready]) -> None:
        await self._guarded(items, self._post_digest_unguarded(items))

    async def _guarded(self, items: list[Ready], posting: Awaitable[None]) -> None:
        """A bug, an odd answer from Slack or a broken store must not lose the items or stop the poster:
        what is not finished is given back, to be tried again."""
        try:
            await posting
        except Exception:
            log.exception("posting failed; the deliveries involved are retried later")
            for item in items:
                if item.delivery.row_id in self._claimed:
                    await self._give_back(item.delivery, "internal error while posting")

    async def _post_card_unguarded(self, item: Ready) -> None:
        message = self._render(item)
        covers = self._covers([item])
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

    async def _post_digest_unguarded(self, items: list[Ready]) -> None:
        digest = digest_messages(
            [(item.event, item.asset) for item in items],
            now=datetime.now(UTC),
            expiry_warning_days=self.settings.expiry_warning_days,
            asset_url_template=self.settings.widen_asset_url_template,
        )
        await self.inbox.mark_posting([item.delivery.row_id for item in items])
        # Each message covers (in its metadata, and in the store once Slack has it) exactly the assets it
        # names: the digest its first 20, each thread reply the rest of its part of the list. A crash or
        # a stop between two of them leaves the others to be found in the thread or posted again.
        in_root = [items[i] for i in digest.root_names]
        try:
            ts = await self.notifier.post(self.channel, digest.root, covers=self._covers(in_root))
        except (SlackError, SlackUnavailable) as exc:
            await self._slack_failed(items, exc)
            return
        await self._finish(in_root, ts)
        named = set(digest.root_names)
        for reply, names in digest.replies:
            part = [items[i] for i in names if i not in named]
            named.update(names)
            try:
                await self.notifier.post(self.channel, reply, covers=self._covers(part), thread_ts=ts)
            except (SlackError, SlackUnavailable) as exc:
                await self._slack_failed(part, exc)  # announced later, on their own or in another digest
                continue
            await self._finish(part, ts)

    def _covers(self, items: list[Ready]) -> dict[str, Any] | None:
        if not items:
            return None
        rows = [i.delivery.row_id for i in items]
        return coverage(self.inbox.inbox_id, rows, [i.delivery.delivery_id for i in items])

    def _render(self, item: Ready) -> dict[str, Any]:
        try:
            return self._render_message(item)
        except Exception:  # whatever the DAM sent, the event is still announced
            log.exception("could not render delivery %s; posting it plainly", item.delivery.delivery_id,
                          extra=_ids(item.delivery))
            return blocks.plain_message(item.event)

    def _render_message(self, item: Ready) -> dict[str, Any]:
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
        maybe_posted = isinstance(exc, SlackUnavailable) and exc.maybe_posted
        for item in items:
            await self._retry(item.delivery, f"Slack: {exc}", maybe_posted=maybe_posted)

    # ---- outcomes -------------------------------------------------------------------------------

    async def _finish(self, items: list[Ready], ts: str | None) -> None:
        await self.inbox.finish([i.delivery.row_id for i in items], channel=self.channel, ts=ts)
        for item in items:
            self._claimed.discard(item.delivery.row_id)
            self.observe("posted", item.delivery, time.time() - item.delivery.received_at)

    async def _retry(self, delivery: Delivery, error: str, *, maybe_posted: bool = False) -> None:
        too_old = time.time() - delivery.received_at > self.settings.max_age_hours * 3600
        if delivery.attempts >= self.settings.max_attempts or too_old:
            await self._park(delivery, error, maybe_posted=maybe_posted)
            return
        delay = min(600.0, 2.0 ** (delivery.attempts - 1)) * random.uniform(0.8, 1.2)
        await self.inbox.retry_later(delivery.row_id, error, delay, maybe_posted=maybe_posted)
        self._claimed.discard(delivery.row_id)
        self.observe("retry", delivery, time.time() - delivery.received_at)

    async def _give_back(self, delivery: Delivery, error: str) -> None:
        """After an unexpected error: retry later if the store lets us; else leave the row claimed in the
        store, where the next start finds it."""
        try:
            await self._retry(delivery, error)
        except Exception:
            log.exception("could not record the failure of delivery %s", delivery.delivery_id)
            self._claimed.discard(delivery.row_id)

    async def _park(self, delivery: Delivery, error: str, *, maybe_posted: bool = False) -> None:
        log.error("parking delivery %s after %d attempts: %s", delivery.delivery_id, delivery.attempts, error,
                  extra=_ids(delivery))
        await self.inbox.park(delivery.row_id, error, maybe_posted=maybe_posted)
        self._claimed.discard(delivery.row_id)
        self.observe("parked", delivery, time.time() - delivery.received_at)


def _ids(delivery: Delivery) -> dict[str, Any]:
    return {"delivery_id": delivery.delivery_id, "configuration_id": delivery.configuration_id,
            "asset_id": delivery.asset_id}
