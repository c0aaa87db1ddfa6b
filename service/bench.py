"""``batcher bench``: figures measured side by side in one run.

``lag``: flush lag (batch deadline -> handler start) for N open batches whose
deadlines are spread evenly over a window, with the nudger and sweeper on
(the service as shipped) and with events alone (what Redis's expiry gives by
itself). ``idle``: Redis CPU of a running engine with nothing due.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from .connections import create_redis
from .embedded import RedisServer
from .engine import Engine
from .models import Batch, Message
from .settings import Settings


@dataclass
class LagResult:
    variant: str
    n: int
    delivered: int
    lost: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextlib.contextmanager
def bench_server(redis_url: str | None) -> Iterator[str]:
    if redis_url:
        yield redis_url
        return
    with tempfile.TemporaryDirectory(prefix="batcher-bench-") as tmp:
        server = RedisServer(data_dir=Path(tmp))
        with server:
            yield server.url


@contextlib.asynccontextmanager
async def engine_on(url: str, settings: Settings, handler: Any) -> AsyncIterator[Engine]:
    client = create_redis(url)
    await client.flushdb()
    engine = Engine(client, settings, handler, shutdown_timeout_s=1)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()
        await client.aclose()


async def measure_lag(
    url: str,
    variant: str,
    n: int,
    window_s: float,
    idle_ms: int,
    progress: Progress,
) -> LagResult:
    """Open ``n`` batches over ``window_s`` (deadlines spread evenly), wait
    for every flush, and return the lag distribution."""
    on = variant == "service"
    settings = Settings(
        redis_url=SecretStr(url),
        idle_ms=idle_ms,
        max_wait_ms=idle_ms * 10,
        nudge_interval_ms=10 if on else 3_600_000,
        sweep_interval_ms=1_000 if on else 3_600_000,
        sweep_grace_ms=1_000 if on else 3_600_000,
        concurrency=64,
    )
    lags: list[float] = []
    done = asyncio.Event()

    async def handler(batch: Batch) -> None:
        lags.append((time.time() - batch.deadline_at) * 1000)
        if len(lags) >= n:
            done.set()

    task = progress.add_task(f"{variant}: {n} batches", total=n)
    async with engine_on(url, settings, handler) as engine:
        chunk = max(1, n // max(1, int(window_s * 20)))  # ~20 appends per second of window
        start = time.monotonic()
        for i in range(0, n, chunk):
            items: list[tuple[str, Message | str]] = [
                (f"bench-{j}", Message(id=str(j), text="x" * 40))
                for j in range(i, min(n, i + chunk))
            ]
            await engine.batcher.add_many(items)
            target = start + window_s * (i + chunk) / n
            await asyncio.sleep(max(0.0, target - time.monotonic()))
        deadline_wait = idle_ms / 1000 + 60
        t0 = time.monotonic()
        while not done.is_set() and time.monotonic() - t0 < deadline_wait:
            progress.update(task, completed=len(lags))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.2)
        progress.update(task, completed=len(lags))
    return LagResult(
        variant,
        n,
        len(lags),
        n - len(lags),
        round(percentile(lags, 0.5), 1),
        round(percentile(lags, 0.9), 1),
        round(percentile(lags, 0.99), 1),
        round(max(lags, default=float("nan")), 1),
    )


async def run_lag(
    ns: list[int], window_s: float, idle_ms: int, redis_url: str | None, console: Console
) -> list[LagResult]:
    results: list[LagResult] = []
    with bench_server(redis_url) as url, Progress(console=console, transient=True) as progress:
        for n in ns:
            for variant in ("service", "events-only"):
                results.append(await measure_lag(url, variant, n, window_s, idle_ms, progress))
    table = Table(title="flush lag: batch deadline -> handler start (ms)")
    for col in ("variant", "open batches", "delivered", "lost", "p50", "p90", "p99", "max"):
        table.add_column(col, justify="right" if col != "variant" else "left")
    for r in results:
        table.add_row(
            r.variant,
            str(r.n),
            str(r.delivered),
            str(r.lost),
            str(r.p50_ms),
            str(r.p90_ms),
            str(r.p99_ms),
            str(r.max_ms),
        )
    console.print(table)
    console.print(
        "service = nudger + sweeper on (as shipped); events-only = the keyspace event alone, "
        "nudger and sweeper off; same server, same run."
    )
    return results


async def run_idle(
    open_batches: int, seconds: float, redis_url: str | None, console: Console
) -> dict[str, float]:
    """Redis CPU (percent of one core) of an engine with nothing due."""
    out: dict[str, float] = {}
    with bench_server(redis_url) as url:
        client = create_redis(url)

        async def cpu() -> float:
            info = await client.info("cpu")
            return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

        await client.flushdb()
        c0 = await cpu()
        await asyncio.sleep(seconds)
        out["no engine"] = (await cpu() - c0) / seconds * 100
        settings = Settings(redis_url=SecretStr(url), idle_ms=3_600_000, max_wait_ms=7_200_000)

        async def ignore(batch: Batch) -> None:
            return None

        async with engine_on(url, settings, ignore) as engine:
            for i in range(0, open_batches, 1000):
                chunk: list[tuple[str, Message | str]] = [
                    (f"idle-{j}", "x" * 40) for j in range(i, min(open_batches, i + 1000))
                ]
                await engine.batcher.add_many(chunk)
            c0 = await cpu()
            await asyncio.sleep(seconds)
            out[f"engine, {open_batches} open batches"] = (await cpu() - c0) / seconds * 100
        await client.aclose()
    table = Table(title=f"Redis CPU over {seconds:.0f} s (% of one core)")
    table.add_column("state")
    table.add_column("cpu %", justify="right")
    for k, v in out.items():
        table.add_row(k, f"{v:.2f}")
    console.print(table)
    return out


def write_json(path: str | None, payload: Any) -> None:
    if path:
        Path(path).write_text(json.dumps(payload, indent=2, default=str))


def lag_main(
    ns: list[int], window_s: float, idle_ms: int, redis_url: str | None, json_path: str | None
) -> None:
    console = Console()
    results = asyncio.run(run_lag(ns, window_s, idle_ms, redis_url, console))
    write_json(json_path, [asdict(r) for r in results])


def idle_main(
    open_batches: int, seconds: float, redis_url: str | None, json_path: str | None
) -> None:
    console = Console()
    write_json(json_path, asyncio.run(run_idle(open_batches, seconds, redis_url, console)))
