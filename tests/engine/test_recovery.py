"""Fault and recovery tests of the core engine: Redis restarts (AOF, RDB,
under a running engine), a flushed script cache, a worker killed mid-handler
and an engine stopped mid-handler (pitfalls P8, P23, P26 of docs/guarantees.md).

Every test runs real engines against real redis-server processes and checks
that each message is delivered exactly once (the same batch id when a batch
is redelivered), in order, in its own chat.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from service.engine.batcher import Batcher
from service.engine.engine import Engine
from service.errors import RedisUnavailable
from service.models import Batch, Message
from service.settings import Settings
from service.store.backlog import read_backlog
from service.store.embedded import RedisServer
from service.store.scripts import APPEND
from tests.helpers import (
    FAST,
    REPO_ROOT,
    Collector,
    app_client,
    assert_exactly_once,
    fast_settings,
    poll,
    running_engine,
    wait_until,
)

Factory = Callable[..., RedisServer]  # the redis_factory fixture


# --- helpers -----------------------------------------------------------------


def msg(chat: str, i: int) -> Message:
    return Message(id=f"{chat}#{i}", text=f"{chat}:{i}")


def plan(chats: Iterable[str], per_chat: int) -> dict[str, list[str]]:
    return {chat: [f"{chat}:{i}" for i in range(per_chat)] for chat in chats}


async def send(engine: Engine, chats: Iterable[str], per_chat: int) -> dict[str, list[str]]:
    """Append ``per_chat`` messages to every chat, one call each; returns the expected texts."""
    expected = plan(chats, per_chat)
    for chat, texts in expected.items():
        for i in range(len(texts)):
            assert (await engine.add(chat, msg(chat, i))).accepted
    return expected


async def send_many(
    batcher: Batcher, chats: Iterable[str], per_chat: int
) -> tuple[dict[str, list[str]], int]:
    """Append in one round trip; returns the expected texts and the last deadline (ms)."""
    expected = plan(chats, per_chat)
    items = [(chat, msg(chat, i)) for chat in expected for i in range(per_chat)]
    results = await batcher.add_many(items)
    assert all(r.accepted for r in results)
    return expected, max(r.deadline_ms for r in results)


async def index_sizes(client: Redis, engine: Engine | Batcher) -> tuple[int, int]:
    """(chats due, batches in flight) over every bucket."""
    backlog = await read_backlog(client, engine.keys)
    return backlog.open, backlog.inflight


async def assert_drained(client: Redis, engine: Engine) -> None:
    """Nothing left due, in flight or claimed: no later (duplicate) delivery can happen."""

    async def drained() -> bool:
        return await index_sizes(client, engine) == (0, 0)

    await poll(drained, 5.0)
    assert [k async for k in client.scan_iter(match=b"batcher:*:proc:*")] == []
    assert [k async for k in client.scan_iter(match=b"batcher:*:buf:*")] == []


def client_for(url: str) -> Redis:
    """A test client that survives a server restart: redis-py 8's pooled
    connections are not checked for EOF before reuse, so without a retry the
    first command on each one fails after a restart."""
    return Redis.from_url(url, retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), 3))


async def subscribed(engine: Engine) -> None:
    await wait_until(lambda: engine.listener is not None and engine.listener.subscribed, 10.0)


async def server_ms(client: Redis) -> int:
    sec, usec = await client.time()
    return int(sec) * 1000 + int(usec) // 1000


@contextlib.asynccontextmanager
async def engine_on(
    client: Redis, settings: Settings, handler: Any, shutdown_timeout_s: float = 2.0
) -> AsyncIterator[Engine]:
    engine = Engine(client, settings, handler, shutdown_timeout_s=shutdown_timeout_s)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()


# --- Redis restarts ----------------------------------------------------------------


async def test_restart_with_aof_delivers_every_batch_once(redis_factory: Factory) -> None:
    """P8, AOF: 20 open batches, engine stopped, server shut down cleanly
    (SIGTERM flushes the AOF) and kept down past every deadline, then started
    again: a fresh engine delivers all 20 batches once, in order."""
    server = redis_factory()
    client = client_for(server.url)
    try:
        first = Collector()
        async with running_engine(server.url, first, idle_ms=300) as engine:
            chats = [f"aof-{n}" for n in range(20)]
            expected, last_deadline_ms = await send_many(engine.batcher, chats, 3)
        assert first.batches == []  # stopped before any deadline
        assert await index_sizes(client, engine) == (20, 0)

        server.stop()  # SIGTERM: clean shutdown, AOF flushed
        # Keep the server down past every deadline (time is the subject).
        await asyncio.sleep(max(0.0, last_deadline_ms / 1000 - time.time()) + 0.3)
        server.start()
        assert await index_sizes(client, engine) == (20, 0)  # the index survived

        collector = Collector()
        async with running_engine(server.url, collector, idle_ms=300) as engine:
            await collector.wait_messages(60, timeout_s=10)
            await assert_drained(client, engine)
            assert_exactly_once(collector, expected)
            assert len(collector.batches) == 20
            assert engine.stats.delivered == 20
            assert {b.reason for b in collector.batches} <= {"idle", "recovered"}
    finally:
        await client.aclose()


async def test_restart_with_rdb_only_recovers_by_sweeper(redis_factory: Factory) -> None:
    """P8, RDB: a snapshot taken while 20 batches are open, then a crash
    (SIGKILL) and a restart past their deadlines. RDB load drops the expired
    timers silently, so no event will ever come: the sweeper recovers all 20."""
    server = redis_factory(extra_args=("--appendonly", "no", "--save", ""))
    client = client_for(server.url)
    try:
        async with running_engine(server.url, Collector(), idle_ms=300) as engine:
            chats = [f"rdb-{n}" for n in range(20)]
            expected, last_deadline_ms = await send_many(engine.batcher, chats, 3)
        assert await client.save()
        server.stop(kill=True)  # a crash; only the snapshot remains
        # Keep the server down past every deadline (time is the subject).
        await asyncio.sleep(max(0.0, last_deadline_ms / 1000 - time.time()) + 0.3)
        server.start()
        assert await index_sizes(client, engine) == (20, 0)
        timers = [engine.keys.chat(c).timer for c in chats]
        assert await client.exists(*timers) == 0  # dropped at load, without events

        collector = Collector()
        async with running_engine(server.url, collector, idle_ms=300) as engine:
            await collector.wait_messages(60, timeout_s=10)
            await assert_drained(client, engine)
            assert_exactly_once(collector, expected)
            assert engine.stats.recovered == 20
            assert engine.stats.events == 0
            assert {b.reason for b in collector.batches} == {"recovered"}
    finally:
        await client.aclose()


async def test_redis_restart_under_a_running_engine(redis_factory: Factory) -> None:
    """The server restarts (SIGTERM, start on the same port) while the engine
    keeps running, with one batch mid-handler and ten batches still open.
    Adds during the outage raise RedisUnavailable and store nothing; the
    held batch's ack waits for Redis; the engine reconnects by itself and
    delivers everything once."""
    server = redis_factory()
    # Retries a little, and fails fast while the server is down.
    client = client_for(server.url)
    collector = Collector()
    entered, gate = asyncio.Event(), asyncio.Event()

    async def handler(batch: Batch) -> None:
        if batch.chat_id == "held":
            entered.set()
            await gate.wait()
        await collector(batch)

    try:
        async with engine_on(client, fast_settings(server.url, idle_ms=300), handler) as engine:
            await subscribed(engine)
            expected = await send(engine, ["held"], 2)
            await asyncio.wait_for(entered.wait(), 5)
            expected |= await send(engine, [f"live-{n}" for n in range(10)], 3)

            server.stop()  # SIGTERM
            with pytest.raises(RedisUnavailable):
                await engine.add("outage", msg("outage", 0))
            gate.set()  # the held handler returns: its ack has no Redis to go to
            await collector.wait_for(lambda: "held" in collector.by_chat(), 5)
            await asyncio.sleep(0.5)  # keep Redis down past the deadlines: time is the subject
            assert collector.message_count() == 2  # only the held batch, not acked yet
            server.start()

            expected |= await send(engine, ["outage"], 1)  # the failed add stored nothing
            await collector.wait_messages(2 + 30 + 1, timeout_s=10)
            await assert_drained(client, engine)
            assert_exactly_once(collector, expected)
            (held,) = collector.by_chat()["held"]
            assert held.attempt == 1
            assert engine.stats.redelivered == 0
            await subscribed(engine)
            assert engine.stats.subscribes >= 2
    finally:
        await client.aclose()


# --- the script cache ---------------------------------------------------------------


async def test_script_flush_between_adds_and_during_a_burst(
    redis_url: str, redis_client: Redis
) -> None:
    """P23: the script cache is lost (SCRIPT FLUSH) between adds and many
    times during a burst of 200 concurrent adds: every add succeeds (EVALSHA
    falls back to loading the script) and everything is delivered once."""
    collector = Collector()
    async with running_engine(redis_url, collector) as engine:
        for i in range(3):
            await redis_client.script_flush()
            assert await redis_client.script_exists(APPEND.sha) == [False]
            assert (await engine.add("between", msg("between", i))).accepted
            assert await redis_client.script_exists(APPEND.sha) == [True]
        expected = plan(["between"], 3)

        chats = [f"burst-{n}" for n in range(20)]
        flushes, added = 0, 0
        failed: list[BaseException] = []

        async def chat_adds(chat: str) -> None:
            nonlocal flushes, added
            for i in range(10):
                for _ in range(20):  # a failed add is retried (idempotent by id)
                    try:
                        assert (await engine.add(chat, msg(chat, i))).accepted
                        break
                    except RedisUnavailable as exc:
                        failed.append(exc)
                added += 1
                if added % 10 == 0:  # 20 flushes spread over the burst
                    await redis_client.script_flush()
                    flushes += 1

        await asyncio.gather(*(chat_adds(c) for c in chats))
        expected |= plan(chats, 10)
        assert flushes == 20
        assert not failed, f"{len(failed)} adds failed (of 200): {failed[0]}"
        await collector.wait_messages(3 + 200, timeout_s=10)
        await assert_drained(redis_client, engine)
        assert_exactly_once(collector, expected)


# --- workers that die or stop mid-handler -------------------------------------------


async def test_worker_killed_mid_handler_is_redelivered_after_lease(
    redis_url: str, redis_client: Redis, tmp_path: Path
) -> None:
    """P26: a worker process claims a batch and is SIGKILLed inside its
    handler. Once the lease (1 s) runs out, another engine redelivers the
    same batch (same id, attempt 2, same messages), exactly once."""
    lease_ms = 1000
    marker = "test:worker:marker"
    batcher = Batcher(redis_client, fast_settings(redis_url, lease_ms=lease_ms))
    ck = batcher.keys.chat("crashy")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    with (tmp_path / "worker.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "service.tooling.bench.worker", redis_url),
            *("--hang-marker", marker, "--set", f"lease_ms={lease_ms}"),
            *(f"--set={name}={value}" for name, value in FAST.items() if name != "lease_ms"),
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        expected = plan(["crashy"], 3)
        for i in range(3):
            assert (await batcher.add("crashy", msg("crashy", i))).accepted

        async def in_handler() -> bool:
            assert proc.returncode is None, (tmp_path / "worker.log").read_text()
            return bool(await redis_client.exists(marker))

        await poll(in_handler, 20.0)
        os.kill(proc.pid, signal.SIGKILL)
        assert await asyncio.wait_for(proc.wait(), 5) == -signal.SIGKILL
        seen = {k.decode(): v.decode() for k, v in (await redis_client.hgetall(marker)).items()}
        assert seen["attempt"] == "1"
        assert json.loads(seen["ids"]) == [f"crashy#{i}" for i in range(3)]
        # Still leased to the dead worker: nobody may take it before the lease runs out.
        lease_deadline = await redis_client.zscore(ck.bucket.inflight, "crashy")
        assert lease_deadline is not None and lease_deadline > await server_ms(redis_client)

        collector = Collector()
        delivered_at: list[float] = []

        async def handler(batch: Batch) -> None:
            delivered_at.append(time.time() * 1000)
            await collector(batch)

        async with running_engine(redis_url, handler, lease_ms=lease_ms) as engine:
            await collector.wait_for(lambda: len(collector.batches) >= 1, timeout_s=10)
            await assert_drained(redis_client, engine)
            assert_exactly_once(collector, expected)
            (batch,) = collector.batches
            assert batch.batch_id == seen["batch_id"]
            assert batch.attempt == 2
            assert [m.id for m in batch.messages] == json.loads(seen["ids"])
            assert delivered_at[0] >= lease_deadline  # not taken before the lease ran out
            assert engine.stats.redelivered == 1
            assert engine.stats.claimed == 0
    finally:
        if proc.returncode is None:
            proc.kill()
        await asyncio.wait_for(proc.wait(), 5)


async def test_graceful_stop_mid_handler_releases_the_batch(
    redis_url: str, redis_client: Redis
) -> None:
    """engine.stop() while a handler hangs: after the shutdown timeout the
    handler is cancelled and its batch released (lease set to now), so a
    second engine redelivers it at once (same batch id, attempt 2), not
    after the 10 s lease."""
    lease_ms = 10_000
    entered = asyncio.Event()
    given: list[Batch] = []

    async def hangs(batch: Batch) -> None:
        given.append(batch)
        entered.set()
        await asyncio.Event().wait()

    client = Redis.from_url(redis_url)
    try:
        settings = fast_settings(redis_url, lease_ms=lease_ms)
        first = Engine(client, settings, hangs, shutdown_timeout_s=0.2)
        await first.start()
        try:
            expected = await send(first, ["stopper"], 3)
            await asyncio.wait_for(entered.wait(), 5)
        finally:
            t0 = time.monotonic()
            await first.stop()
            stop_took = time.monotonic() - t0
        assert stop_took < 1.5
        (claimed,) = given
        ck = first.keys.chat("stopper")
        lease_deadline = await redis_client.zscore(ck.bucket.inflight, "stopper")
        assert lease_deadline is not None and lease_deadline <= await server_ms(redis_client)
        assert (await redis_client.hget(ck.meta, "batch")).decode() == claimed.batch_id

        collector = Collector()
        async with running_engine(redis_url, collector, lease_ms=lease_ms) as second:
            t1 = time.monotonic()
            await collector.wait_for(lambda: len(collector.batches) >= 1, timeout_s=5)
            assert time.monotonic() - t1 < lease_ms / 1000 / 4
            await assert_drained(redis_client, second)
            assert_exactly_once(collector, expected)
            (batch,) = collector.batches
            assert batch.batch_id == claimed.batch_id
            assert batch.attempt == 2
            assert [m.id for m in batch.messages] == [m.id for m in claimed.messages]
            assert second.stats.redelivered == 1
    finally:
        await client.aclose()


async def test_requests_after_a_redis_restart_are_accepted(redis_factory: Factory) -> None:
    """The HTTP app builds its own client (service/app.py). After Redis
    restarts, the connections in its pool are dead; webhooks that arrive once
    Redis is back (and the engine has resubscribed) must be stored (202),
    not refused with 503."""
    server = redis_factory()
    collector = Collector()

    async def post_all(http: Any, chats: list[str], i: int) -> list[int]:
        async def one(chat: str) -> int:
            body = {"chat_id": chat, "id": f"{chat}#{i}", "text": f"{chat}:{i}"}
            return int((await http.post("/v1/messages", json=body)).status_code)

        return list(await asyncio.gather(*(one(c) for c in chats)))

    chats = [f"web-{n}" for n in range(20)]
    async with app_client(server.url, collector, idle_ms=300) as (http, engine):
        assert await post_all(http, chats, 0) == [202] * 20  # 20 pooled connections
        server.restart()  # SIGTERM, start again on the same port: Redis is back
        await wait_until(lambda: engine.stats.subscribes >= 2, 10.0)
        await subscribed(engine)
        statuses = await post_all(http, chats, 1)
        assert statuses == [202] * 20, f"{statuses.count(503)} of 20 requests refused"
        await collector.wait_messages(40, timeout_s=10)
        assert_exactly_once(collector, plan(chats, 2))
