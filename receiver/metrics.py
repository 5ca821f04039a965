"""Prometheus metrics, names prefixed `widen_`. One registry per application, so tests can run several."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["Metrics", "CONTENT_TYPE_LATEST"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.deliveries = Counter(
            "widen_deliveries_received", "Webhook deliveries received, by event type and outcome",
            ["event_type", "outcome"], registry=r,
        )
        self.inbox_depth = Gauge("widen_inbox_depth", "Deliveries waiting to be posted (pending and in flight)",
                                 registry=r)
        self.oldest_pending = Gauge("widen_inbox_oldest_pending_seconds", "Age of the oldest waiting delivery",
                                    registry=r)
        self.parked = Gauge("widen_parked_deliveries", "Deliveries parked after repeated failures", registry=r)
        self.slack_calls = Counter("widen_slack_calls", "Slack Web API calls by method and outcome",
                                   ["method", "outcome"], registry=r)
        self.dam_calls = Counter("widen_dam_calls", "DAM API calls by operation and outcome",
                                 ["operation", "outcome"], registry=r)
        self.retries = Counter("widen_retries", "Retries by reason", ["reason"], registry=r)
        self.processed = Counter("widen_deliveries_processed", "Deliveries leaving the pipeline, by outcome",
                                 ["outcome"], registry=r)
        self.latency = Histogram(
            "widen_processing_latency_seconds", "From receipt of a delivery to its message in Slack",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800), registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
