"""``batcher bench lag``: flush lag of N open batches, service vs baselines.

Lag = handler start (or the baseline's claim) - the batch's deadline, for N
batches opened with deadlines spread evenly over a window; the idle time is
longer than the window, so all N are open when the first one falls due.
Variants, run one after the other on the same server in the same run:

- ``service``: the engine as shipped (events + nudger + sweeper);
- ``events-only``: the same engine with nudger and sweeper off (what Redis's
  expiry events give by themselves);
- ``naive``: the seed's design, a separate minimal client
  (``naive.py``): timer key + keyspace event, data key with a TTL;
- ``polling``: the seed's checker, a loop that looks for due chats every
  second (``polling.py``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict

from rich.console import Console
from rich.progress import Progress, TaskID

from service.models import Batch, Message
from service.store.backlog import read_backlog
from service.store.connections import connect, create_redis
from service.tooling.bench.common import (
    LagResult,
    bench_server,
    bench_settings,
    engine_on,
    fmt,
    lag_result,
    loop_name,
    note,
    paced,
    run_async,
    script_calls,
    table,
    wait_until,
    write_json,
)
from service.tooling.bench.lag_setup import (
    TEXT,
    VARIANTS,
    VOLATILE_TTL_S,
    LagOptions,
    Run,
    default_naive_ttl,
    default_window,
    expiry_config,
    prepare,
)
from service.tooling.bench.naive import run_naive
from service.tooling.bench.polling import run_polling


async def run_engine(run: Run, variant: str, progress: Progress, task: TaskID) -> LagResult:
    """``service`` (nudger + sweeper on) or ``events-only`` (both off)."""
    on = variant == "service"
    off = 3_600_000
    o = run.opts
    settings = bench_settings(
        run.url,
        idle_ms=run.idle_ms,
        max_wait_ms=run.idle_ms * 10,
        nudge_interval_ms=o.nudge_interval_ms if on else off,
        sweep_interval_ms=1_000 if on else off,
        sweep_grace_ms=1_000 if on else off,
        concurrency=o.concurrency,
        buckets=o.buckets,
    )
    lags: list[float] = []

    async def handler(batch: Batch) -> None:
        lags.append((time.time() - batch.deadline_at) * 1000)

    client = await connect(run.url)
    try:
        await prepare(client, run)
        config = await expiry_config(client)
        scripts0 = await script_calls(client)
        started = time.monotonic()
        async with engine_on(run.url, settings, handler, flush=False) as engine:

            async def send(lo: int, hi: int) -> None:
                await engine.batcher.add_many(
                    [(f"lag-{j}", Message(id=str(j), text=TEXT)) for j in range(lo, hi)]
                )
                progress.update(task, description=f"{variant}: appending", completed=hi)

            await paced(run.n, run.window_s, send)
            progress.update(task, description=f"{variant}: delivering", completed=0)
            await wait_until(
                lambda: len(lags) >= run.n,
                run.wait_s,
                lambda: progress.update(task, completed=len(lags)),
            )
            stats = engine.stats
            # Lag is taken at handler start, so batches whose handler started
            # may still be in flight (their acks on the way): they are not late.
            late = min((await read_backlog(client, engine.keys)).pending, run.n - len(lags))
        checks = {
            "nudger": on,
            "sweeper": on,
            "nudge_interval_ms": o.nudge_interval_ms if on else None,
            "buckets": o.buckets,
            "events": stats.events,
            "nudged": stats.nudged,
            "recovered": stats.recovered,
            "scripts_run": await script_calls(client) - scripts0,
            **config,
        }
        if late:
            checks["lost_detail"] = (
                f"none: {late:,} batch(es) not delivered within {o.wait_s:g} s of the last "
                "deadline are still stored (no TTL on data); they are late, not lost"
            )
        return lag_result(variant, run.n, lags, time.monotonic() - started, checks, late=late)
    finally:
        await client.aclose()


async def run_variant(run: Run, variant: str, progress: Progress) -> LagResult:
    task = progress.add_task(f"{variant}: {run.n:,}", total=run.n)
    try:
        if variant == "naive":
            ttl = run.opts.naive_ttl_ms or default_naive_ttl(run.idle_ms)
            return await run_naive(run, ttl, progress, task)
        if variant == "polling":
            return await run_polling(run, progress, task)
        return await run_engine(run, variant, progress, task)
    finally:
        progress.remove_task(task)


async def run_lag(opts: LagOptions, redis_url: str | None, console: Console) -> list[LagResult]:
    results: list[LagResult] = []
    with bench_server(redis_url) as url, Progress(console=console, transient=True) as progress:
        client = create_redis(url)
        saved = await expiry_config(client)  # --hz / --effort are put back afterwards
        try:
            for n in opts.ns:
                window = opts.window_s or default_window(n)
                idle = opts.idle_ms or int(window * 1000) + 2_000
                run = Run(url, n, window, idle, opts)
                for variant in opts.variants:
                    result = await run_variant(run, variant, progress)
                    result.checks.update(window_s=window, idle_ms=idle, volatile=opts.volatile)
                    results.append(result)
                    console.print(f"  {variant} n={n:,}: {summary(result)}", highlight=False)
        finally:
            for name, value in saved.items():
                await client.config_set(name, value)
            await client.aclose()
    if opts.cluster:
        results += await run_on_cluster(opts, console)
    print_lag(results, opts, console)
    return results


async def run_on_cluster(opts: LagOptions, console: Console) -> list[LagResult]:
    """The service variant on a local Redis Cluster, beside the single server's."""
    results = []
    with bench_server(None, cluster=True) as url, Progress(console=console, transient=True) as p:
        for n in opts.ns:
            window = opts.window_s or default_window(n)
            idle = opts.idle_ms or int(window * 1000) + 2_000
            result = await run_variant(Run(url, n, window, idle, opts), "service", p)
            result.variant = "service-cluster"
            result.checks.update(window_s=window, idle_ms=idle, primaries=3)
            results.append(result)
            console.print(f"  service-cluster n={n:,}: {summary(result)}", highlight=False)
    return results


