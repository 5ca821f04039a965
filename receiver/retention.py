"""Forgetting posted deliveries after RETENTION_DAYS, so that the store does not grow for ever.

A posted delivery is kept a while so that a redelivery of it is answered as a duplicate; after
RETENTION_DAYS it is deleted, a few hundred rows at a time so that the event loop is never held for
long. Parked deliveries (waiting for an admin) and unposted ones are never deleted here.
"""

from __future__ import annotations

import asyncio
import logging
import time

from receiver.inbox import Inbox

log = logging.getLogger(__name__)

EVERY_SECONDS = 3600.0


async def forget_old_posts(inbox: Inbox, retention_days: float) -> int:
    """Delete the posted deliveries older than `retention_days`. Returns how many."""
    before = time.time() - retention_days * 86400
    total = 0
    while deleted := await inbox.forget_posted(before):
        total += deleted
        await asyncio.sleep(0.05)  # let deliveries in between the batches
    if total:
        log.info("forgot %d posted deliveries older than %g days (RETENTION_DAYS)", total, retention_days)
    return total


async def keep_forgetting(inbox: Inbox, retention_days: float) -> None:
    """At start, then every hour."""
    while True:
        try:
            await forget_old_posts(inbox, retention_days)
        except Exception:  # a store that fails now may work next time; nothing is lost meanwhile
            log.exception("forgetting old posted deliveries failed; trying again in an hour")
        await asyncio.sleep(EVERY_SECONDS)
