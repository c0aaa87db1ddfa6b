"""``batcher bench memory``: Redis bytes per batch, and Redis CPU when idle.

Bytes: ``INFO memory`` ``used_memory`` deltas over N batches of 3 messages,
for two message shapes (the generic ``Message(id, text=40 chars)`` and a
WhatsApp text message as the webhook stores it, ``data`` object included):
open (appended by ``Batcher.add_many``), in flight (claimed with the claim
script, not acked) and after the ack (what stays: dedupe entries and the
chat's sequence counter). Next to them, in the same run on the same server:
the payload bytes themselves and the naive design's storage (a list with a
TTL and a timer key). Target: <= 1 KiB per open batch.

CPU: ``INFO cpu`` over a window with N open batches (nothing due), without
an engine (the server's own housekeeping) and with one running (nudger,
sweeper, listener pings). Target: <= 5 % of one core.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass

from redis.asyncio import Redis
from rich.console import Console
from rich.progress import Progress

from service.engine.batcher import Batcher, new_id
from service.models import Batch, Message, channel_json
from service.providers.whatsapp import parse_webhook
from service.settings import Settings
from service.store.connections import connect, create_redis
from service.tooling.bench.common import (
    bench_server,
    bench_settings,
    engine_on,
    note,
    redis_cpu_by_primary,
    run_async,
    table,
    used_memory,
    write_json,
)
from service.tooling.samples import text_webhook

TEXT = "hi, I need to change my order #4411 now"  # 40 characters
PER_BATCH = 3
CHUNK = 3_000
OPEN_TARGET = 1024
CPU_TARGET = 5.0

Shape = Callable[[int, int], tuple[str, Message]]  # (batch, message) -> (chat, message)


def generic(i: int, k: int) -> tuple[str, Message]:
    return f"chat-{i}", Message(id=f"m{i}-{k}", text=TEXT)


def whatsapp(i: int, k: int) -> tuple[str, Message]:
    """A text message exactly as ``POST /webhooks/whatsapp`` stores it."""
    sender = f"5511{i:09d}"
    wamid = f"wamid.HBgNNTUxMT{i:012d}FQIAEhgUM0E{k:04d}QjQzRDFGMEI2QzE3AA=="
    doc = text_webhook(
        [(sender, wamid, TEXT)],
        phone_number_id="200000000000002",
        timestamp=1767225600 + k,
        contact_name="Ana Pereira",
    )
    return parse_webhook(doc).messages[0]


SHAPES: dict[str, Shape] = {"generic (id + 40-char text)": generic, "WhatsApp text": whatsapp}


@dataclass
class MemoryResult:
    shape: str
    batches: int
    payload_bytes: float  # the stored message JSON, per batch
    naive_bytes: float  # the naive design (list + TTL, timer key), per batch
    open_bytes: float
    inflight_bytes: float
    after_ack_bytes: float
    breakdown: dict[str, float]


async def flush(client: Redis) -> None:
    """FLUSHDB SYNC: with lazy freeing (Valkey 8's default for FLUSHDB) memory
    is released in the background, and a baseline taken right after an
    asynchronous flush would still count the previous keys."""
    await client.execute_command("FLUSHDB", "SYNC")  # type: ignore[no-untyped-call]


def settings_for(url: str) -> Settings:
    return bench_settings(url, idle_ms=3_600_000, max_wait_ms=7_200_000)


def channel_part(message: Message) -> bytes:
    """What storing the channel adds to a message's JSON (store/lua/items.lua)."""
    channel = channel_json(message.channel)
    return b',"channel":' + channel if channel else b""


async def per_batch(client: Redis, base: int, n: int) -> float:
    return round((await used_memory(client) - base) / n, 1)


async def measure_shape(
    client: Redis, url: str, name: str, shape: Shape, n: int, progress: Progress
) -> MemoryResult:
    settings = settings_for(url)
    batcher = Batcher(client, settings)
    scripts, keys = batcher.scripts, batcher.keys
    task = progress.add_task(name, total=4 * n)
    sample = [shape(i, k) for i in range(2) for k in range(PER_BATCH)]
    # The stored JSON, and the channel once per batch (the append script adds it).
    payload = sum(len(m.stored_json()) for _, m in sample) / 2
    payload += sum(len(channel_part(m)) for _, m in sample[::PER_BATCH]) / 2

    # Baseline: the naive design's storage for the same messages.
    await flush(client)
    base = await used_memory(client)
    for lo in range(0, n, CHUNK):
        pipe = client.pipeline(transaction=False)
        for i in range(lo, min(n, lo + CHUNK)):
            chat = shape(i, 0)[0]
            for k in range(PER_BATCH):
                message = shape(i, k)[1]  # the whole message, channel included
                pipe.rpush(
                    f"naive:data:{chat}", message.stored_json()[:-1] + channel_part(message) + b"}"
                )
            pipe.pexpire(f"naive:data:{chat}", 60_000)
            pipe.set(f"naive:timer:{chat}", b"1", px=3_600_000)
        await pipe.execute()
        progress.update(task, advance=min(CHUNK, n - lo))
    naive = await per_batch(client, base, n)

    await flush(client)
    await batcher.add_many([shape(n + 1, 0)])  # scripts loaded before the baseline
    await flush(client)
    base = await used_memory(client)
    chats: list[str] = []
    for lo in range(0, n, CHUNK // PER_BATCH):
        items = [
            shape(i, k)
            for i in range(lo, min(n, lo + CHUNK // PER_BATCH))
            for k in range(PER_BATCH)
        ]
        await batcher.add_many(items)
        chats += [c for c, _ in items[::PER_BATCH]]
        progress.update(task, advance=len(items) // PER_BATCH)
    open_bytes = await per_batch(client, base, n)
    breakdown = await key_sizes(client, batcher, chats[:: max(1, n // 200)])

    # In flight: the timers are gone (as when they expire), the claim script
    # takes every batch; nobody acks.
    batch_ids: list[str] = []
    tokens: list[str] = []
    for lo in range(0, n, CHUNK):
        group = chats[lo : lo + CHUNK]
        pipe = client.pipeline(transaction=False)
        for chat in group:
            pipe.delete(keys.chat(chat).timer)
        await pipe.execute()
        ids = [new_id() for _ in group]
        leases = [new_id() for _ in group]
        calls = [
            scripts.claim_call(keys.chat(c), b, t, recovered=False)
            for c, b, t in zip(group, ids, leases, strict=True)
        ]
        got = await scripts.run_many(calls)
        assert all(int(r[0]) == 1 for r in got), "a claim did not take its batch"
        batch_ids += ids
        tokens += leases
        progress.update(task, advance=len(group))
    inflight = await per_batch(client, base, n)

    for lo in range(0, n, CHUNK):
        rows = zip(
            chats[lo : lo + CHUNK], batch_ids[lo : lo + CHUNK], tokens[lo : lo + CHUNK], strict=True
        )
        await scripts.run_many([scripts.ack_call(keys.chat(c), b, t) for c, b, t in rows])
        progress.update(task, advance=min(CHUNK, n - lo))
    after_ack = await per_batch(client, base, n)
    progress.remove_task(task)
    return MemoryResult(name, n, payload, naive, open_bytes, inflight, after_ack, breakdown)


async def key_sizes(client: Redis, batcher: Batcher, chats: list[str]) -> dict[str, float]:
    """MEMORY USAGE of one open batch's keys (averaged over a sample), and of
    its share of the per-bucket sorted sets."""
    out: dict[str, float] = {}
    for kind in ("buf", "meta", "timer"):
        sizes = [
            int(await client.memory_usage(getattr(batcher.keys.chat(c), kind), samples=0) or 0)
            for c in chats
        ]
        out[kind] = round(sum(sizes) / len(sizes), 1)
    total = members = 0
    for bk in batcher.keys.all_buckets():
        total += int(await client.memory_usage(bk.due, samples=0) or 0)
        members += int(await client.zcard(bk.due))
    out["due (per entry)"] = round(total / max(1, members), 1)
    out["seen (per entry)"] = await seen_per_entry(client, batcher)
    return out


async def seen_per_entry(client: Redis, batcher: Batcher) -> float:
    """The dedupe index's bytes per entry: every set of every ring of every
    bucket (each set also holds one tag member, not an entry)."""
    keys = [k for bk in batcher.keys.all_buckets() for ring in bk.seen_rings() for k in ring]
    total = members = 0
    for lo in range(0, len(keys), CHUNK):
        pipe = client.pipeline(transaction=False)
        for key in keys[lo : lo + CHUNK]:
            pipe.memory_usage(key, samples=0)
            pipe.scard(key)
        got = await pipe.execute()
        total += sum(int(b or 0) for b in got[::2])
        members += sum(max(0, int(n) - 1) for n in got[1::2])
    return round(total / max(1, members), 1)


async def idle_cpu(client: Redis, url: str, n: int, seconds: float) -> dict[str, float]:
    """Redis CPU (% of one core) with ``n`` open batches: no engine, then one."""
    await flush(client)
    batcher = Batcher(client, settings_for(url))
    for lo in range(0, n, CHUNK):
        await batcher.add_many([generic(i, 0) for i in range(lo, min(n, lo + CHUNK))])

    out: dict[str, float] = {}

    async def window(state: str) -> None:
        c0 = await redis_cpu_by_primary(client)
        await asyncio.sleep(seconds)
        after = await redis_cpu_by_primary(client)
        cpus = [(c - b) / seconds * 100 for c, b in zip(after, c0, strict=True)]
        out[state] = round(sum(cpus), 2)
        if len(cpus) > 1:  # a cluster: each primary's share too
            out.update({f"{state}, primary {i + 1}": round(c, 2) for i, c in enumerate(cpus)})

    await window(f"no engine, {n:,} open batches (baseline)")

    async def ignore(batch: Batch) -> None:
        return None

    async with engine_on(url, settings_for(url), ignore, flush=False):
        await asyncio.sleep(1.0)  # start-up checks and first sweep done
        await window(f"engine running, {n:,} open batches")
    return out


async def run_memory(
    n: int, seconds: float, redis_url: str | None, console: Console
) -> dict[str, object]:
    results: list[MemoryResult] = []
    with bench_server(redis_url) as url, Progress(console=console, transient=True) as progress:
        client = create_redis(url)
        try:
            for name, shape in SHAPES.items():
                results.append(await measure_shape(client, url, name, shape, n, progress))
            cpu = await idle_cpu(client, url, n, seconds) if seconds > 0 else {}
        finally:
            await flush(client)
            await client.aclose()
    cols = ("shape", "payload", "naive design", "open", "of it dedupe", "in flight", "after ack")
    rows = [
        [
            r.shape,
            r.payload_bytes,
            r.naive_bytes,
            r.open_bytes,
            round(PER_BATCH * r.breakdown["seen (per entry)"]),
            r.inflight_bytes,
            r.after_ack_bytes,
            "met" if r.open_bytes <= OPEN_TARGET else "NOT met",
        ]
        for r in results
    ]
    console.print(
        table(
            f"Redis bytes per batch of {PER_BATCH} messages ({n:,} batches)",
            [*cols, "open target"],
            rows,
        )
    )
    for r in results:
        note(console, f"{r.shape}: one open batch's keys: {json.dumps(r.breakdown)}")
    note(console, f"open target: <= {OPEN_TARGET} bytes; after ack = dedupe entries (kept for "
         "BATCHER_DEDUPE_WINDOW_MS) and the chat's meta hash (sequence number)")  # fmt: skip
    if cpu:
        rows2 = [[k, v, "met" if v <= CPU_TARGET else "NOT met"] for k, v in cpu.items()]
        console.print(
            table(
                f"Redis CPU over {seconds:g} s (% of one core)", ("state", "cpu %", "target"), rows2
            )
        )
    return {"memory": [asdict(r) for r in results], "idle_cpu_pct": cpu}


def memory_main(n: int, seconds: float, redis_url: str | None, json_path: str | None) -> None:
    write_json(json_path, run_async(run_memory(n, seconds, redis_url, Console())))


def idle_main(
    n: int, seconds: float, redis_url: str | None, json_path: str | None, *, cluster: bool = False
) -> None:
    """``batcher bench idle``: just the CPU part (``cluster``: on a local cluster)."""

    async def run() -> dict[str, float]:
        with bench_server(redis_url, cluster=cluster) as url:
            client = await connect(url)
            try:
                cpu = await idle_cpu(client, url, n, seconds)
            finally:
                await client.aclose()
        rows = [[k, v] for k, v in cpu.items()]
        Console().print(
            table(f"Redis CPU over {seconds:g} s (% of one core)", ("state", "cpu %"), rows)
        )
        return cpu

    write_json(json_path, run_async(run()))
