"""In-process figures of one engine: plain counters (read by tests and the
console) and the Prometheus registry behind ``GET /metrics``."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector


def percentile(values: Sequence[float], q: float, *, ordered: bool = False) -> float | None:
    """Nearest rank: the smallest value with at least ``q`` (0..1) of them at or
    below it; None when there are no values. ``ordered``: already sorted."""
    if not values:
        return None
    data = values if ordered else sorted(values)
    return data[min(len(data) - 1, max(0, math.ceil(q * len(data)) - 1))]


LAG_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
SIZE_BUCKETS = (1, 2, 3, 5, 8, 13, 20, 50, 100, 500)

# counter attribute -> (metric name, help)
_COUNTERS = {
    "events": ("batcher_expired_events", "Expired timer events heard"),
    "claimed": ("batcher_batches_claimed", "Batches claimed for delivery"),
    "claims_skipped": (
        "batcher_claims_skipped",
        "Claims that found nothing to take (taken elsewhere, not idle, or busy)",
    ),
    "recovered": ("batcher_sweeper_recoveries", "Batches claimed by the sweeper (event lost/late)"),
    "redelivered": ("batcher_redeliveries", "Batches taken over after their lease ran out"),
    "delivered": ("batcher_batches_delivered", "Batches acknowledged by the handler"),
    "failures": ("batcher_handler_failures", "Handler attempts that failed"),
    "dead": ("batcher_dead_letters", "Batches dead-lettered after max attempts"),
    "reconnects": ("batcher_listener_reconnects", "Pub/sub listener reconnections"),
    "sweeps": ("batcher_sweeps", "Sweeper passes"),
    "nudged": ("batcher_timers_nudged", "Overdue timers touched by the nudger"),
}


@dataclass
class Stats:
    events: int = 0
    claimed: int = 0
    claims_skipped: int = 0
    recovered: int = 0
    redelivered: int = 0
    delivered: int = 0
    failures: int = 0
    dead: int = 0
    subscribes: int = 0  # subscribe confirmations (the first, then one per reconnect)
    reconnects: int = 0
    sweeps: int = 0
    nudged: int = 0
    flush_lag_ms: list[float] = field(default_factory=list)  # deadline -> handler start
    registry: CollectorRegistry = field(default_factory=CollectorRegistry, repr=False)

    def __post_init__(self) -> None:
        r = self.registry
        self.flushed = Counter(
            "batcher_batches_flushed", "Batches closed, by reason", ["reason"], registry=r
        )
        self.batch_size = Histogram(
            "batcher_batch_size", "Messages per batch", buckets=SIZE_BUCKETS, registry=r
        )
        self.lag = Histogram(
            "batcher_flush_lag_seconds",
            "Batch deadline to handler start",
            buckets=LAG_BUCKETS_S,
            registry=r,
        )
        self.handler_seconds = Histogram(
            "batcher_handler_duration_seconds", "Handler (or forward) duration", registry=r
        )
        self.messages = Counter(
            "batcher_messages",
            "Messages received, by source and outcome",
            ["source", "outcome"],
            registry=r,
        )
        self.rejected = Counter(
            "batcher_rejected_messages",
            "Messages no chat could be named for, kept in the rejected store, by source",
            ["source"],
            registry=r,
        )
        self.provider_errors = Counter(
            "batcher_provider_errors",
            "Errors a provider reported beside the messages, by source and code",
            ["source", "code"],
            registry=r,
        )
        self.requests = Counter(
            "batcher_http_requests",
            "Webhook requests, by endpoint and status",
            ["endpoint", "status"],
            registry=r,
        )
        r.register(_StatsCollector(self))

    def record_claim(self, reason: str, size: int) -> None:
        self.claimed += 1
        self.flushed.labels(reason).inc()
        self.batch_size.observe(size)

    def record_lag(self, lag_ms: float) -> None:
        self.lag.observe(max(lag_ms, 0) / 1000)
        self.flush_lag_ms.append(lag_ms)
        if len(self.flush_lag_ms) > 100_000:
            del self.flush_lag_ms[:50_000]

    def counters(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.type == "int"}


class _StatsCollector(Collector):
    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        for attr, (name, doc) in _COUNTERS.items():
            family = CounterMetricFamily(name, doc)
            family.add_metric([], getattr(self.stats, attr))
            yield family
