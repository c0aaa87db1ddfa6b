"""One chat seen and acted on (service.store.chats) under a running engine:
flush closes now with reason manual, hold keeps a batch open past its idle
time until release or the max wait, drop moves it to the dead letters, and
every action is safe beside appends and claims."""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis

from service import Message
from service.store.chats import Chats
from service.store.deadletters import list_dead, replay_dead
from tests.helpers import Collector, fast_settings, running_engine

IDLE_MS = 300  # long enough that an action lands well before the timer would


async def test_flush_closes_the_open_batch_now_with_reason_manual(
    redis_url: str, redis_client: Redis
) -> None:
    collector = Collector()
    settings = fast_settings(redis_url, idle_ms=5_000, max_wait_ms=20_000)
    chats = Chats(redis_client, settings)
    async with running_engine(redis_url, collector, idle_ms=5_000, max_wait_ms=20_000) as engine:
        for i in range(2):
            await engine.add("c1", Message(id=f"m{i}", text=f"t{i}"))
        state = await chats.read("c1")
        assert state.open is not None and len(state.open.messages) == 2
        assert state.open.why == "idle" and state.inflight is None
        started = time.monotonic()
        assert await chats.flush("c1") == 2
        await collector.wait_messages(2, 3.0)
        assert time.monotonic() - started < 2.0  # long before the 5 s idle time
    (batch,) = collector.batches
    assert batch.reason == "manual" and [m.text for m in batch.messages] == ["t0", "t1"]
    assert await chats.flush("c1") is None  # nothing open any more
    assert (await chats.read("c1")).open is None


async def test_hold_outlasts_idle_until_release(redis_url: str, redis_client: Redis) -> None:
    collector = Collector()
    overrides = {"idle_ms": IDLE_MS, "max_wait_ms": 10_000}
    chats = Chats(redis_client, fast_settings(redis_url, **overrides))
    async with running_engine(redis_url, collector, **overrides) as engine:
        first = await engine.add("held", Message(id="a", text="a"))
        deadline = await chats.hold("held")
        assert deadline is not None and deadline >= first.now_ms + 9_000  # the max wait
        await engine.add("held", Message(id="b", text="b"))  # an append keeps the hold
        state = await chats.read("held")
        assert state.open is not None and "held" in state.open.why
        assert state.open.deadline_ms is not None and state.open.deadline_ms >= deadline - 1
        await asyncio.sleep(3 * IDLE_MS / 1000)  # time is the subject: idle passes, no flush
        assert collector.batches == []
        released = await chats.release("held")
        assert released is not None and released < deadline
        assert await chats.release("held") is None  # not held any more
        await collector.wait_messages(2, 5.0)
    (batch,) = collector.batches
    assert [m.id for m in batch.messages] == ["a", "b"] and batch.reason == "idle"


async def test_drop_moves_the_open_batch_to_the_dead_letters(
    redis_url: str, redis_client: Redis
) -> None:
    collector = Collector()
    overrides = {"idle_ms": 5_000, "max_wait_ms": 20_000}
    settings = fast_settings(redis_url, **overrides)
    chats = Chats(redis_client, settings)
    async with running_engine(redis_url, collector, **overrides) as engine:
        await engine.add("spam", Message(id="s1", text="buy now"))
        dropped = await chats.drop("spam")
        assert dropped is not None and dropped[1] == 1
        assert await chats.drop("spam") is None
        state = await chats.read("spam")
        assert state.open is None and [d.batch_id for d in state.dead] == [dropped[0]]
        (dead,) = await list_dead(redis_client, chats.keys)
        assert (dead.chat_id, dead.size, dead.reason) == ("spam", 1, "manual")
        assert dead.error == "dropped by an operator"
        # Nothing was lost: a replay delivers it.
        assert await replay_dead(redis_client, chats.keys, dropped[0]) == 1
        await collector.wait_messages(1, 5.0)
    assert collector.batches[0].messages[0].text == "buy now"


async def test_actions_beside_appends_lose_nothing(redis_url: str, redis_client: Redis) -> None:
    """Flushes and holds racing with appends of one chat: every message is
    delivered once, in order, in batches that never overlap."""
    collector = Collector()
    overrides = {"idle_ms": 100, "max_wait_ms": 2_000}
    chats = Chats(redis_client, fast_settings(redis_url, **overrides))
    async with running_engine(redis_url, collector, **overrides) as engine:

        async def appends() -> None:
            for i in range(60):
                await engine.add("busy", Message(id=f"busy#{i}", text=str(i)))
                await asyncio.sleep(0.005)

        async def actions() -> None:
            for i in range(30):
                await (chats.flush if i % 3 else chats.hold)("busy")
                await asyncio.sleep(0.01)
            await chats.release("busy")

        await asyncio.gather(appends(), actions())
        await collector.wait_messages(60, 10.0)
    texts = [m.text for b in collector.batches for m in b.messages]
    assert texts == [str(i) for i in range(60)]
