"""Dead-lettered batches: list, show, replay (exactly once, in order), drop, CLI."""

from __future__ import annotations

import argparse
import asyncio
import io
import time
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from rich.console import Console

from service.cli.dead import (
    add_dead_parser,
    count_dead,
    drop_all,
    drop_dead,
    list_dead,
    replay_all,
    replay_dead,
    run_dead,
    show_dead,
)
from service.cli.setup import NoRedis
from service.engine.engine import Engine
from service.models import Batch, Message
from service.settings import Settings
from service.store.connections import create_redis
from service.store.embedded import free_port
from service.store.keyspace import Keyspace
from service.store.runner import run_script
from service.store.scripts import Replayed, Scripts
from tests.helpers import Collector, fast_settings, running_engine, wait_until

KS = Keyspace()  # the keyspace of fast_settings(): prefix "batcher", 16 buckets


async def dead_reaches(engine: Engine, n: int) -> None:
    await wait_until(lambda: engine.stats.dead >= n)


async def kill(redis_url: str, batches: list[tuple[str, list[str]]], **overrides: Any) -> list[str]:
    """Dead-letter one batch per (chat, texts), in this order: their batch ids."""
    collector = Collector(fail=lambda b: True)
    async with running_engine(redis_url, collector, max_attempts=1, **overrides) as engine:
        for n, (chat, texts) in enumerate(batches, 1):
            await engine.batcher.add_many(
                [(chat, Message(id=f"{chat}/{n}/{t}", text=t)) for t in texts]
            )
            await dead_reaches(engine, n)
    assert [len(b.messages) for b in collector.calls] == [len(t) for _, t in batches]
    return [b.batch_id for b in collector.calls]


async def settled(redis: Redis, chat: str, timeout_s: float = 10.0) -> None:
    """Nothing of the chat left to deliver: no open batch, no due entry, no lease."""
    ck = KS.chat(chat)
    deadline = time.monotonic() + timeout_s
    while True:
        pipe = redis.pipeline(transaction=False)
        pipe.exists(ck.buf)
        pipe.zscore(ck.bucket.due, chat)
        pipe.zscore(ck.bucket.inflight, chat)
        if await pipe.execute() == [0, None, None]:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"chat {chat} still has work")
        await asyncio.sleep(0.01)


async def dead_keys_exist(redis: Redis, batch_id: str) -> list[bool]:
    bk = KS.all_buckets()
    scores = [await redis.zscore(b.dead, batch_id) for b in bk]
    lists = [await redis.exists(KS.dead_batch(b.bucket, batch_id)) for b in bk]
    infos = [await redis.exists(KS.dead_info(b.bucket, batch_id)) for b in bk]
    return [any(s is not None for s in scores), any(lists), any(infos)]


def texts(batch: Batch) -> list[str | None]:
    return [m.text for m in batch.messages]


async def test_list_and_show(redis_url: str, redis_client: Redis) -> None:
    chats = [("alice", ["a1", "a2", "a3"]), ("bob", ["b1"]), ("carol", ["c1", "c2"])]
    ids = await kill(redis_url, chats)
    dead = await list_dead(redis_client, KS)
    assert [d.batch_id for d in dead] == ids[::-1]  # newest first, across buckets
    assert len({d.bucket for d in dead}) == 3
    alice = dead[2]
    assert (alice.chat_id, alice.size, alice.attempts, alice.seq) == ("alice", 3, 1, 1)
    assert alice.reason == "idle" and f"handler refused batch {ids[0]}" in alice.error
    assert alice.opened_at <= alice.closed_at <= alice.dead_at
    assert [d.batch_id for d in await list_dead(redis_client, KS, limit=2)] == ids[:0:-1]
    assert await list_dead(redis_client, KS, limit=0) == []
    assert await count_dead(redis_client, KS) == 3

    shown = await show_dead(redis_client, KS, ids[0])
    assert shown is not None
    batch, messages = shown
    assert batch == alice
    assert [m.text for m in messages] == ["a1", "a2", "a3"]
    assert [m.id for m in messages] == ["alice/1/a1", "alice/1/a2", "alice/1/a3"]
    assert all(m.received_at is not None for m in messages)
    assert await show_dead(redis_client, KS, "no-such-batch") is None


