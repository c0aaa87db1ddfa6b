"""Health of the service processes during a chaos soak, seen from outside.

Every ``interval_s`` the monitor asks each process for ``GET /readyz`` and,
less often, ``GET /metrics``. A background loop that died inside a process
(listener, nudger, sweeper) shows up as a counter that stops moving while
traffic flows, or as a process that stays not-ready outside any fault.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from service.tooling.chaos.faults import Fault
from service.tooling.procs import ServiceProc

WATCHED = {
    "batcher_sweeps": "sweeper",
    "batcher_timers_nudged": "nudger",
    "batcher_expired_events": "listener",
    "batcher_batches_claimed": "workers",
}
_METRIC = re.compile(r"^(batcher_[a-z_]+?)(?:_total)? ([0-9.e+-]+)$", re.MULTILINE)
STALL_S = 15.0  # a watched counter still for this long during traffic: flagged


@dataclass
class Sample:
    t: float
    pid: int | None
    ready: bool
    reasons: str = ""
    counters: dict[str, float] = field(default_factory=dict)


class Monitor:
    def __init__(
        self,
        services: list[ServiceProc],
        http: httpx.AsyncClient,
        *,
        interval_s: float = 0.5,
        metrics_every_s: float = 2.0,
    ) -> None:
        self.services = services
        self.http = http
        self.interval_s = interval_s
        self.metrics_every_s = metrics_every_s
        self.samples: dict[str, list[Sample]] = {s.name: [] for s in services}

    async def run(self) -> None:
        next_metrics = 0.0
        while True:
            now = time.monotonic()
            scrape = now >= next_metrics
            if scrape:
                next_metrics = now + self.metrics_every_s
            await asyncio.gather(*(self._probe(s, scrape) for s in self.services))
            await asyncio.sleep(self.interval_s)

    async def _probe(self, svc: ServiceProc, scrape: bool) -> None:
        t = time.monotonic()
        sample = Sample(t, svc.pid, ready=False)
        try:
            r = await self.http.get(svc.url + "/readyz", timeout=2.0)
            sample.ready = r.status_code == 200
            if not sample.ready:
                sample.reasons = "; ".join(r.json().get("reasons", []))[:200]
            if scrape:
                m = await self.http.get(svc.url + "/metrics", timeout=2.0)
                sample.counters = {k: float(v) for k, v in _METRIC.findall(m.text)}
        except (httpx.HTTPError, ValueError) as exc:
            sample.reasons = type(exc).__name__
        self.samples[svc.name].append(sample)

    def summary(self, faults: list[Fault], traffic_end: float, settle_s: float) -> dict[str, Any]:
        """Per process: not-ready time outside faults (+ ``settle_s``) and the longest
        stretch, during traffic, over which each watched counter did not move."""
        windows = [(f.start, f.end + settle_s) for f in faults]

        def in_fault(t: float) -> bool:
            return any(a <= t <= b for a, b in windows)

        out: dict[str, Any] = {}
        for name, samples in self.samples.items():
            not_ready = 0.0
            reasons: dict[str, int] = {}
            for prev, cur in itertools.pairwise(samples):
                if not cur.ready and not in_fault(cur.t) and cur.t <= traffic_end:
                    not_ready += cur.t - prev.t
                    reasons[cur.reasons] = reasons.get(cur.reasons, 0) + 1
            out[name] = {
                "not_ready_outside_faults_s": round(not_ready, 1),
                "not_ready_reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])[:5]),
                "stalls": self._stalls(samples, traffic_end),
            }
        return out

    def _stalls(self, samples: list[Sample], traffic_end: float) -> dict[str, float]:
        """Per loop: the longest time its counter stood still (one process incarnation
        at a time, during traffic only)."""
        longest: dict[str, float] = {}
        scraped = [s for s in samples if s.counters and s.t <= traffic_end]
        for metric, loop in WATCHED.items():
            worst = 0.0
            since: float | None = None
            last: tuple[int | None, float] | None = None
            for s in scraped:
                value = s.counters.get(metric)
                if value is None:
                    continue
                if last is None or last[0] != s.pid or value != last[1]:
                    since = s.t
                    last = (s.pid, value)
                elif since is not None:
                    worst = max(worst, s.t - since)
            longest[loop] = round(worst, 1)
        return longest

    def flagged(self, summary: dict[str, Any]) -> list[str]:
        """Human-readable health problems (loops stalled beyond ``STALL_S``)."""
        problems = []
        for name, row in summary.items():
            for loop, stalled in row["stalls"].items():
                if stalled >= STALL_S:
                    problems.append(f"{name}: {loop} counter still for {stalled:.0f}s")
        return problems
