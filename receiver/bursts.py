"""Telling a burst of asset events, which becomes one digest, from a trickle, which gets a card each.

More than `threshold` asset events arriving for the channel within `window` seconds is a burst: what is
ready then is gathered (by the worker) into one digest. Pings and unknown event types are
always posted on their own, so a ping's round trip is never hidden inside a digest.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Protocol


class _Item(Protocol):
    @property
    def is_asset_event(self) -> bool: ...


class BurstDetector:
    def __init__(self, threshold: int, window: float) -> None:
        self.threshold = threshold
        self.window = window
        self._arrivals: deque[float] = deque()

    def arrived(self, item: _Item) -> None:
        if item.is_asset_event:
            self._arrivals.append(time.monotonic())

    def in_burst(self) -> bool:
        cutoff = time.monotonic() - self.window
        while self._arrivals and self._arrivals[0] < cutoff:
            self._arrivals.popleft()
        return len(self._arrivals) > self.threshold
