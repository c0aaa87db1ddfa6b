"""``batcher bench ingest``: messages/s through ``Batcher.add``, next to the
server's own limit.

- **Python API**: C concurrent asyncio producers call ``batcher.add`` for N
  messages (unique ids, so deduplication runs) spread at random over K chats.
- **redis-benchmark**: the same append script, by EVALSHA, with the same
  arguments and key pattern (``__rand_int__`` with ``-r K`` picks the chat),
  the same number of connections; once with one call in flight per
  connection, once pipelined (``-P``): the physical limit of this Redis on
  this machine. Target: the Python API at >= 50 % of the pipelined rate.

Redis's own CPU is shown for every run: a run that leaves Redis idle part
of the time is bound by its client, not by the server.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.asyncio import Redis
from rich.console import Console
from rich.progress import Progress

from service.engine.batcher import Batcher
from service.engine.coalescer import Coalescer
from service.models import Message
from service.settings import Settings
from service.store.connections import create_redis
from service.store.keyspace import Keyspace, SeenEntry
from service.store.runner import Call
from service.store.scripts import APPEND, Scripts
from service.tooling.bench.common import (
    bench_server,
    bench_settings,
    note,
    redis_cpu_s,
    run_async,
    table,
    write_json,
)

TEXT = "hi, I need to change my order #4411 now"  # 40 characters
TARGET = 0.5


@dataclass(frozen=True)
class IngestOptions:
    n: int = 200_000
    producers: int = 64
    chats: int = 10_000
    pipeline: int = 16
    no_coalesce: bool = False


@dataclass
class IngestResult:
    client: str
    messages: int
    seconds: float
    per_s: float
    redis_cpu_pct: float  # of one core, over the run
    connections: int
    calls_per_round_trip: float
    detail: dict[str, Any] = field(default_factory=dict)


class CountingScripts(Scripts):
    """Scripts that count what each round trip carried (for the table)."""

    round_trips = 0
    calls = 0

    async def run_many(self, calls: Sequence[Call], **kwargs: Any) -> list[Any]:
        self.round_trips += 1
        self.calls += len(calls)
        return await super().run_many(calls, **kwargs)


class OneTripPerCall(Coalescer):
    """No coalescing: every ``add`` is its own round trip."""

    async def run(self, calls: list[Call]) -> list[Any]:
        return await self.scripts.run_many(calls, durable=True)


def settings_for(url: str) -> Settings:
    # Nothing closes during the run: only appends are measured.
    return bench_settings(url, idle_ms=3_600_000, max_wait_ms=7_200_000)


async def run_python(
    url: str, opts: IngestOptions, coalesce: bool, progress: Progress
) -> IngestResult:
    client = create_redis(url)
    try:
        settings = settings_for(url)
        batcher = Batcher(client, settings)
        scripts = CountingScripts(client, batcher.keys, settings)
        batcher.coalescer = Coalescer(scripts) if coalesce else OneTripPerCall(scripts)
        await batcher.add_many([(f"warm-{i}", f"w{i}") for i in range(1000)])  # load scripts
        await client.flushdb()
        scripts.round_trips = scripts.calls = 0
        chats = [f"ingest-{k}" for k in range(opts.chats)]
        counter = itertools.count()
        done = 0
        label = "Batcher.add" + ("" if coalesce else " (no coalescing)")
        task = progress.add_task(label, total=opts.n)

        async def producer(seed: int) -> None:
            nonlocal done
            rnd = random.Random(seed)
            while (i := next(counter)) < opts.n:
                await batcher.add(chats[rnd.randrange(opts.chats)], Message(id=f"m{i}", text=TEXT))
                done += 1
                if not done % 2000:
                    progress.update(task, completed=done)

        cpu0, t0 = await redis_cpu_s(client), time.perf_counter()
        await asyncio.gather(*(producer(p) for p in range(opts.producers)))
        seconds = time.perf_counter() - t0
        cpu = await redis_cpu_s(client) - cpu0
        progress.remove_task(task)
        conns = int((await client.info("clients"))["connected_clients"]) - 1
        stored = await count_appended(client)
        return IngestResult(
            label + f", {opts.producers} producers",
            opts.n,
            round(seconds, 2),
            round(opts.n / seconds),
            round(cpu / seconds * 100, 1),
            conns,
            round(scripts.calls / max(1, scripts.round_trips), 1),
            {"messages_stored": stored, "round_trips": scripts.round_trips},
        )
    finally:
        await client.aclose()


def benchmark_command(url: str, opts: IngestOptions, pipeline: int) -> list[str]:
    """redis-benchmark running the append script exactly as ``Batcher.add``
    does: the call is built by the service's own ``append_call``, with
    ``__rand_int__`` (a random number below ``-r K``) in the chat id."""
    settings = settings_for(url)
    keyspace = Keyspace.of(settings)
    chat = "ingest-__rand_int__"
    # A unique dedupe entry per call (K * K combinations): the check must
    # miss, as it does for the Python producers. The service's entries are
    # 63-bit integers (an intset); these 24 digits are not one, so the
    # benchmark's sets are hash tables, whose adds cost no more.
    member = "__rand_int____rand_int__"
    payload = Message(id="m000000000000", text=TEXT).stored_json()
    scripts = Scripts(create_redis(url), keyspace, settings)
    script, keys, args = scripts.append_call(
        keyspace.chat(chat), SeenEntry(shard=0, digest=0), payload
    )
    args = (args[0], member, *args[2:])
    words = [a.decode() if isinstance(a, bytes) else str(a) for a in (*keys, *args)]
    return [
        *("redis-benchmark", "-u", url, "-c", str(opts.producers), "-n", str(opts.n)),
        *("-r", str(opts.chats), "-P", str(pipeline), "--csv"),
        *("EVALSHA", script.sha, str(len(keys)), *words),
    ]


async def run_benchmark(url: str, opts: IngestOptions, pipeline: int) -> IngestResult | None:
    exe = shutil.which("redis-benchmark")
    if exe is None:
        return None
    client = create_redis(url)
    try:
        await client.flushdb()
        await client.script_load(APPEND.source)
        cmd = benchmark_command(url, opts, pipeline)
        cmd[0] = exe
        cpu0, t0 = await redis_cpu_s(client), time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        out, err = await proc.communicate()
        seconds = time.perf_counter() - t0
        cpu = await redis_cpu_s(client) - cpu0
        rate = parse_rps(out.decode())
        if proc.returncode != 0 or rate is None:
            raise RuntimeError(f"redis-benchmark failed: {err.decode()[-500:]}")
        appended = await count_appended(client)
        return IngestResult(
            f"redis-benchmark EVALSHA append, -c {opts.producers} -P {pipeline}",
            opts.n,
            round(opts.n / rate, 2),
            round(rate),
            round(cpu / seconds * 100, 1),
            opts.producers,
            float(pipeline),
            {"messages_stored": appended},
        )
    finally:
        await client.aclose()


def parse_rps(csv: str) -> float | None:
    """The rate from ``redis-benchmark --csv``: the first of the seven numbers
    ending the data line (the test name holds the payload's own quotes)."""
    for line in csv.splitlines():
        m = re.search(r'"([\d.]+)"(?:,"[\d.]+"){6}\s*$', line)
        if m:
            return float(m.group(1))
    return None


async def count_appended(client: Redis) -> int:
    """Messages stored by a run: the length of every buf list (proof that the
    benchmark's calls appended, rather than failing or deduplicating)."""
    total = 0
    async for key in client.scan_iter(match="*:buf:*", count=1000):
        total += int(await client.llen(key))
    return total


async def run_ingest(opts: IngestOptions, redis_url: str | None, console: Console) -> list[Any]:
    results: list[IngestResult] = []
    with bench_server(redis_url) as url, Progress(console=console, transient=True) as progress:
        limit = await run_benchmark(url, opts, opts.pipeline)
        single = await run_benchmark(url, opts, 1)
        results += [r for r in (limit, single) if r is not None]
        results.append(await run_python(url, opts, True, progress))
        if opts.no_coalesce:
            results.append(await run_python(url, opts, False, progress))
    base = limit.per_s if limit is not None else 0.0
    rows = [
        [
            r.client,
            r.messages,
            r.per_s,
            f"{r.per_s / base:.0%}" if base else "-",
            r.redis_cpu_pct,
            r.connections,
            r.calls_per_round_trip,
        ]
        for r in results
    ]
    cols = ("client", "messages", "msgs/s", "vs limit", "Redis CPU %", "conns", "calls/trip")
    console.print(table(f"ingest: {opts.chats:,} chats, append script", cols, rows))
    if limit is None:
        note(console, "redis-benchmark is not installed (apt-get install redis-tools): no limit")
    else:
        python = next(r for r in results if r.client.startswith("Batcher.add,"))
        met = "met" if python.per_s >= TARGET * base else "NOT met"
        note(
            console,
            f"target: Batcher.add >= {TARGET:.0%} of the pipelined redis-benchmark rate: {met} "
            f"({python.per_s / base:.0%}). Same server, same script, same arguments.",
        )
    return [asdict(r) for r in results]


def ingest_main(opts: IngestOptions, redis_url: str | None, json_path: str | None) -> None:
    write_json(json_path, run_async(run_ingest(opts, redis_url, Console())))
