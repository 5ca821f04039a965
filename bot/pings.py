"""Ping round trips: `/widen ping` asks the DAM for a ping and waits for it to come back here.

The wait is registered before the DAM is asked, because the DAM may deliver before its answer to the
ping call arrives. The worker calls `on_ping` for every ping delivery it processes; the oldest wait for
that configuration is the one it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass, field

from widen.models import WebhookEvent


@dataclass
class PendingPing:
    configuration_id: str
    started: float = field(default_factory=time.monotonic)
    arrived: asyncio.Future[float] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


@dataclass(frozen=True)
class RoundTrip:
    seconds: float
    at: float  # epoch seconds


class PingTracker:
    def __init__(self) -> None:
        self._waiting: dict[str, deque[PendingPing]] = {}
        # The last measured round trip per configuration, shown on its card.
        self.last: dict[str, RoundTrip] = {}

    def expect(self, configuration_id: str) -> PendingPing:
        pending = PendingPing(configuration_id)
        self._waiting.setdefault(configuration_id, deque()).append(pending)
        return pending

    def forget(self, pending: PendingPing) -> None:
        queue = self._waiting.get(pending.configuration_id)
        if queue is not None:
            with contextlib.suppress(ValueError):
                queue.remove(pending)
            if not queue:
                del self._waiting[pending.configuration_id]
        if not pending.arrived.done():
            pending.arrived.cancel()

    async def wait(self, pending: PendingPing, timeout: float) -> float | None:
        """Seconds from asking to arrival, or None if nothing arrived within `timeout`."""
        try:
            return await asyncio.wait_for(asyncio.shield(pending.arrived), timeout)
        except TimeoutError:
            return None
        finally:
            self.forget(pending)

    async def on_ping(self, event: WebhookEvent) -> None:
        queue = self._waiting.get(event.webhook_configuration_id)
        while queue:
            pending = queue.popleft()
            if not pending.arrived.done():
                seconds = time.monotonic() - pending.started
                self.last[pending.configuration_id] = RoundTrip(seconds, time.time())
                pending.arrived.set_result(seconds)
                break
        if queue is not None and not queue:
            self._waiting.pop(event.webhook_configuration_id, None)