async def test_replay_delivers_once_in_order_under_a_new_batch_id(
    redis_url: str, redis_client: Redis
) -> None:
    [dead_id] = await kill(redis_url, [("c", ["m0", "m1", "m2"])])
    shown = await show_dead(redis_client, KS, dead_id)
    assert shown is not None
    collector = Collector()
    async with running_engine(redis_url, collector):
        assert await replay_dead(redis_client, KS, dead_id) == 3
        assert await dead_keys_exist(redis_client, dead_id) == [False, False, False]
        assert await replay_dead(redis_client, KS, dead_id) == 0  # a retry finds nothing
        await collector.wait_messages(3)
        await settled(redis_client, "c")
        assert await replay_dead(redis_client, KS, dead_id) == 0
    [batch] = collector.batches
    assert texts(batch) == ["m0", "m1", "m2"]
    assert batch.batch_id != dead_id and batch.seq == 2 and batch.attempt == 1
    assert batch.reason in ("idle", "recovered")
    # the messages are the stored ones: ids and Redis arrival times unchanged
    assert [(m.id, m.received_at) for m in batch.messages] == [
        (m.id, m.received_at) for m in shown[1]
    ]


async def test_concurrent_replays_deliver_once(redis_url: str, redis_client: Redis) -> None:
    [dead_id] = await kill(redis_url, [("c", ["m0", "m1"])])
    clients = [create_redis(redis_url) for _ in range(4)]
    collector = Collector()
    try:
        async with running_engine(redis_url, collector):
            got = await asyncio.gather(*(replay_dead(c, KS, dead_id) for c in clients))
            assert sorted(got) == [0, 0, 0, 2]
            await collector.wait_messages(2)
            await settled(redis_client, "c")
    finally:
        for c in clients:
            await c.aclose()
    assert [texts(b) for b in collector.batches] == [["m0", "m1"]]


async def test_dead_messages_come_before_newer_open_ones(
    redis_url: str, redis_client: Redis
) -> None:
    [dead_id] = await kill(redis_url, [("c", ["old1", "old2"])])
    collector = Collector()
    # A long idle: the open batch would wait 5 s; the replay makes it due now.
    async with running_engine(redis_url, collector, idle_ms=5_000, max_wait_ms=20_000) as engine:
        await engine.add("c", Message(id="n1", text="new1"))
        await engine.add("c", Message(id="n2", text="new2"))
        assert await replay_dead(redis_client, KS, dead_id) == 2
        await collector.wait_messages(4, timeout_s=3)
    assert [texts(b) for b in collector.batches] == [["old1", "old2", "new1", "new2"]]


async def test_replay_waits_for_the_batch_in_flight(redis_url: str, redis_client: Redis) -> None:
    [dead_id] = await kill(redis_url, [("c", ["old"])])
    collector = Collector()
    started, release = asyncio.Event(), asyncio.Event()

    async def handler(batch: Batch) -> None:
        if "new" in texts(batch):
            started.set()
            await release.wait()
        await collector(batch)

    async with running_engine(redis_url, handler) as engine:
        await engine.add("c", Message(id="n", text="new"))
        await asyncio.wait_for(started.wait(), 5)
        assert await replay_dead(redis_client, KS, dead_id) == 1
        release.set()
        await collector.wait_messages(2)
        await settled(redis_client, "c")
    # delivered after the in-flight batch, never merged into it
    assert [texts(b) for b in collector.batches] == [["new"], ["old"]]


async def test_replays_in_any_order_keep_arrival_order(redis_url: str, redis_client: Redis) -> None:
    first, second = await kill(redis_url, [("c", ["a1", "a2"]), ("c", ["b1"])])
    # no engine running: the replayed messages wait in the open batch
    assert await replay_dead(redis_client, KS, second) == 1
    assert await replay_dead(redis_client, KS, first) == 2
    assert await redis_client.llen(KS.chat("c").buf) == 3
    collector = Collector()
    async with running_engine(redis_url, collector):  # its start-up sweep claims it
        await collector.wait_messages(3)
        await settled(redis_client, "c")
    assert [texts(b) for b in collector.batches] == [["a1", "a2", "b1"]]


