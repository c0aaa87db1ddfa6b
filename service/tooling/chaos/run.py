"""What a chaos soak does once its Redis (one server or a cluster) is up, the same
in both modes: the service processes, the traffic and the faults, the drain, the
reconciliation, and the run's summary."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from service.tooling.chaos.driver import Driver, Traffic
from service.tooling.chaos.faults import Injector, Rig
from service.tooling.chaos.monitor import Monitor
from service.tooling.chaos.report import Timing, reconcile
from service.tooling.chaos.state import drain, dump, service_events
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


def service_env(
    redis_url: str, sink: Sink, forward_secret: str, app_secret: str, **extra: str
) -> dict[str, str]:
    """The ``BATCHER_*`` environment of the soak's service processes."""
    env = {f"BATCHER_{k}": str(v) for k, v in SERVICE_SETTINGS.items()}
    env.update(
        BATCHER_REDIS_URL=redis_url,
        BATCHER_FORWARD_URL=sink.url,
        BATCHER_FORWARD_SECRET=forward_secret,
        BATCHER_WHATSAPP_APP_SECRET=app_secret,
        BATCHER_LOG_FORMAT="json",
        BATCHER_LOG_LEVEL="INFO",
    )
    env.update(extra)
    return env


async def start_services(
    env: dict[str, str], run_dir: Path, http: httpx.AsyncClient, services: list[ServiceProc]
) -> None:
    """Two ``batcher serve`` processes, appended to ``services`` as they start."""
    for n in range(2):
        svc = ServiceProc(f"svc{n}", env, run_dir / f"svc{n}.log", run_dir)
        services.append(svc)
        svc.start()
    for svc in services:
        await svc.wait_ready(http)


def finish(
    report: dict[str, Any],
    args: argparse.Namespace,
    services: list[ServiceProc],
    started: float,
    run_dir: Path,
    **run_extra: Any,
) -> dict[str, Any]:
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
        **run_extra,
    }
    if report.get("verdict") == "PASS" and not args.keep and args.dir is None:
        shutil.rmtree(run_dir, ignore_errors=True)
    return report


async def run_soak(
    args: argparse.Namespace,
    console: Console,
    rig: Rig,
    injector: Injector,
    kinds: list[str],
    app_secret: bytes,
) -> dict[str, Any]:
    t0 = time.monotonic()
    traffic_until = t0 + args.minutes * 60
    driver = Driver([s.url for s in rig.services], app_secret, args.seed, Traffic(chats=args.chats))
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
    if (proxy := rig.proxy) is not None:
        report["proxy"] = {"accepted": proxy.accepted, "refused": proxy.refused,
                           "cut": proxy.cuts, "zombies_left": proxy.zombies}  # fmt: skip
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


def rig_failed(exc: Exception, console: Console) -> dict[str, Any]:
    """The report of a soak whose rig broke (not a finding about the service)."""
    console.print(f"[bold red]rig error:[/] {exc}")
    return {"verdict": "FAIL", "rig_error": f"{type(exc).__name__}: {exc}"}


async def stop_all(services: list[ServiceProc], sink: Sink) -> None:
    """Stop the service processes and the sink, whatever state they are in."""
    for svc in services:
        with contextlib.suppress(Exception):
            await svc.stop()
    with contextlib.suppress(Exception):
        await sink.stop()
