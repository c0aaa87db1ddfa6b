"""The nudger sleeps until the next deadline of its buckets (service/engine/nudger.py).

Background expiry is switched off (``DEBUG SET-ACTIVE-EXPIRE 0``) and the
sweeper's grace is long, so an overdue timer is deleted, and its batch
claimed, only when the nudger touches it: a batch delivered with reason
``idle`` and no recovery was woken for by the nudger.
"""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from service.engine.batcher import Batcher
from service.models import Message
from service.store.connections import create_redis
from service.store.keyspace import Keyspace
from service.store.scripts import Scripts
from tests.helpers import Collector, fast_settings, running_engine, wait_until

QUIET = {"sweep_grace_ms": 60_000, "sweep_interval_ms": 60_000, "nudge_interval_ms": 1}


async def no_background_expiry(redis_client: Redis) -> None:
    await redis_client.execute_command("DEBUG", "SET-ACTIVE-EXPIRE", 0)


async def test_nothing_due_means_no_nudges(redis_url: str, redis_client: Redis) -> None:
    async with running_engine(redis_url, Collector(), **QUIET) as engine:
        await wait_until(lambda: engine.nudger.passes >= 1, timeout_s=2)
        # Start-up looks at every bucket more than once (the start, each
        # subscribe, each ownership gain), so the quiet window is looked for:
        # a nudger that polled (every 1 ms here) would never have one.
        quiet = []
        for _ in range(5):
            passes = engine.nudger.passes
            await asyncio.sleep(0.3)  # time is the subject: 300 ms with nothing open
            quiet.append(engine.nudger.passes == passes)
            if quiet[-1]:
                break
        assert quiet[-1], quiet
        assert engine.nudger.next_in_s() is None


async def test_another_process_append_wakes_the_owner(redis_url: str, redis_client: Redis) -> None:
    await no_background_expiry(redis_client)
    collector = Collector()
    async with running_engine(redis_url, collector, **QUIET) as engine:
        await wait_until(lambda: engine.listener is not None and engine.listener.subscribed)
        await wait_until(lambda: engine.nudger.next_in_s() is None, timeout_s=2)
        other = create_redis(redis_url)  # another process's client and batcher
        try:
            batcher = Batcher(other, fast_settings(redis_url, idle_ms=200))
            await batcher.add("elsewhere", Message(id="m1", text="hi"))
            await wait_until(lambda: engine.nudger.next_in_s() is not None, timeout_s=1)
            left = engine.nudger.next_in_s()
            assert left is not None and left <= 0.25
            await collector.wait_messages(1, timeout_s=3)
        finally:
            await other.aclose()
        assert [b.reason for b in collector.batches] == ["idle"]
        assert engine.stats.nudged >= 1 and engine.stats.recovered == 0


async def test_an_earlier_deadline_wakes_a_sleeping_nudger(
    redis_url: str, redis_client: Redis
) -> None:
    await no_background_expiry(redis_client)
    collector = Collector()
    async with running_engine(
        redis_url, collector, **QUIET, idle_ms=5_000, max_wait_ms=20_000
    ) as engine:
        await wait_until(lambda: engine.listener is not None and engine.listener.subscribed)
        await engine.add("slow", Message(id="s1", text="later"))
        await wait_until(lambda: (engine.nudger.next_in_s() or 0) > 3, timeout_s=1)
        other = create_redis(redis_url)
        try:
            quick = Batcher(other, fast_settings(redis_url, idle_ms=100))
            await quick.add("quick", Message(id="q1", text="soon"))
            await collector.wait_messages(1, timeout_s=2)
        finally:
            await other.aclose()
        assert [b.chat_id for b in collector.batches] == ["quick"]
        assert engine.stats.recovered == 0
        left = engine.nudger.next_in_s()  # back to sleep until the slow chat's deadline
        assert left is not None and left > 3


async def test_deadlines_set_before_a_start_are_found(redis_url: str, redis_client: Redis) -> None:
    await no_background_expiry(redis_client)
    client = create_redis(redis_url)
    try:
        batcher = Batcher(client, fast_settings(redis_url, idle_ms=300))
        for chat in ("before-1", "before-2"):
            await batcher.add(chat, Message(id="m", text=chat))
    finally:
        await client.aclose()
    collector = Collector()
    async with running_engine(redis_url, collector, **QUIET, idle_ms=300) as engine:
        await collector.wait_messages(2, timeout_s=3)
        assert {b.reason for b in collector.batches} == {"idle"}
        assert engine.stats.recovered == 0


async def test_append_publishes_only_deadlines_earlier_than_the_planned_wake(
    redis_url: str, redis_client: Redis
) -> None:
    settings = fast_settings(redis_url, idle_ms=10_000, max_wait_ms=60_000)
    keys = Keyspace(settings.key_prefix, 1)
    scripts = Scripts(redis_client, keys, settings)
    bk = keys.bucket(0)
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(bk.wake)
    try:
        await pubsub.get_message(timeout=1)  # the subscribe confirmation

        async def append(chat: str, idle_ms: int) -> int:
            s = settings.model_copy(update={"idle_ms": idle_ms})
            call = Scripts(redis_client, keys, s).append_call(keys.chat(chat), None, b'{"id":"x"}')
            return scripts.parse_append(await scripts.run(call)).deadline_ms

        first = await append("a", 10_000)
        got = await pubsub.get_message(timeout=1)
        assert got is not None and int(got["data"]) == first
        await append("b", 20_000)  # later than the planned wake: nobody needs telling
        earlier = await append("c", 5_000)
        got = await pubsub.get_message(timeout=1)
        assert got is not None and int(got["data"]) == earlier
        assert int(await redis_client.get(bk.wake)) == earlier

        nudged = scripts.parse_nudge(await scripts.run(scripts.nudge_call(bk, limit=10)))
        assert nudged.touched == 0 and nudged.next_ms == earlier
        for chat in ("a", "b", "c"):
            await redis_client.zrem(bk.due, chat)
        nudged = scripts.parse_nudge(await scripts.run(scripts.nudge_call(bk, limit=10)))
        assert nudged.next_ms is None and await redis_client.exists(bk.wake) == 0
    finally:
        await pubsub.aclose()