async def test_replay_of_a_large_batch_splits_at_max_messages_in_order(
    redis_url: str, redis_client: Redis
) -> None:
    old = [f"old{i}" for i in range(1500)]
    [dead_id] = await kill(redis_url, [("c", old)], max_messages=2000)
    new = [f"new{i}" for i in range(1100)]
    collector = Collector()
    async with running_engine(redis_url, collector, max_messages=2000, idle_ms=500) as engine:
        await engine.batcher.add_many([("c", Message(id=t, text=t)) for t in new])
        assert await replay_dead(redis_client, KS, dead_id) == 1500
        await collector.wait_messages(2600)
        await settled(redis_client, "c")
    assert [len(b.messages) for b in collector.batches] == [2000, 600]
    assert collector.batches[0].reason == "max_messages"
    assert collector.texts("c") == old + new


async def test_replay_all_and_drop_all(redis_url: str, redis_client: Redis) -> None:
    ids = await kill(redis_url, [("x", ["x1"]), ("y", ["y1", "y2"]), ("x", ["x2"])])
    collector = Collector()
    async with running_engine(redis_url, collector):
        assert await replay_all(redis_client, KS) == Replayed(batches=3, messages=4)
        assert await replay_all(redis_client, KS) == Replayed(batches=0, messages=0)
        await collector.wait_messages(4)
        await settled(redis_client, "x")
        await settled(redis_client, "y")
    assert collector.texts("x") == ["x1", "x2"]
    assert collector.texts("y") == ["y1", "y2"]
    assert await count_dead(redis_client, KS) == 0
    for batch_id in ids:
        assert await dead_keys_exist(redis_client, batch_id) == [False, False, False]

    more = await kill(redis_url, [("x", ["x3"]), ("y", ["y3"])])
    assert await drop_all(redis_client, KS) == 2
    assert await count_dead(redis_client, KS) == 0
    for batch_id in more:
        assert await dead_keys_exist(redis_client, batch_id) == [False, False, False]


async def test_drop_removes_the_three_keys_once(redis_url: str, redis_client: Redis) -> None:
    first, second = await kill(redis_url, [("alice", ["a"]), ("bob", ["b"])])
    assert await dead_keys_exist(redis_client, first) == [True, True, True]
    assert await drop_dead(redis_client, KS, first) is True
    assert await dead_keys_exist(redis_client, first) == [False, False, False]
    assert await drop_dead(redis_client, KS, first) is False
    assert await replay_dead(redis_client, KS, first) == 0
    assert [d.batch_id for d in await list_dead(redis_client, KS)] == [second]
    assert not await redis_client.exists(KS.chat("alice").buf)  # the chat is untouched


async def test_replay_script_takes_each_batch_once(redis_url: str, redis_client: Redis) -> None:
    [dead_id] = await kill(redis_url, [("c", ["m0", "m1"])])
    bucket = KS.chat("c").bucket.bucket
    other = next(f"o{i}" for i in range(100) if KS.bucket_of(f"o{i}") == bucket)
    wrong_chat = Scripts.replay_call(KS, KS.chat(other), [dead_id])
    assert Scripts.parse_replay(await run_script(redis_client, *wrong_chat)) == Replayed(0, 0)
    twice = Scripts.replay_call(KS, KS.chat("c"), [dead_id, dead_id])
    assert Scripts.parse_replay(await run_script(redis_client, *twice)) == Replayed(1, 2)
    assert await redis_client.llen(KS.chat("c").buf) == 2
    assert not await redis_client.exists(KS.chat(other).buf)


# --- the command line (run_dead, as `batcher dead ...` will call it) -------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="batcher")
    add_dead_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["dead", *argv])


