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
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import shutil
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
from service.tooling.chaos.driver import Driver, Traffic
from service.tooling.chaos.faults import KINDS, Injector, Rig
from service.tooling.chaos.monitor import Monitor
from service.tooling.chaos.proxy import ChaosProxy
from service.tooling.chaos.report import Timing, reconcile
from service.tooling.chaos.state import drain, dump, service_events
from service.tooling.chaos.table import render
from service.tooling.procs import ServiceProc
from service.tooling.sink import Sink

SERVICE_SETTINGS = {
    "IDLE_MS": 300,
    "MAX_WAIT_MS": 10_000,
    "LEASE_MS": 3_000,
    "FORWARD_TIMEOUT_MS": 1_000,
    "MAX_ATTEMPTS": 50,
    "RETRY_BASE_MS": 100,
    "RETRY_MAX_MS": 1_000,
    "LISTENER_PING_MS": 500,
    "LISTENER_DEAD_MS": 1_500,
    "SWEEP_INTERVAL_MS": 200,
    "SWEEP_GRACE_MS": 500,
}


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


def _kinds(spec: str) -> list[str]:
    if spec == "all":
        return list(KINDS)
    if spec == "none":
        return []
    kinds = [k.strip() for k in spec.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise SystemExit(f"unknown fault kinds: {', '.join(unknown)}")
    return kinds


def _run_dir(given: Path | None) -> Path:
    run_dir = Path(given or tempfile.mkdtemp(prefix="batcher-chaos-")).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


async def soak(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    kinds = _kinds(args.faults)
    run_dir = args.run_dir = _run_dir(args.dir)
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
        env = {f"BATCHER_{k}": str(v) for k, v in SERVICE_SETTINGS.items()}
        env.update(
            BATCHER_REDIS_URL=proxy.url,
            BATCHER_FORWARD_URL=sink.url,
            BATCHER_FORWARD_SECRET=forward_secret,
            BATCHER_WHATSAPP_APP_SECRET=app_secret,
            BATCHER_LOG_FORMAT="json",
            BATCHER_LOG_LEVEL="INFO",
        )
        async with httpx.AsyncClient() as http:
            for n in range(2):
                svc = ServiceProc(f"svc{n}", env, run_dir / f"svc{n}.log", run_dir)
                services.append(svc)
                svc.start()
            for svc in services:
                await svc.wait_ready(http)
            rig = Rig(server, admin, proxy, sink, services, http)
            report = await _run(args, console, rig, kinds, app_secret.encode())
    except Exception as exc:
        report = {"verdict": "FAIL", "rig_error": f"{type(exc).__name__}: {exc}"}
        console.print(f"[bold red]rig error:[/] {exc}")
    finally:
        for svc in services:
            with contextlib.suppress(Exception):
                await svc.stop()
        with contextlib.suppress(Exception):
            await sink.stop()
        await proxy.stop()
        await admin.aclose()
        await asyncio.to_thread(server.stop)
    report["events"] = service_events(services)
    report["run"] = {
        "seed": args.seed,
        "minutes": args.minutes,
        "chats": args.chats,
        "appendfsync": args.appendfsync,
        "wall_s": round(time.monotonic() - started, 1),
        "dir": str(run_dir),
        "settings": SERVICE_SETTINGS,
        "service_starts": {s.name: s.starts for s in services},
        "service_exit_codes": {s.name: s.exit_codes for s in services},
    }
    if report.get("verdict") == "PASS" and not args.keep and args.dir is None:
        shutil.rmtree(run_dir, ignore_errors=True)
    return report


async def _run(
    args: argparse.Namespace, console: Console, rig: Rig, kinds: list[str], app_secret: bytes
) -> dict[str, Any]:
    t0 = time.monotonic()
    traffic_until = t0 + args.minutes * 60
    driver = Driver([s.url for s in rig.services], app_secret, args.seed, Traffic(chats=args.chats))
    injector = Injector(rig, args.seed, kinds=kinds or None)
    driver_task = asyncio.create_task(driver.run(traffic_until, traffic_until + 30))
    fault_task = asyncio.create_task(injector.run(traffic_until, driver.extend)) if kinds else None
    progress = asyncio.create_task(_progress(console, t0, driver, rig.sink, injector))
    monitor = Monitor(rig.services, rig.http)
    watching = asyncio.create_task(monitor.run())
    try:
        await driver_task
        if fault_task is not None:
            await fault_task
    finally:
        progress.cancel()
    traffic_end = time.monotonic()
    console.print(f"traffic over at {traffic_end - t0:.0f}s; draining")
    try:
        left = await drain(rig, driver, args.drain_s)
    finally:
        watching.cancel()
    timing = Timing(
        idle_s=SERVICE_SETTINGS["IDLE_MS"] / 1000,
        forward_timeout_s=SERVICE_SETTINGS["FORWARD_TIMEOUT_MS"] / 1000,
        lease_s=SERVICE_SETTINGS["LEASE_MS"] / 1000,
    )
    report = reconcile(driver.sent, rig.sink.batches(), injector.faults, left, timing, t0)
    health = monitor.summary(injector.faults, traffic_end, timing.recovery_window_s)
    report["health"] = health
    report["health_flags"] = monitor.flagged(health)
    if args.fail_on_stall and report["messages"]["stalled"]:
        report["verdict"] = "FAIL"
    report["driver_outcomes"] = dict(driver.outcomes.most_common())
    dump(args.run_dir, t0, driver, rig.sink)
    report["faults"] = [
        {
            "kind": f.kind,
            "target": f.target,
            "start_s": round(f.start - t0, 2),
            "end_s": round(f.end - t0, 2),
            **f.detail,
        }
        for f in injector.faults
    ]
    report["traffic_extended_s"] = round(max(0.0, traffic_end - traffic_until), 1)
    report["fault_kinds_missing"] = sorted(set(kinds) - {f.kind for f in injector.faults})
    report["injector_errors"] = injector.errors
    report["proxy"] = {"accepted": rig.proxy.accepted, "refused": rig.proxy.refused,
                       "cut": rig.proxy.cuts, "zombies_left": rig.proxy.zombies}  # fmt: skip
    return report


async def _progress(
    console: Console, t0: float, driver: Driver, sink: Sink, injector: Injector
) -> None:
    while True:
        await asyncio.sleep(10)
        acked = sum(1 for s in driver.sent if s.acked is not None)
        ok = len(sink.acked())
        now = injector.current.kind if injector.current else "-"
        console.print(
            f"  {time.monotonic() - t0:5.0f}s  sent {len(driver.sent)}  acked {acked}  "
            f"batches ok {ok}  faults {len(injector.faults)}  now: {now}"
        )


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
