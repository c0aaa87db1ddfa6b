"""Typing holds a batch open, through the running engine.

Idle 150 ms, typing window 300 ms. The user sends a message, then keeps
typing (an event every 100 ms, well past the idle timeout) before sending
the next one: no batch may close while the typing goes on, the message sent
after the typing joins the first one, and the batch closes once the user
stops. The gaps between events are the subject here, so they are slept.
"""

from __future__ import annotations

import asyncio
import time

from service.engine.engine import Engine
from tests.helpers import Collector, running_engine

CHAT = "typist"
IDLE_MS, TYPING_MS = 150, 300


async def keep_typing(engine: Engine, collector: Collector, for_s: float) -> None:
    end = time.monotonic() + for_s
    while time.monotonic() < end:
        r = await engine.batcher.typing(CHAT)
        assert r.outcome == "held", r
        assert not collector.batches, "a batch closed while its user was typing"
        await asyncio.sleep(0.1)


async def test_a_typing_user_keeps_the_batch_open_until_the_typing_stops(redis_url: str) -> None:
    collector = Collector()
    async with running_engine(redis_url, collector, idle_ms=IDLE_MS, typing_ms=TYPING_MS) as engine:
        await engine.batcher.add(CHAT, "I was thinking")
        await keep_typing(engine, collector, 0.6)  # 4 x the idle timeout
        await engine.batcher.add(CHAT, "about the trip")
        await keep_typing(engine, collector, 0.3)
        stopped = time.monotonic()
        assert (await engine.batcher.typing(CHAT, typing=False)).outcome == "released"
        await collector.wait_messages(2)
        closed_after_s = time.monotonic() - stopped
    [batch] = collector.batches
    assert [m.text for m in batch.messages] == ["I was thinking", "about the trip"]
    assert batch.reason == "idle"
    assert closed_after_s < 1.0  # back on the idle timer, not the typing window


async def test_without_typing_events_the_slow_typist_is_split(redis_url: str) -> None:
    """The baseline of the test above: the same gap with no typing events."""
    collector = Collector()
    async with running_engine(redis_url, collector, idle_ms=IDLE_MS) as engine:
        await engine.batcher.add(CHAT, "I was thinking")
        await collector.wait_messages(1)
        await engine.batcher.add(CHAT, "about the trip")
        await collector.wait_messages(2)
    assert [[m.text for m in b.messages] for b in collector.batches] == [
        ["I was thinking"],
        ["about the trip"],
    ]


async def test_typing_in_a_quiet_chat_delivers_nothing(redis_url: str) -> None:
    collector = Collector()
    async with running_engine(redis_url, collector, idle_ms=IDLE_MS) as engine:
        assert (await engine.batcher.typing("quiet")).outcome == "no_batch"
        await engine.batcher.add("other", "marker")
        await collector.wait_messages(1)
    assert [b.chat_id for b in collector.batches] == ["other"]