async def cli(settings: Settings, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    console = Console(file=out, width=250, color_system=None)
    code = await asyncio.to_thread(run_dead, parse(*argv), settings, console)
    return code, out.getvalue()


async def test_cli(redis_url: str, redis_client: Redis) -> None:
    hostile = "[/]{b1}:\x1b[2J"
    dead_id, _ = await kill(redis_url, [(hostile, ["[bold]hi[/]", "two"]), ("a", ["1"])])
    settings = fast_settings(redis_url)

    code, out = await cli(settings, "list")
    assert code == 0, out
    assert dead_id in out and "RuntimeError: handler refused" in out
    assert "\x1b" not in out and "\\x1b[2J" in out and "2 of 2" in out
    code, out = await cli(settings, "show", dead_id)
    assert code == 0, out
    assert "[bold]hi[/]" in out and "two" in out and "attempts" in out
    for cmd in ("show", "replay", "drop"):
        code, out = await cli(settings, cmd, "no-such-batch")
        assert (code, out.strip()) == (1, "no dead batch no-such-batch")

    code, out = await cli(settings, "drop", "--all")
    assert code == 2 and "refusing to drop all 2 dead batches without --yes" in out
    assert await count_dead(redis_client, KS) == 2

    code, out = await cli(settings, "replay", dead_id)
    assert code == 0 and "replayed 2 messages" in out
    assert await redis_client.llen(KS.chat(hostile).buf) == 2
    assert (await cli(settings, "replay", dead_id))[0] == 1

    assert await cli(settings, "drop", "--all", "--yes") == (0, "dropped 1 dead batches\n")
    assert await cli(settings, "list") == (0, "no dead batches\n")
    assert await cli(settings, "replay", "--all") == (0, "replayed 0 dead batches (0 messages)\n")


async def test_cli_replay_all_and_drop_one(redis_url: str, redis_client: Redis) -> None:
    first, _ = await kill(redis_url, [("a", ["1"]), ("b", ["2", "3"])])
    settings = fast_settings(redis_url)
    assert await cli(settings, "drop", first) == (0, f"dropped dead batch {first}\n")
    code, out = await cli(settings, "replay", "--all")
    assert (code, out) == (0, "replayed 1 dead batches (2 messages)\n")
    assert await count_dead(redis_client, KS) == 0
    assert await redis_client.llen(KS.chat("b").buf) == 2


def test_cli_arguments() -> None:
    assert parse("list").limit == 100
    assert parse("list", "--limit", "5").limit == 5
    assert parse("replay", "--all").all
    assert parse("drop", "x", "--yes").batch_id == "x"
    for bad in (["replay"], ["drop"], ["replay", "x", "--all"], ["show"], ["frobnicate"]):
        with pytest.raises(SystemExit):
            parse(*bad)


def test_cli_needs_a_redis_url() -> None:
    with pytest.raises(NoRedis, match="BATCHER_REDIS_URL"):
        run_dead(parse("list"), Settings(redis_url=None))


def test_cli_unreachable_redis() -> None:
    out = io.StringIO()
    settings = fast_settings(f"redis://127.0.0.1:{free_port()}/0")
    code = run_dead(parse("list"), settings, Console(file=out, width=200, color_system=None))
    assert code == 2 and "error:" in out.getvalue()


async def test_replay_under_maxmemory_writes_nothing(redis_url: str, redis_client: Redis) -> None:
    [dead_id] = await kill(redis_url, [("c", ["old"])])
    async with running_engine(redis_url, Collector(), idle_ms=5_000, max_wait_ms=20_000) as engine:
        await engine.add("c", Message(id="n", text="new"))  # stays open: no handler call
    await redis_client.config_set("maxmemory", 1)
    with pytest.raises(ResponseError, match="maxmemory"):  # refused at its first write
        await replay_dead(redis_client, KS, dead_id)
    assert await dead_keys_exist(redis_client, dead_id) == [True, True, True]
    assert await redis_client.llen(KS.chat("c").buf) == 1
    await redis_client.config_set("maxmemory", 0)
    assert await replay_dead(redis_client, KS, dead_id) == 1
    assert await redis_client.llen(KS.chat("c").buf) == 2
