"""service.stats: the one percentile every report uses, and the counters."""

from __future__ import annotations

import math

from service.stats import Stats, percentile
from service.tooling.bench.common import ms_pct


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values[::-1], 1.0) == 100.0
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 0.5) == 3.0
    assert percentile([3.0, 1.0, 2.0], 0.0) == 1.0
    assert percentile([7.0], 0.99) == 7.0


def test_no_values_have_no_percentile() -> None:
    assert percentile([], 0.5) is None
    assert math.isnan(ms_pct([], 0.5))  # a table cell, not a crash
    assert ms_pct([1.234, 5.678], 1.0) == 5.7


def test_counters_are_the_int_fields() -> None:
    stats = Stats()
    stats.record_claim("idle", 3)
    counters = stats.counters()
    assert counters["claimed"] == 1
    assert "flush_lag_ms" not in counters and "registry" not in counters
