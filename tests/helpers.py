"""Shared test helpers: fast settings, a recording handler, engines."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from service.engine.engine import Engine
from service.models import Batch
from service.settings import Settings
from service.store.connections import create_redis
from service.store.keyspace import Keyspace, seen_entry
from service.tooling.samples import text_webhook

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT / "tests" / "fixtures"

# Chat ids that try to escape their keys or their bucket's hash slot.
HOSTILE = [
    "plain",
    "wa:1055:4479",
    "{b0}",
    "}{",
    "{",
    "}",
    "a}:timer:b",
    ":timer:",
    "x" * 1024,
    "emoji 😀 \u00e9\u4e2d",
    "spaces and\ttabs\nnewline",
    "P:{b3}:buf:evil",
    "\x00nul",
]

FAST: dict[str, Any] = {
    "idle_ms": 150,
    "max_wait_ms": 3_000,
    "nudge_interval_ms": 5,
    "sweep_interval_ms": 200,
    "sweep_grace_ms": 300,
    "listener_ping_ms": 100,
    "listener_dead_ms": 1_000,
    "retry_base_ms": 20,
    "retry_max_ms": 100,
    "lease_ms": 3_000,
    "owner_lease_ms": 300,
}


def fast_settings(redis_url: str, **overrides: Any) -> Settings:
    return Settings(redis_url=redis_url, **{**FAST, **overrides})


class Collector:
    """A handler that records every batch it is given and can be awaited."""

    def __init__(self, fail: Callable[[Batch], bool] | None = None) -> None:
        self.batches: list[Batch] = []
        self.calls: list[Batch] = []  # every call, failed ones too
        self.fail = fail
        self._changed = asyncio.Condition()

    async def __call__(self, batch: Batch) -> None:
        async with self._changed:
            self.calls.append(batch)
            self._changed.notify_all()
        if self.fail is not None and self.fail(batch):
            raise RuntimeError(f"handler refused batch {batch.batch_id}")
        async with self._changed:
            self.batches.append(batch)
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout_s)

    async def wait_messages(self, n: int, timeout_s: float = 10.0) -> None:
        await self.wait_for(lambda: self.message_count() >= n, timeout_s)

    def message_count(self) -> int:
        return sum(len(b.messages) for b in self.batches)

    def by_chat(self) -> dict[str, list[Batch]]:
        out: dict[str, list[Batch]] = {}
        for b in self.batches:
            out.setdefault(b.chat_id, []).append(b)
        return out

    def texts(self, chat_id: str) -> list[str | None]:
        return [m.text for b in self.by_chat().get(chat_id, []) for m in b.messages]


@contextlib.asynccontextmanager
async def running_engine(redis_url: str, handler: Any, **overrides: Any) -> AsyncIterator[Engine]:
    client = create_redis(redis_url)
    engine = Engine(client, fast_settings(redis_url, **overrides), handler, shutdown_timeout_s=2)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()
        await client.aclose()


async def poll(check: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    """Poll a server-side state that no event announces (an async check)."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError("server-side condition not met in time")
        await asyncio.sleep(0.01)


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll a condition that no event announces (e.g. a server-side state)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def app_client(
    redis_url: str, handler: Any, **overrides: Any
) -> AsyncIterator[tuple[Any, Engine]]:
    """The real Starlette app, lifespan included, behind an httpx client."""
    import httpx

    from service.web.app import create_app

    app = create_app(fast_settings(redis_url, **overrides), handler=handler)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://batcher") as client:
            yield client, app.state.batcher.engine


def wa_text_payload(messages: list[tuple[str, str, str]]) -> dict[str, Any]:
    """A WhatsApp Cloud API webhook document of text messages (sender, wamid, text)."""
    return text_webhook(messages, phone_number_id="200")


def assert_exactly_once(collector: Collector, expected: dict[str, list[str]]) -> None:
    """Every expected message delivered once, in order, in its chat; nothing else.
    Message ids must start with ``<chat>#``."""
    assert set(collector.by_chat()) == set(expected)
    for chat, texts in expected.items():
        assert collector.texts(chat) == texts, chat
    ids = [m.id for b in collector.batches for m in b.messages]
    assert len(ids) == len(set(ids)), "a message was delivered twice"
    batch_ids = [b.batch_id for b in collector.batches]
    assert len(batch_ids) == len(set(batch_ids)), "a batch was delivered twice"
    for b in collector.batches:
        assert all(m.id.startswith(f"{b.chat_id}#") for m in b.messages), b


async def crash(engine: Any) -> None:
    """What a SIGKILL leaves of an engine's process: none of its loops, listeners
    or workers run any more, and it says goodbye to nobody."""
    engine.stopping.set()  # the loops end at their next turn, even mid-sleep
    tasks = [*engine._tasks, *engine._workers]
    if engine.listeners is not None:
        tasks += [n.task for n in engine.listeners.nodes.values()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    engine._tasks, engine._workers = [], []


async def is_seen(redis: Any, keys: Keyspace, chat_id: str, message_id: str) -> bool:
    """Whether the dedupe index holds the message (in any slot of its ring)."""
    entry = seen_entry(chat_id, message_id)
    pipe = redis.pipeline(transaction=False)
    for key in keys.chat(chat_id).bucket.seen_ring(entry.shard):
        pipe.sismember(key, entry.digest)
    return any(await pipe.execute())


async def seen_total(redis: Any, keys: Keyspace) -> int:
    """Entries in the dedupe index (each non-empty set also holds its slot's tag)."""
    pipe = redis.pipeline(transaction=False)
    for bk in keys.all_buckets():
        for ring in bk.seen_rings():
            for key in ring:
                pipe.scard(key)
    return sum(max(0, n - 1) for n in await pipe.execute())
