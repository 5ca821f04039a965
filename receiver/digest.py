"""Deciding when a burst of asset events becomes one digest instead of a card each.

More than `threshold` asset events arriving for the channel within `window` seconds is a burst: what is
ready then is held and gathered (by the worker) into one digest. Pings and unknown event types are
always posted on their own, so a ping's round trip is never hidden inside a digest.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Protocol


class _Item(Protocol):
    @property
    def is_asset_event(self) -> bool: ...


class DigestPlanner:
    def __init__(self, threshold: int, window: float) -> None:
        self.threshold = threshold
        self.window = window
        self._arrivals: deque[float] = deque()
        self._held: list[Any] = []

    def arrived(self, item: _Item) -> None:
        if item.is_asset_event:
            self._arrivals.append(time.monotonic())

    def in_burst(self) -> bool:
        cutoff = time.monotonic() - self.window
        while self._arrivals and self._arrivals[0] < cutoff:
            self._arrivals.popleft()
        return len(self._arrivals) > self.threshold

    def plan(self, batch: list[Any]) -> list[list[Any]]:
        """Groups to post now (a group of one is a card); asset events of a burst are held."""
        burst = self.in_burst()
        groups: list[list[Any]] = []
        for item in batch:
            if burst and item.is_asset_event:
                self._held.append(item)
            else:
                groups.append([item])
        return groups

    def take_held(self) -> list[Any]:
        held, self._held = self._held, []
        return held
