"""Prometheus metrics, names prefixed `widen_`. One registry per application, so tests can run several.

Counters count events as they happen (the hooks are wired in `receiver.app`); the inbox gauges are read
from the store when `/metrics` is scraped, so they are right even just after a restart.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector, generate_latest

__all__ = ["Metrics", "CONTENT_TYPE_LATEST"]

# The classic text format every Prometheus reads (the library's own default answer to a plain scrape);
# newer prometheus-client releases name 1.0.0 "latest", which older servers refuse.
CONTENT_TYPE_LATEST = "text/plain; version=0.0.4; charset=utf-8"


def _version() -> str:
    try:
        return version("widen-bot")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # Memory, CPU and open files of this process, as widen_process_*.
        ProcessCollector(namespace="widen", registry=r)
        Info("widen_build", "The running version", registry=r).info({"version": _version()})
        self.deliveries = Counter(
            "widen_deliveries_received",
            "Webhook deliveries received, by event type and outcome (accepted, duplicate, bad_signature, "
            "unknown_route, bad_json, invalid, too_large)",
            ["event_type", "outcome"], registry=r,
        )
        self._delivery_counts: dict[tuple[str, str], Any] = {}
        self.processed = Counter(
            "widen_deliveries_processed",
            "Processing attempts of stored deliveries, by outcome (posted, retry, parked)",
            ["outcome"], registry=r,
        )
        self.inbox_depth = Gauge("widen_inbox_depth", "Deliveries waiting to be posted (pending and in flight)",
                                 registry=r)
        self.oldest_pending = Gauge("widen_inbox_oldest_pending_seconds",
                                    "Age of the oldest delivery waiting to be posted (0 when none waits)", registry=r)
        self.parked = Gauge("widen_parked_deliveries", "Deliveries parked after repeated failures, kept for an admin",
                            registry=r)
        self.slack_calls = Counter("widen_slack_calls", "Slack Web API calls by method and outcome (ok or the error)",
                                   ["method", "outcome"], registry=r)
        self.dam_calls = Counter("widen_dam_calls", "DAM API calls by operation and outcome",
                                 ["operation", "outcome"], registry=r)
        self.retries = Counter("widen_retries", "HTTP calls retried, by target (slack, dam) and reason "
                               "(429, 5xx, network)", ["target", "reason"], registry=r)
        self.latency = Histogram(
            "widen_processing_latency_seconds", "From receipt of a delivery to its message in Slack",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800), registry=r,
        )

    def delivery(self, event_type: str, outcome: str) -> None:
        """Count one delivery received. This runs for every delivery, at full speed: the labelled
        children are kept (both labels come from small fixed sets) rather than looked up each time."""
        key = (event_type, outcome)
        child = self._delivery_counts.get(key)
        if child is None:
            child = self._delivery_counts[key] = self.deliveries.labels(event_type, outcome)
        child.inc()

    def retried(self, target: str, reason: str) -> None:
        """Count one retry; reasons may come prefixed with their target ("slack_5xx")."""
        self.retries.labels(target, reason.removeprefix(f"{target}_")).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
