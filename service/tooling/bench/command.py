"""``batcher bench``: the command line of the benchmarks (one module per scenario beside this one).

Every scenario prints a table whose figures stand next to a baseline
measured in the same run on the same server, and writes them as JSON with
``--json PATH``. Each starts its own Redis with the repo's redis.conf
unless ``--redis-url`` is given.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from rich.console import Console

from service.cli.console import setup_logging


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def register(sub: Any) -> None:
    """``batcher bench`` (an entry point of group ``batcher.commands``)."""
    bench = sub.add_parser("bench", help="measure the service against baselines, same run")
    bench.set_defaults(run=run_bench)
    scenarios = bench.add_subparsers(dest="scenario", required=True)

    lag = scenarios.add_parser(
        "lag", help="flush lag of N open batches: service vs events-only, naive and polling"
    )
    lag.add_argument("--n", type=int, action="append", help="open batches (repeatable)")
    lag.add_argument(
        "--variants",
        type=_names,
        default=("service", "events-only", "naive", "polling"),
        help="comma-separated subset of service,events-only,naive,polling",
    )
    lag.add_argument(
        "--window-s", type=float, help="deadlines spread over this (default: 10 s to 10k, 30 s)"
    )
    lag.add_argument("--idle-ms", type=int, help="default: the window + 2 s (all N open at once)")
    lag.add_argument(
        "--wait-s", type=float, default=30.0, help="wait this long after the last deadline"
    )
    lag.add_argument("--nudge-ms", type=int, default=2, help="the least gap between nudge passes")
    lag.add_argument("--buckets", type=int, default=16, help="the service's hash-tag buckets")
    lag.add_argument("--concurrency", type=int, default=64, help="the service's workers")
    lag.add_argument("--hz", type=int, help="CONFIG SET hz for the run (default: redis.conf's)")
    lag.add_argument("--effort", type=int, help="CONFIG SET active-expire-effort for the run")
    lag.add_argument(
        "--volatile", type=int, default=0, help="unrelated keys with a 600 s TTL in every variant"
    )
    lag.add_argument(
        "--naive-ttl-ms", type=int, help="naive data TTL (default: 60 s, or idle + 50 s)"
    )
    lag.add_argument(
        "--cluster",
        action="store_true",
        help="also run the service on a local 3-primary Redis Cluster (variant service-cluster)",
    )

    ingest = scenarios.add_parser(
        "ingest", help="messages/s through Batcher.add vs redis-benchmark on the append script"
    )
    ingest.add_argument("--n", type=int, default=200_000, help="messages")
    ingest.add_argument("--producers", type=int, default=64, help="concurrent add() callers")
    ingest.add_argument("--chats", type=int, default=10_000, help="chats the messages go to")
    ingest.add_argument("--pipeline", type=int, default=16, help="redis-benchmark -P")
    ingest.add_argument(
        "--no-coalesce", action="store_true", help="also run add() with one round trip per call"
    )

    http = scenarios.add_parser("http", help="POST /webhooks/whatsapp vs a bare Starlette endpoint")
    http.add_argument("--seconds", type=int, default=10)
    http.add_argument("--connections", type=int, default=64)
    http.add_argument(
        "--client",
        choices=("auto", "wrk", "builtin", "both"),
        default="auto",
        help="load generator (auto: wrk when installed, else the built-in asyncio client)",
    )
    http.add_argument(
        "--workers",
        type=int,
        default=1,
        help="also measure `batcher serve --workers N` (N > 1)",
    )

    memory = scenarios.add_parser(
        "memory", help="Redis bytes per open/in-flight batch, and idle Redis CPU"
    )
    memory.add_argument("--batches", type=int, default=100_000)
    memory.add_argument("--seconds", type=float, default=10.0, help="idle CPU window")

    idle = scenarios.add_parser("idle", help="Redis CPU of an idle engine (part of memory)")
    idle.add_argument("--open", type=int, default=100_000, help="open batches while idle")
    idle.add_argument("--seconds", type=float, default=10.0)
    idle.add_argument("--cluster", action="store_true", help="a local Redis Cluster of 3 primaries")

    scale = scenarios.add_parser(
        "scale", help="throughput and lag with 1, 2, 4 service processes on one Redis"
    )
    scale.add_argument("--procs", type=_ints, default=(1, 2, 4), help="e.g. 1,2,4")
    scale.add_argument("--burst", type=int, default=20_000, help="batches due at once")
    scale.add_argument("--rate", type=int, default=1_000, help="steady batches per second")
    scale.add_argument("--seconds", type=float, default=5.0, help="steady phase length")
    scale.add_argument(
        "--cluster", action="store_true", help="a local Redis Cluster of 3 primaries"
    )

    typing = scenarios.add_parser(
        "typing", help="split rate of slow typists with and without typing events"
    )
    typing.add_argument("--users", type=int, default=200)
    typing.add_argument("--messages", type=int, default=4, help="per user")
    typing.add_argument("--idle-ms", type=int, default=300)
    typing.add_argument("--typing-ms", type=int, default=600, help="BATCHER_TYPING_MS")

    for p in (lag, ingest, http, memory, idle, scale, typing):
        p.add_argument("--json", dest="json_path", help="write the figures here")
        if p is not http:
            p.add_argument("--redis-url", help="use this server (default: start one)")


def run_bench(args: argparse.Namespace) -> int:
    setup_logging("rich", "WARNING")
    before = os.getloadavg()
    _run_scenario(args)
    after = os.getloadavg()
    Console().print(
        f"[dim]{os.cpu_count()} CPUs; load average (1/5/15 min) before "
        f"{_load(before)}, after {_load(after)}: other work on the machine skews the "
        "absolute figures, less so the ratios to a baseline of the same run[/]"
    )
    return 0


def _load(avg: tuple[float, float, float]) -> str:
    return " / ".join(f"{x:.2f}" for x in avg)


def _run_scenario(args: argparse.Namespace) -> None:
    if args.scenario == "lag":
        from service.tooling.bench.lag import lag_main
        from service.tooling.bench.lag_setup import LagOptions

        opts = LagOptions(
            ns=tuple(args.n or (1_000, 10_000, 100_000)),
            variants=args.variants,
            window_s=args.window_s,
            idle_ms=args.idle_ms,
            wait_s=args.wait_s,
            nudge_interval_ms=args.nudge_ms,
            buckets=args.buckets,
            concurrency=args.concurrency,
            hz=args.hz,
            effort=args.effort,
            volatile=args.volatile,
            naive_ttl_ms=args.naive_ttl_ms,
            cluster=args.cluster,
        )
        lag_main(opts, args.redis_url, args.json_path)
    elif args.scenario == "ingest":
        from service.tooling.bench.ingest import IngestOptions, ingest_main

        ingest_main(
            IngestOptions(
                n=args.n,
                producers=args.producers,
                chats=args.chats,
                pipeline=args.pipeline,
                no_coalesce=args.no_coalesce,
            ),
            args.redis_url,
            args.json_path,
        )
    elif args.scenario == "http":
        from service.tooling.bench.http import http_main

        http_main(args.seconds, args.connections, args.client, args.json_path, args.workers)
    elif args.scenario == "memory":
        from service.tooling.bench.memory import memory_main

        memory_main(args.batches, args.seconds, args.redis_url, args.json_path)
    elif args.scenario == "idle":
        from service.tooling.bench.memory import idle_main

        idle_main(args.open, args.seconds, args.redis_url, args.json_path, cluster=args.cluster)
    elif args.scenario == "typing":
        from service.tooling.bench.typist import TypistOptions, typist_main

        typist = TypistOptions(
            users=args.users, messages=args.messages, idle_ms=args.idle_ms, typing_ms=args.typing_ms
        )
        typist_main(typist, args.redis_url, args.json_path)
    else:
        from service.tooling.bench.scale import ScaleOptions, scale_main

        scale_main(
            ScaleOptions(
                procs=args.procs,
                burst=args.burst,
                rate=args.rate,
                seconds=args.seconds,
                cluster=args.cluster,
            ),
            args.redis_url,
            args.json_path,
        )
