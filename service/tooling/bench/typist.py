"""``batcher bench typing``: how often a slow typist's messages are split,
with and without typing events.

Simulated users each send a few messages; before every message after the
first they type for a while, some of them longer than the idle timeout (a
slow typist). Both variants run the same conversations (same seed) on the
same server, one after the other:

- ``no typing events``: only the messages (what Meta's Cloud API gives us);
- ``typing events``: the gateway's presence events too (Evolution, WAHA): a
  typing event when the user starts and every ``refresh_ms`` while typing,
  a pause after the last message.

Split rate = conversations delivered in more than one batch. The price of
holding: the time from a conversation's last message to its delivery.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import asdict, dataclass

from rich.console import Console

from service.models import Batch
from service.store.connections import connect
from service.tooling.bench.common import (
    bench_server,
    bench_settings,
    engine_on,
    ms_pct,
    note,
    run_async,
    table,
    wait_until,
    write_json,
)


@dataclass(frozen=True, slots=True)
class TypistOptions:
    users: int = 200
    messages: int = 4  # per user
    idle_ms: int = 300
    typing_ms: int = 600
    refresh_ms: int = 200  # how often a gateway repeats "typing" while the user types
    typing_min_ms: int = 100  # each message takes this long to type ...
    typing_max_ms: int = 700  # ... up to this: above idle_ms it is split without typing events
    seed: int = 7


@dataclass(frozen=True, slots=True)
class TypistRow:
    variant: str
    users: int
    split: int  # conversations delivered in more than one batch
    split_rate: float  # split / users
    batches_per_user: float
    last_to_delivery_p50_ms: float
    last_to_delivery_p99_ms: float
    lost: int


def plans(opts: TypistOptions) -> list[list[float]]:
    """Per user, how long each message after the first takes to type (seconds)."""
    rng = random.Random(opts.seed)
    lo, hi = opts.typing_min_ms, opts.typing_max_ms
    return [
        [rng.uniform(lo, hi) / 1000 for _ in range(opts.messages - 1)] for _ in range(opts.users)
    ]


async def run_variant(url: str, opts: TypistOptions, variant: str) -> TypistRow:
    typing = variant == "typing events"
    settings = bench_settings(
        url, idle_ms=opts.idle_ms, typing_ms=opts.typing_ms, max_wait_ms=60_000
    )
    got: dict[str, list[tuple[float, Batch]]] = {}
    last_sent: dict[str, float] = {}

    async def handler(batch: Batch) -> None:
        got.setdefault(batch.chat_id, []).append((time.monotonic(), batch))

    async with engine_on(url, settings, handler) as engine:
        batcher = engine.batcher

        async def user(n: int, plan: list[float]) -> None:
            chat = f"typist:{variant[:2]}:{n}"
            await batcher.add(chat, "message 0")
            for i, typing_s in enumerate(plan, start=1):
                end = time.monotonic() + typing_s
                while typing and time.monotonic() < end:
                    await batcher.typing(chat)
                    await asyncio.sleep(min(opts.refresh_ms / 1000, end - time.monotonic()))
                await asyncio.sleep(max(0.0, end - time.monotonic()))
                await batcher.add(chat, f"message {i}")
            last_sent[chat] = time.monotonic()
            if typing:
                await batcher.typing(chat, typing=False)

        await asyncio.gather(*(user(n, p) for n, p in enumerate(plans(opts))))
        want = opts.users * opts.messages

        def delivered() -> int:
            return sum(len(b.messages) for batches in got.values() for _, b in batches)

        await wait_until(lambda: delivered() >= want, 30.0)
    lags = sorted(
        (max(at for at, _ in batches) - last_sent[chat]) * 1000
        for chat, batches in got.items()
        if chat in last_sent
    )
    split = sum(len(batches) > 1 for batches in got.values())
    return TypistRow(
        variant,
        opts.users,
        split,
        split / opts.users,
        sum(len(b) for b in got.values()) / opts.users,
        ms_pct(lags, 0.5, ordered=True),
        ms_pct(lags, 0.99, ordered=True),
        want - delivered(),
    )


async def run_typist(
    opts: TypistOptions, redis_url: str | None, console: Console
) -> list[TypistRow]:
    rows = []
    with bench_server(redis_url) as url:
        for variant in ("no typing events", "typing events"):
            rows.append(await run_variant(url, opts, variant))
        client = await connect(url)
        await client.flushdb()
        await client.aclose()
    console.print(
        table(
            f"{opts.users} slow typists, {opts.messages} messages each: idle "
            f"{opts.idle_ms} ms, typing {opts.typing_min_ms}-{opts.typing_max_ms} ms per "
            f"message, typing window {opts.typing_ms} ms",
            (
                "variant",
                "split",
                "split rate",
                "batches/user",
                "last msg → delivery p50 ms",
                "p99 ms",
                "lost",
            ),
            [
                (
                    r.variant,
                    r.split,
                    f"{r.split_rate:.0%}",
                    r.batches_per_user,
                    r.last_to_delivery_p50_ms,
                    r.last_to_delivery_p99_ms,
                    r.lost,
                )
                for r in rows
            ],
        )
    )
    note(
        console,
        "with typing events a batch waits while its user types (never beyond the max wait); "
        "the pause after the last message puts it back on the idle timer",
    )
    return rows


def typist_main(opts: TypistOptions, redis_url: str | None, json_path: str | None) -> None:
    rows = run_async(run_typist(opts, redis_url, Console()))
    write_json(json_path, {"typing": [asdict(r) for r in rows]})
