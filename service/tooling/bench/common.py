"""``batcher bench``: what every scenario shares.

Each scenario (``bench_<name>.py``) measures the service and, in the same
run on the same server, the baseline it is compared with, so a ratio holds
even on a noisy machine. This module holds the pieces they share: a server
of their own (the repo's ``redis.conf``) unless ``--redis-url`` is given,
percentiles, Redis CPU and command counters, pacing, tables and JSON output.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from rich.console import Console
from rich.table import Table

from service.engine.engine import Engine
from service.engine.handlers import Handler
from service.settings import Settings
from service.stats import percentile
from service.store.connections import connect
from service.store.embedded import RedisServer, find_server_binary
from service.tooling.cluster import LocalCluster

T = TypeVar("T")


class _ValuesOnly(Settings):
    """Settings read from the constructor's arguments alone."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def bench_settings(url: str, **values: Any) -> Settings:
    """Settings for a benchmark run: these values and the defaults, never the
    environment or a ``.env`` file. A ``BATCHER_*`` variable of the shell must
    not change what is measured, nor break a run that does not use it."""
    return _ValuesOnly(redis_url=SecretStr(url), **values)


@dataclass
class LagResult:
    """One lag run: ``n`` open batches, how many were delivered, how late.

    ``late``: not delivered within the wait but still stored (it would go
    out later); ``lost``: not delivered and gone from Redis for good.
    """

    variant: str
    n: int
    delivered: int
    lost: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    seconds: float = 0.0  # wall time of the run
    late: int = 0
    # Evidence that the variant is what it claims to be (TTLs seen, scripts
    # run, nudges, polls...) and a breakdown of ``lost``.
    checks: dict[str, Any] = field(default_factory=dict)


def ms_pct(values: Sequence[float], q: float, *, ordered: bool = False, digits: int = 1) -> float:
    """``percentile`` rounded for a table, NaN when there are no values."""
    value = percentile(values, q, ordered=ordered)
    return float("nan") if value is None else round(value, digits)


def lag_result(
    variant: str,
    n: int,
    lags: Sequence[float],
    seconds: float,
    checks: dict[str, Any],
    *,
    late: int = 0,
) -> LagResult:
    ordered = sorted(lags)

    mean = round(sum(ordered) / len(ordered), 1) if ordered else float("nan")
    return LagResult(
        variant,
        n,
        len(ordered),
        n - len(ordered) - late,
        mean,
        ms_pct(ordered, 0.5, ordered=True),
        ms_pct(ordered, 0.9, ordered=True),
        ms_pct(ordered, 0.99, ordered=True),
        round(ordered[-1], 1) if ordered else float("nan"),
        seconds=round(seconds, 1),
        late=late,
        checks=checks,
    )


@contextlib.contextmanager
def bench_server(redis_url: str | None, *, cluster: bool = False) -> Iterator[str]:
    """``redis_url``, or a fresh server with the repo's redis.conf for the run
    (``cluster``: a local Redis Cluster of three primaries, no replicas)."""
    if redis_url:
        yield redis_url
        return
    with tempfile.TemporaryDirectory(prefix="batcher-bench-") as tmp:
        if cluster:
            local = LocalCluster(find_server_binary(), Path(tmp), replicas_per_primary=0)
            local.start()
            try:
                yield local.url
            finally:
                local.stop()
            return
        with RedisServer(data_dir=Path(tmp)) as server:
            yield server.url


@contextlib.asynccontextmanager
async def engine_on(
    url: str, settings: Settings, handler: Handler, *, flush: bool = True
) -> AsyncIterator[Engine]:
    """A started engine on its own client (the database flushed first)."""
    client = await connect(url)
    if flush:
        await client.flushdb()
    engine = Engine(client, settings, handler, shutdown_timeout_s=1)
    await engine.start()
    gc.freeze()  # as ``batcher serve`` does once started
    try:
        yield engine
    finally:
        await engine.stop()
        await client.aclose()


async def infos(client: Redis, section: str) -> list[dict[str, Any]]:
    """``INFO section`` of the server, or of every primary of a cluster."""
    if isinstance(client, RedisCluster):
        found = await client.info(section, target_nodes=RedisCluster.PRIMARIES)
        return list(found.values())
    return [await client.info(section)]


async def redis_cpu_by_primary(client: Redis) -> list[float]:
    """CPU seconds (user + sys) each server has used since it started."""
    return [
        float(i["used_cpu_sys"]) + float(i["used_cpu_user"]) for i in await infos(client, "cpu")
    ]


async def redis_cpu_s(client: Redis) -> float:
    """CPU seconds (user + sys) the server (a cluster's primaries) used since start."""
    return sum(await redis_cpu_by_primary(client))


async def script_calls(client: Redis) -> int:
    """Scripts run so far (EVAL, EVALSHA and their _RO forms, FCALL), all primaries."""
    names = ("eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro")
    return sum(
        int(stats.get(f"cmdstat_{n}", {}).get("calls", 0))
        for stats in await infos(client, "commandstats")
        for n in names
    )


async def command_calls(client: Redis, name: str) -> int:
    stats = await client.info("commandstats")
    return int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))


async def used_memory(client: Redis) -> int:
    info = await client.info("memory")
    return int(info["used_memory"])


async def server_config(client: Redis, *names: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in names:
        got = await client.config_get(name)
        out[name] = str(next(iter(got.values()), ""))
    return out


async def paced(
    n: int, window_s: float, send: Callable[[int, int], Awaitable[None]], *, per_s: int = 200
) -> float:
    """Call ``send(lo, hi)`` over ``range(n)`` in chunks, spread evenly over
    ``window_s`` (``per_s`` chunks a second); returns the seconds it took.
    The chunks share a deadline to the millisecond: 200 a second (5 ms apart)
    spreads the deadlines; 20 a second made clumps of 167 batches at 100 000
    over 30 s, whose claims queue up in Redis behind each other."""
    chunk = max(1, math.ceil(n / max(1.0, window_s * per_s)))
    start = time.monotonic()
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        await send(lo, hi)
        target = start + window_s * hi / n
        await asyncio.sleep(max(0.0, target - time.monotonic()))
    return time.monotonic() - start


async def wait_until(
    predicate: Callable[[], bool], timeout_s: float, tick: Callable[[], None] | None = None
) -> bool:
    """Poll ``predicate`` every 50 ms for up to ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if tick is not None:
            tick()
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)
    if tick is not None:
        tick()
    return True


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> Table:
    """A rich table; the first column left-aligned, the others right-aligned."""
    t = Table(title=title)
    for i, col in enumerate(columns):
        t.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        t.add_row(*(fmt(v) for v in row))
    return t


def fmt(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.1f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def ratio(value: float, base: float) -> str:
    if not base or math.isnan(base) or math.isnan(value):
        return "-"
    return f"{value / base:.0%}"


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop when it is installed, as ``batcher serve`` does
    (uvicorn's ``loop="auto"``), else on asyncio's own loop."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def loop_name() -> str:
    return "uvloop" if loop_factory() is not None else "asyncio"


def write_json(path: str | None, payload: Any) -> None:
    if path:
        Path(path).write_text(json.dumps(payload, indent=2, default=str))


def note(console: Console, text: str) -> None:
    console.print(f"[dim]{text}[/]")
