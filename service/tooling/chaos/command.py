"""The chaos soak: real services, a real Redis, faults, and a reconciliation.

    python -m service.tooling.chaos --minutes 2 --seed 7 --json soak.json

Starts a Redis (the repo's redis.conf, AOF everysec or ``--appendfsync always``,
DEBUG allowed locally)
behind a TCP proxy that the harness owns, two ``batcher serve`` processes
pointed at the proxy, and a local bot (the forward sink). A driver sends
WhatsApp bursts for hundreds of chats, alternately to both processes, while
the injector breaks things one at a time (``faults.KINDS``). Traffic
then stops, everything drains (bounded), and every acknowledged message is
looked for at the bot or in the dead-letter store. Exit status 1 on any loss,
order violation, overlap or message split over two batches; 2 when the rig
itself could not run.

With ``--cluster`` the Redis is a local Redis Cluster instead (3 primaries with
a replica each, ``BATCHER_ACK_REPLICAS=1``, no proxy) and the faults are those
of ``faults.CLUSTER_KINDS`` (``service.tooling.chaos.cluster``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis
from rich.console import Console

from service.cli.console import setup_logging
from service.store.embedded import RedisServer
from service.tooling.chaos.cluster import cluster_soak
from service.tooling.chaos.faults import CLUSTER_KINDS, KINDS, Injector, Rig
from service.tooling.chaos.proxy import ChaosProxy
from service.tooling.chaos.run import (
    SERVICE_SETTINGS,
    finish,
    rig_failed,
    run_soak,
    service_env,
    start_services,
    stop_all,
)
from service.tooling.chaos.table import render
from service.tooling.procs import ServiceProc
from service.tooling.sink import Sink

__all__ = ["SERVICE_SETTINGS", "main", "register", "soak"]


def add_chaos_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--minutes",
        type=float,
        default=1.5,
        help="traffic duration (default 1.5); longer, by up to 2 min, until every fault "
        "kind has run once",
    )
    p.add_argument("--seed", type=int, default=1, help="seeds traffic and fault schedule")
    p.add_argument("--json", type=Path, default=None, help="write the figures here")
    p.add_argument("--chats", type=int, default=200, help="simulated users (default 200)")
    p.add_argument(
        "--faults",
        default="all",
        help=f"comma-separated kinds, 'all' or 'none' (kinds: {', '.join(KINDS)})",
    )
    p.add_argument("--drain-s", type=float, default=60.0, help="bound on the final drain")
    p.add_argument(
        "--zombie-s",
        type=float,
        default=None,
        help="close blackholed connections after this (default: never)",
    )
    p.add_argument(
        "--fail-on-stall",
        action="store_true",
        help="also fail when an acknowledged message reached the bot > 30 s after its ack",
    )
    p.add_argument(
        "--appendfsync",
        choices=("everysec", "always"),
        default="everysec",
        help="the Redis AOF fsync policy (default everysec, as redis.conf ships); "
        "'always' closes the window in which a Redis crash loses acknowledged writes",
    )
    p.add_argument(
        "--cluster",
        action="store_true",
        help="run against a local Redis Cluster (3 primaries + 3 replicas, "
        f"BATCHER_ACK_REPLICAS=1, no proxy; kinds: {', '.join(CLUSTER_KINDS)})",
    )
    p.add_argument("--dir", type=Path, default=None, help="run directory (logs, Redis data)")
    p.add_argument("--keep", action="store_true", help="keep the run directory after a pass")


def register(subparsers: Any) -> None:
    """``batcher chaos`` (an entry point of group ``batcher.commands``)."""
    p = subparsers.add_parser(
        "chaos",
        help="chaos soak with fault injection and a figures table",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_chaos_arguments(p)
    p.set_defaults(run=run_chaos)


def run_chaos(args: argparse.Namespace) -> int:
    setup_logging("rich", "INFO")
    console = Console(width=150)
    try:
        report = asyncio.run(soak(args, console))
    except KeyboardInterrupt:
        return 130
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    render(report, console)
    return 0 if report["verdict"] == "PASS" else (2 if report.get("rig_error") else 1)


def _kinds(spec: str, *, cluster: bool = False) -> list[str]:
    offered = CLUSTER_KINDS if cluster else KINDS
    if spec == "all":
        return list(offered)
    if spec == "none":
        return []
    kinds = [k.strip() for k in spec.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in offered]
    if unknown:
        raise SystemExit(f"unknown fault kinds: {', '.join(unknown)}")
    return kinds


def _run_dir(given: Path | None) -> Path:
    run_dir = Path(given or tempfile.mkdtemp(prefix="batcher-chaos-")).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


async def soak(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    kinds = _kinds(args.faults, cluster=args.cluster)
    run_dir = args.run_dir = _run_dir(args.dir)
    if args.cluster:
        return await cluster_soak(args, console, kinds, run_dir)
    console.print(
        f"chaos soak: {args.minutes} min, seed {args.seed}, appendfsync {args.appendfsync}, "
        f"run dir {run_dir}"
    )
    app_secret, forward_secret = secrets.token_hex(16), secrets.token_hex(16)
    server = RedisServer(
        data_dir=run_dir / "redis",
        extra_args=("--enable-debug-command", "local", "--appendfsync", args.appendfsync),
    )
    admin = Redis.from_url(server.url, socket_timeout=5, socket_connect_timeout=2)
    proxy = ChaosProxy(server.port, zombie_s=args.zombie_s)
    sink = Sink(forward_secret.encode())
    services: list[ServiceProc] = []
    started = time.monotonic()
    report: dict[str, Any] = {}
    try:
        await asyncio.to_thread(server.start, 30.0)
        await proxy.start()
        await sink.start()
        env = service_env(proxy.url, sink, forward_secret, app_secret)
        async with httpx.AsyncClient() as http:
            await start_services(env, run_dir, http, services)
            rig = Rig(server, admin, proxy, sink, services, http)
            injector = Injector(rig, args.seed, kinds=kinds or None)
            report = await run_soak(args, console, rig, injector, kinds, app_secret.encode())
    except Exception as exc:
        report = rig_failed(exc, console)
    finally:
        await stop_all(services, sink)
        await proxy.stop()
        await admin.aclose()
        await asyncio.to_thread(server.stop)
    return finish(report, args, services, started, run_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service.tooling.chaos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_chaos_arguments(parser)
    return run_chaos(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
