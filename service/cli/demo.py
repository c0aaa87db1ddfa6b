"""``batcher demo``: the seed scenario end to end, with zero configuration.

A dozen chats each type a little conversation in fragments 1-2 s apart; an
Engine in this process batches them in Redis (an embedded server in a
temporary directory, or ``BATCHER_REDIS_URL``) and hands each closed batch to
a handler that prints it. The demo ends with a summary and exits 0 only when
no message was lost and none was delivered twice.

On a Redis of your own the demo uses a key prefix of its own
(``<prefix>-demo-<run>``, so it never touches a deployment's batches) and
deletes its keys at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import random
import secrets
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from redis.asyncio import Redis
from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from service.cli.console import batch_text, duration
from service.cli.setup import with_settings
from service.engine.engine import Engine
from service.models import Batch, Message
from service.settings import Settings
from service.stats import percentile
from service.store.connections import create_redis
from service.store.keyspace import Keyspace

log = logging.getLogger(__name__)

CONVERSATIONS: tuple[tuple[str, ...], ...] = (
    ("hi", "I need", "to change my order", "#4411"),
    ("hello", "is the store open", "on sunday?"),
    ("hey 👋", "my package", "says delivered", "but it's not here", "order 5523"),
    ("good morning", "can I pay", "with paypal?"),
    ("hi there", "I want to return", "the blue jacket", "size M 🧥"),
    ("yo", "wrong size", "I need an L instead"),
    ("hello!", "do you ship", "to canada 🍁", "and how long does it take?"),
    ("hi", "my promo code", "SPRING20", "isn't working 😕"),
    ("quick question", "is the red one", "back in stock?"),
    ("hey", "I got charged twice", "for order #7781", "can you help?? 🙏"),
    ("hello", "what's the tracking number", "for 6120"),
    ("thanks!!", "got it", "you're the best 🎉"),
)
NAMES = (
    "ana",
    "ben",
    "chloe",
    "dev",
    "emma",
    "femi",
    "gus",
    "hana",
    "ivan",
    "jade",
    "kofi",
    "lena",
)
START_SPREAD_S = 3.0  # chats start within this (times --rate): their batches flush apart
GAP_S = (1.0, 2.0)  # between fragments (times --rate)


@dataclass(frozen=True, slots=True)
class Talk:
    chat_id: str
    texts: tuple[str, ...]
    start_s: float  # from the start of the demo
    gaps_s: tuple[float, ...]  # after each fragment but the last


def plan(chats: int, rate: float, rng: random.Random) -> list[Talk]:
    """``chats`` conversations: the dozen above, shuffled (again for each further dozen)."""
    talks, order = [], []
    for i in range(chats):
        lap, k = divmod(i, len(CONVERSATIONS))
        if k == 0:
            order = rng.sample(range(len(CONVERSATIONS)), len(CONVERSATIONS))
        name = NAMES[k] if lap == 0 else f"{NAMES[k]}{lap + 1}"
        texts = CONVERSATIONS[order[k]]
        gaps = tuple(rng.uniform(*GAP_S) * rate for _ in texts[1:])
        talks.append(Talk(f"wa:demo:{name}", texts, rng.uniform(0, START_SPREAD_S) * rate, gaps))
    return talks


@dataclass
class DemoResult:
    talks: list[Talk]
    sent: dict[str, tuple[str, str]] = field(default_factory=dict)  # message id -> (chat, text)
    batches: list[Batch] = field(default_factory=list)  # as handed to the handler
    lag_ms: list[float] = field(default_factory=list)  # deadline -> handler start
    elapsed_s: float = 0.0
    seed: int = 0

    def delivered(self) -> Counter[str]:
        return Counter(m.id for b in self.batches for m in b.messages)

    @property
    def lost(self) -> int:
        return len(self.sent.keys() - self.delivered().keys())

    @property
    def duplicated(self) -> int:
        return sum(n - 1 for n in self.delivered().values() if n > 1)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0

    def by_chat(self) -> dict[str, list[Batch]]:
        out: dict[str, list[Batch]] = {t.chat_id: [] for t in self.talks}
        for b in self.batches:
            out.setdefault(b.chat_id, []).append(b)
        return out


def show_batch(console: Console, batch: Batch) -> None:
    texts = [m.text if m.text is not None else f"<{m.type}>" for m in batch.messages]
    console.print(batch_text(batch.chat_id, batch.seq, texts, batch.reason, batch.attempt))


async def demo(
    redis_url: str,
    settings: Settings,
    *,
    chats: int = 12,
    idle_ms: int = 3000,
    rate: float = 1.0,
    seed: int | None = None,
    key_prefix: str | None = None,
    console: Console | None = None,
) -> DemoResult:
    """Replay the scenario against ``redis_url``; ``key_prefix`` None: a fresh one, cleaned up."""
    console = console or Console()
    seed = secrets.randbelow(1_000_000) if seed is None else seed
    talks = plan(chats, rate, random.Random(seed))
    result = DemoResult(talks, seed=seed)
    run = secrets.token_hex(3)
    own_prefix = key_prefix is None
    prefix = f"{settings.key_prefix}-demo-{run}" if key_prefix is None else key_prefix
    longest = max((t.start_s + sum(t.gaps_s) for t in talks), default=0.0)
    # One batch per chat: the max wait must not cut a conversation in two.
    max_wait_ms = max(settings.max_wait_ms, 2 * idle_ms + int(longest * 1000) + 1000)
    engine_settings = settings.model_copy(
        update={
            "redis_url": SecretStr(redis_url),
            "idle_ms": idle_ms,
            "max_wait_ms": max_wait_ms,
            "key_prefix": prefix,
        }
    )
    expected = {f"{run}/{t.chat_id}/{i}" for t in talks for i in range(len(t.texts))}
    all_in = asyncio.Event()
    if not expected:
        all_in.set()

    async def handler(batch: Batch) -> None:
        result.batches.append(batch)
        show_batch(console, batch)
        if expected <= result.delivered().keys():
            all_in.set()

    echo = not logging.getLogger("service.engine.batcher").isEnabledFor(logging.DEBUG)

    async def talk(engine: Engine, t: Talk) -> None:
        await asyncio.sleep(t.start_s)
        for i, text in enumerate(t.texts):
            mid = f"{run}/{t.chat_id}/{i}"
            result.sent[mid] = (t.chat_id, text)
            await engine.add(t.chat_id, Message(id=mid, text=text, sent_at=time.time()))
            if echo:  # else the engine's own "appended" lines show it
                console.print(Text.assemble(("  → ", "dim"), (t.chat_id, "cyan"), f"  {text}"))
            if i < len(t.gaps_s):
                await asyncio.sleep(t.gaps_s[i])

    console.print(
        Text.assemble(
            ("batcher demo", "bold"),
            f": {len(talks)} chats, idle {idle_ms} ms, rate x{rate:g}, seed {seed}",
            (f"  (watch it with BATCHER_KEY_PREFIX={prefix})" if own_prefix else "", "dim"),
        )
    )
    redis = create_redis(redis_url)
    engine = Engine(redis, engine_settings, handler, shutdown_timeout_s=5.0)
    started = time.monotonic()
    try:
        await engine.start()
        await asyncio.gather(*(talk(engine, t) for t in talks))
        # After the last fragment: the idle time, plus the sweeper's bound if an event is lost.
        limit_s = (idle_ms + settings.sweep_grace_ms + settings.sweep_interval_ms) / 1000 + 10
        try:
            await asyncio.wait_for(all_in.wait(), limit_s)
        except TimeoutError:
            log.error("demo: not every message was delivered within %.0f s", limit_s)
        result.elapsed_s = time.monotonic() - started
        result.lag_ms = list(engine.stats.flush_lag_ms)
    finally:
        await engine.stop()
        if own_prefix:
            await _delete_keys(redis, Keyspace(prefix, settings.buckets).pattern())
        await redis.aclose()
    console.print(summary(result))
    return result


async def _delete_keys(redis: Redis, pattern: str) -> None:
    batch: list[bytes] = []
    async for key in redis.scan_iter(match=pattern, count=500):
        batch.append(key)
        if len(batch) >= 500:
            await redis.unlink(*batch)
            batch = []
    if batch:
        await redis.unlink(*batch)


def summary(result: DemoResult) -> RenderableType:
    def ms(value: float | None) -> str:
        return "—" if value is None else duration(value)

    def verdict(n: int) -> Text:
        return Text(str(n), style="bold green" if n == 0 else "bold red")

    totals = Table(title="demo summary", box=box.ROUNDED, show_header=False, title_justify="left")
    totals.add_column(style="bold")
    totals.add_column(justify="right")
    totals.add_row("messages in", str(len(result.sent)))
    totals.add_row("batches out", str(len(result.batches)))
    totals.add_row("lost", verdict(result.lost))
    totals.add_row("duplicated", verdict(result.duplicated))
    totals.add_row("flush lag p50", ms(percentile(result.lag_ms, 0.50)))
    totals.add_row("flush lag p99", ms(percentile(result.lag_ms, 0.99)))
    totals.add_row("took", f"{result.elapsed_s:.1f} s")
    chats = Table(title="per chat", box=box.ROUNDED, title_justify="left")
    chats.add_column("chat", style="cyan", no_wrap=True)
    chats.add_column("sent", justify="right")
    chats.add_column("batches", justify="right")
    chats.add_column("what the bot received, one line per batch")
    sent_per_chat = Counter(chat for chat, _ in result.sent.values())
    for chat_id, batches in result.by_chat().items():
        lines = "\n".join(" · ".join(m.text or "" for m in b.messages) for b in batches)
        count = Text(str(len(batches)), style="green" if len(batches) == 1 else "yellow")
        chats.add_row(chat_id, str(sent_per_chat[chat_id]), count, lines)
    verdict_line = (
        Text("✓ every message delivered exactly once", style="bold green")
        if result.ok
        else Text("✗ messages lost or duplicated", style="bold red")
    )
    return Group(Text(), totals, chats, verdict_line)


def add_demo_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "demo", help="replay a dozen chats typing in fragments and show the batches (zero config)"
    )
    p.add_argument("--chats", type=int, default=12, help="conversations (%(default)s)")
    p.add_argument("--idle-ms", type=int, default=3000, help="idle time (%(default)s ms)")
    p.add_argument(
        "--rate", type=float, default=1.0, help="multiplies the 1-2 s gaps (0.1: ten times faster)"
    )
    p.add_argument("--seed", type=int, help="replay the same gaps and order")
    return p


def run_demo(args: argparse.Namespace, settings: Settings, console: Console | None = None) -> int:
    """Exit 0 when nothing was lost or duplicated, 1 otherwise, 130 on Ctrl-C."""
    if args.chats < 1 or args.idle_ms < 1 or args.rate <= 0:
        Console(stderr=True).print("[bold red]error:[/] --chats, --idle-ms, --rate must be > 0")
        return 2
    console = console or Console()
    replay = functools.partial(
        demo, chats=args.chats, idle_ms=args.idle_ms, rate=args.rate, seed=args.seed,
        console=console,
    )  # fmt: skip
    try:
        if settings.redis_url is not None:
            result = asyncio.run(replay(settings.redis_url.get_secret_value(), settings))
        else:
            result = _run_embedded(settings, console, replay, args.idle_ms)
    except KeyboardInterrupt:
        console.print("[yellow]demo interrupted[/]")
        return 130
    return 0 if result.ok else 1


def _run_embedded(
    settings: Settings,
    console: Console,
    replay: Callable[..., Coroutine[None, None, DemoResult]],
    idle_ms: int,
) -> DemoResult:
    """On a server of its own, in a temporary directory (started on the main thread)."""
    from service.store.embedded import RedisServer, find_server_binary

    with tempfile.TemporaryDirectory(prefix="batcher-demo-") as tmp:
        server = RedisServer(find_server_binary(settings.redis_server), data_dir=Path(tmp))
        server.start()
        console.print(
            Text(
                f"embedded {server.binary.name} at {server.url}; watch it from another terminal: "
                f"BATCHER_REDIS_URL={server.url} BATCHER_IDLE_MS={idle_ms} uv run batcher watch",
                style="dim",
            )
        )
        try:
            return asyncio.run(replay(server.url, settings, key_prefix=settings.key_prefix))
        finally:
            server.stop()


def register(subparsers: Any) -> None:
    add_demo_parser(subparsers).set_defaults(run=with_settings(run_demo))
