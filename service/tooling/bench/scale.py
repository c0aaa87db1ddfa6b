"""``batcher bench scale``: 1, 2, 4 service processes against one Redis.

Each process (``python -m service.tooling.bench.worker``) runs an Engine: listener,
nudger, sweeper, workers, and a handler that acks at once. Every process
hears every expired event, but only the owner of the chat's bucket runs the
claim script for it (and each bucket is nudged and swept by its owner
only). Two phases per process count, on a freshly emptied database:

- **steady**: ``rate`` batches a second for ``seconds`` (one message each):
  flush lag at a load every configuration can carry;
- **burst**: ``burst`` batches appended as fast as they go, all due within
  about a second: batches/s = delivered / (last handler start - first
  deadline), the fleet's throughput.

The fan-out cost: events heard (all processes) against batches claimed, the
claim attempts that found nothing to take, and script calls per batch
(``INFO commandstats``).
The single process is the baseline of every other row.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.asyncio import Redis
from rich.console import Console
from rich.progress import Progress

from service.engine.batcher import Batcher
from service.models import Message
from service.store.backlog import read_backlog
from service.store.connections import connect
from service.tooling.bench.common import (
    bench_server,
    bench_settings,
    ms_pct,
    note,
    paced,
    redis_cpu_by_primary,
    run_async,
    script_calls,
    table,
    write_json,
)

TEXT = "hi, I need to change my order #4411 now"
IDLE_MS = 1_500


@dataclass(frozen=True)
class ScaleOptions:
    procs: tuple[int, ...] = (1, 2, 4)
    burst: int = 20_000
    rate: int = 1_000
    seconds: float = 5.0
    nudge_interval_ms: int = 2
    concurrency: int = 64
    buckets: int = 16
    cluster: bool = False  # a local 3-primary Redis Cluster instead of one server


@dataclass
class ScaleResult:
    procs: int
    phase: str
    batches: int
    delivered: int
    batches_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    events: int  # expired events heard, all processes together
    claimed: int
    lost_claims: int  # claim attempts that found nothing to take (taken elsewhere, not idle)
    swept: int  # claimed by a sweeper (overdue by more than its grace period)
    scripts_per_batch: float
    redis_cpu_pct: float  # all primaries together, % of one core
    seconds: float
    redis_cpu_pct_by_primary: list[float] = field(default_factory=list)


Proc = asyncio.subprocess.Process


async def start_workers(url: str, count: int, opts: ScaleOptions) -> list[Proc]:
    procs = []
    for _ in range(count):
        procs.append(
            await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "service.tooling.bench.worker", url),
                *("--nudge-ms", str(opts.nudge_interval_ms)),
                *("--concurrency", str(opts.concurrency), "--buckets", str(opts.buckets)),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=1 << 26,  # a report carries every lag
            )
        )
    for proc in procs:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if line.strip() != b"ready":
            raise RuntimeError(f"bench worker did not start: {line!r}")
    return procs


async def reports(procs: list[Proc]) -> list[dict[str, Any]]:
    out = []
    for proc in procs:
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.write(b"report\n")
        await proc.stdin.drain()
        out.append(json.loads(await asyncio.wait_for(proc.stdout.readline(), 60)))
    return out


async def stop_workers(procs: list[Proc]) -> None:
    for proc in procs:
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
    for proc in procs:
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def phase(
    client: Redis,
    batcher: Batcher,
    procs: list[Proc],
    name: str,
    n: int,
    window_s: float | None,
    progress: Progress,
) -> ScaleResult:
    before = await reports(procs)
    cpus0 = await redis_cpu_by_primary(client)
    scripts0, t0 = await script_calls(client), time.monotonic()
    task = progress.add_task(f"{len(procs)} proc(s), {name}", total=n)

    async def send(lo: int, hi: int) -> None:
        await batcher.add_many(
            [(f"{name}-{i}", Message(id=str(i), text=TEXT)) for i in range(lo, hi)]
        )

    if window_s is None:  # burst: as fast as the appends go
        for lo in range(0, n, 2_000):
            await send(lo, min(n, lo + 2_000))
    else:
        await paced(n, window_s, send)
    deadline = time.monotonic() + IDLE_MS / 1000 + 120
    while time.monotonic() < deadline:
        left = (await read_backlog(client, batcher.keys)).pending
        if not left:
            break
        progress.update(task, completed=n - left)
        await asyncio.sleep(0.05)
    seconds = time.monotonic() - t0
    cpus = [
        round((c - c0) / seconds * 100, 1)
        for c, c0 in zip(await redis_cpu_by_primary(client), cpus0, strict=True)
    ]
    cpu = sum(cpus)
    scripts = await script_calls(client) - scripts0
    after = await reports(procs)
    progress.remove_task(task)
    lags = [x for r in after for x in r["lags_ms"]]
    starts = [x for r in after for x in r["starts"]]
    deadlines = [s - lag / 1000 for s, lag in zip(starts, lags, strict=True)]

    def delta(key: str) -> int:
        return int(sum(a[key] for a in after) - sum(b[key] for b in before))

    events, claimed, recovered = delta("events"), delta("claimed"), delta("recovered")
    span = max(starts) - min(deadlines) if starts else 0.0
    ordered = sorted(lags)
    return ScaleResult(
        procs=len(procs),
        phase=name,
        batches=n,
        delivered=delta("delivered"),
        batches_per_s=round(len(lags) / span) if span > 0 else 0.0,
        p50_ms=ms_pct(ordered, 0.5, ordered=True),
        p99_ms=ms_pct(ordered, 0.99, ordered=True),
        max_ms=round(ordered[-1], 1) if ordered else float("nan"),
        events=events,
        claimed=claimed,
        lost_claims=delta("claims_skipped"),
        swept=recovered,
        scripts_per_batch=round(scripts / n, 2),
        redis_cpu_pct=round(cpu, 1),
        seconds=round(seconds, 1),
        redis_cpu_pct_by_primary=cpus,
    )


async def run_scale(opts: ScaleOptions, redis_url: str | None, console: Console) -> list[Any]:
    results: list[ScaleResult] = []
    server = bench_server(redis_url, cluster=opts.cluster)
    with server as url, Progress(console=console, transient=True) as progress:
        client = await connect(url)
        settings = bench_settings(url, idle_ms=IDLE_MS, max_wait_ms=600_000, buckets=opts.buckets)
        batcher = Batcher(client, settings)
        try:
            for count in opts.procs:
                await client.flushdb()
                procs = await start_workers(url, count, opts)
                try:
                    steady = f"steady {opts.rate:,}/s"
                    n = int(opts.rate * opts.seconds)
                    results.append(
                        await phase(client, batcher, procs, steady, n, opts.seconds, progress)
                    )
                    results.append(
                        await phase(client, batcher, procs, "burst", opts.burst, None, progress)
                    )
                finally:
                    await stop_workers(procs)
        finally:
            await client.aclose()
    print_scale(results, console)
    return [asdict(r) for r in results]


def print_scale(results: list[ScaleResult], console: Console) -> None:
    cols = (
        *("phase", "procs", "batches", "delivered", "batches/s", "vs 1 proc", "p50 ms"),
        *("p99 ms", "max ms", "events heard", "lost claims", "swept", "scripts/batch"),
    )
    rows = []
    for r in results:
        base = next((b for b in results if b.phase == r.phase and b.procs == 1), None)
        vs = f"{r.batches_per_s / base.batches_per_s:.0%}" if base and base.batches_per_s else "-"
        rows.append(
            [
                r.phase,
                r.procs,
                r.batches,
                r.delivered,
                r.batches_per_s,
                vs,
                r.p50_ms,
                r.p99_ms,
                r.max_ms,
                r.events,
                r.lost_claims,
                r.swept,
                r.scripts_per_batch,
            ]
        )
    where = (
        "a Redis Cluster" if any(r.redis_cpu_pct_by_primary[1:] for r in results) else "one Redis"
    )
    console.print(table(f"scale: service processes on {where}", cols, rows))
    note(
        console,
        "Every process hears every event; the owner of the chat's bucket runs the claim. "
        "lost claims = claims that found nothing to take (another process took the batch, "
        "or a message arrived since). swept = claimed by a sweeper because the event path was more "
        "than the grace period (1 s) behind. batches/s = delivered / (last handler start - "
        "first deadline). scripts/batch counts every script call (append, nudge, claim, ack) "
        "per batch.",
    )
    cpu = ", ".join(f"{r.procs}p {r.phase}: {r.redis_cpu_pct:g} %" for r in results)
    note(console, f"Redis CPU (of one core): {cpu}")
    if any(len(r.redis_cpu_pct_by_primary) > 1 for r in results):
        each = ", ".join(
            f"{r.procs}p {r.phase}: {' / '.join(f'{c:g}' for c in r.redis_cpu_pct_by_primary)} %"
            for r in results
        )
        note(console, f"per primary: {each}")


def scale_main(opts: ScaleOptions, redis_url: str | None, json_path: str | None) -> None:
    write_json(json_path, run_async(run_scale(opts, redis_url, Console())))
