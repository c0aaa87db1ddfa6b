"""In-process counters of one engine (read by tests, the console and /metrics)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Stats:
    events: int = 0  # expired events heard for this keyspace
    claimed: int = 0
    recovered: int = 0  # batches claimed by the sweeper (their event was lost or late)
    redelivered: int = 0  # batches taken over after their lease ran out
    delivered: int = 0
    failures: int = 0  # handler attempts that raised
    dead: int = 0
    subscribes: int = 0  # subscribe confirmations (the first, then one per reconnect)
    reconnects: int = 0
    sweeps: int = 0
    nudged: int = 0  # timers touched by the nudger
    flush_lag_ms: list[float] = field(default_factory=list)  # deadline -> handler start

    def record_lag(self, lag_ms: float) -> None:
        self.flush_lag_ms.append(lag_ms)
        if len(self.flush_lag_ms) > 100_000:
            del self.flush_lag_ms[:50_000]
