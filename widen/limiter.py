"""Client-side pacing for the DAM API: an async token bucket shared by every request of one client.

The DAM allows 50 requests/s per account (v1 and v2 together) and answers 429 over it. Staying a little
under that on our side avoids most 429s; when one arrives anyway, `pause()` holds every caller until the
server's reset time, so concurrent callers do not keep hammering a limit that is already spent.
"""

from __future__ import annotations

import asyncio
import time


class RateLimiter:
    """At most `rate` acquisitions per second on average, with bursts of at most `burst`."""

    def __init__(self, rate: float, burst: int | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        # A small burst: any one-second window then sees at most rate + burst requests.
        self.burst = burst if burst is not None else max(1, int(rate // 20))
        self._tokens = float(self.burst)
        self._updated = time.monotonic()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    def pause(self, seconds: float) -> None:
        """Hold every caller for `seconds` from now; a pause already running longer is kept."""
        self._paused_until = max(self._paused_until, time.monotonic() + max(0.0, seconds))

    @property
    def paused_for(self) -> float:
        return max(0.0, self._paused_until - time.monotonic())

    async def acquire(self) -> None:
        # One waiter at a time under the lock keeps callers in arrival order.
        async with self._lock:
            while True:
                now = time.monotonic()
                if now < self._paused_until:
                    await asyncio.sleep(self._paused_until - now)
                    continue
                self._tokens = min(float(self.burst), self._tokens + (now - self._updated) * self.rate)
                self._updated = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                await asyncio.sleep((1.0 - self._tokens) / self.rate)
