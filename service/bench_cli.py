"""``batcher bench``: the command line of the benchmarks (``bench*.py``)."""

from __future__ import annotations

import argparse
from typing import Any


def add_bench_parser(sub: Any) -> None:
    bench = sub.add_parser("bench", help="measure the service against baselines, same run")
    scenarios = bench.add_subparsers(dest="scenario", required=True)
    lag = scenarios.add_parser(
        "lag", help="flush lag for N open batches: the service vs expiry events alone"
    )
    lag.add_argument("--n", type=int, action="append", help="open batches (repeatable)")
    lag.add_argument("--window-s", type=float, default=10.0, help="deadlines spread over this")
    lag.add_argument(
        "--idle-ms", type=int, help="default: the window + 2 s, so all N are open at once"
    )
    idle = scenarios.add_parser("idle", help="Redis CPU of an idle engine")
    idle.add_argument("--open", type=int, default=100_000, help="open batches while idle")
    idle.add_argument("--seconds", type=float, default=10.0)
    http = scenarios.add_parser(
        "http", help="POST /webhooks/whatsapp vs a bare Starlette endpoint (wrk)"
    )
    http.add_argument("--seconds", type=int, default=10)
    http.add_argument("--connections", type=int, default=64)
    http.add_argument("--json", dest="json_path", help="write the figures here")
    for p in (lag, idle):
        p.add_argument("--redis-url", help="use this server (default: start one)")
        p.add_argument("--json", dest="json_path", help="write the figures here")


def run_bench(args: argparse.Namespace) -> int:
    from . import bench as benchmarks

    if args.scenario == "lag":
        ns = args.n or [1_000, 10_000]
        idle_ms = args.idle_ms or int(args.window_s * 1000) + 2000
        benchmarks.lag_main(ns, args.window_s, idle_ms, args.redis_url, args.json_path)
    elif args.scenario == "http":
        from .bench_http import http_main

        http_main(args.seconds, args.connections, args.json_path)
    else:
        benchmarks.idle_main(args.open, args.seconds, args.redis_url, args.json_path)
    return 0