def summary(r: LagResult) -> str:
    return (
        f"delivered {r.delivered:,}, late {r.late:,}, lost {r.lost:,}, p50 {fmt(r.p50_ms)} ms, "
        f"p99 {fmt(r.p99_ms)} ms, max {fmt(r.max_ms)} ms ({r.seconds:.0f} s)"
    )


def print_lag(results: Sequence[LagResult], opts: LagOptions, console: Console) -> None:
    cols = ("open batches", "variant", "delivered", "late", "lost", "mean", "p50", "p90", "p99")
    rows: list[list[object]] = []
    for r in results:
        base = next((b for b in results if b.n == r.n and b.variant == "service"), None)
        times = "-"
        if base is not None and base is not r and base.p99_ms > 0:
            times = f"{r.p99_ms / base.p99_ms:,.0f}x"
        rows.append(
            [
                r.n,
                r.variant,
                r.delivered,
                r.late,
                r.lost,
                r.mean_ms,
                r.p50_ms,
                r.p90_ms,
                r.p99_ms,
                r.max_ms,
                times,
            ]
        )
    console.print(
        table(
            "flush lag: batch deadline -> handler start (ms)",
            [*cols, "max", "p99 vs service"],
            rows,
        )
    )
    windows = sorted({(r.n, r.checks["window_s"], r.checks["idle_ms"]) for r in results})
    note(console, f"event loop: {loop_name()}")
    note(
        console,
        "service = nudger + sweeper (as shipped); events-only = the same engine, nudger and "
        "sweeper off; naive = SET timer PX idle + RPUSH data + PEXPIRE data <ttl>, a listener "
        "that RENAMEs data on 'expired', no scripts; polling = a zset of deadlines polled "
        "every 1 s. Same server, one variant after the other.",
    )
    for n, window, idle in windows:
        naive = next((r for r in results if r.n == n and r.variant == "naive"), None)
        ttl = f", naive data TTL {naive.checks['data_ttl_ms']:,} ms" if naive else ""
        note(
            console,
            f"n={n:,}: deadlines over {window:g} s ({n / window:,.0f} due a second), "
            f"idle {idle:,} ms{ttl}",
        )
    if opts.volatile:
        note(console, f"{opts.volatile:,} unrelated keys with a {VOLATILE_TTL_S} s TTL present")
    for r in results:
        if (r.lost or r.late) and r.checks.get("lost_detail"):
            note(console, f"{r.variant} n={r.n:,} lost: {r.checks['lost_detail']}")


def lag_main(opts: LagOptions, redis_url: str | None, json_path: str | None) -> None:
    console = Console()
    bad = [v for v in opts.variants if v not in VARIANTS]
    if bad:
        raise SystemExit(f"unknown variant(s): {', '.join(bad)} (choose from {VARIANTS})")
    results = run_async(run_lag(opts, redis_url, console))
    write_json(json_path, [asdict(r) for r in results])
