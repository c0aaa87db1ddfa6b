"""The engine end to end on a real server: batching, closing rules, delivery."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from service.models import Batch, Message
from tests.helpers import HOSTILE, Collector, running_engine, wait_until


def assert_exactly_once_in_order(collector: Collector, sent: dict[str, list[str]]) -> None:
    ids = Counter(m.id for b in collector.batches for m in b.messages)
    dupes = [i for i, n in ids.items() if n > 1]
    assert not dupes, f"delivered twice: {dupes[:5]}"
    for chat_id, texts in sent.items():
        assert collector.texts(chat_id) == texts, chat_id
    assert sum(len(t) for t in sent.values()) == collector.message_count()


async def send_burst(
    add: Callable[[str, Message], Awaitable[object]],
    chat_id: str,
    texts: list[str],
    gaps_ms: list[int],
) -> None:
    for text, gap in zip(texts, gaps_ms, strict=True):
        await add(chat_id, Message(id=f"{chat_id}/{text}", text=text))
        await asyncio.sleep(gap / 1000)


async def test_seed_scenario_one_batch_per_chat(redis_url: str) -> None:
    """50 chats, 3-5 fragments each 20-200 ms apart, idle 300 ms: one batch
    per chat, every message once, in order."""
    rng = random.Random(7)
    collector = Collector()
    sent: dict[str, list[str]] = {}
    async with running_engine(redis_url, collector, idle_ms=300) as engine:
        jobs = []
        for i in range(50):
            chat = f"wa:1055:{4479000 + i}"
            n = rng.randint(3, 5)
            texts = [f"fragment {k}" for k in range(n)]
            gaps = [rng.randint(20, 200) for _ in range(n - 1)] + [0]
            sent[chat] = texts
            jobs.append(send_burst(engine.add, chat, texts, gaps))
        await asyncio.gather(*jobs)
        await collector.wait_messages(sum(len(t) for t in sent.values()))
    assert_exactly_once_in_order(collector, sent)
    per_chat = collector.by_chat()
    assert all(len(batches) == 1 for batches in per_chat.values())
    assert {b.reason for b in collector.batches} == {"idle"}
    assert all(b.seq == 1 and b.attempt == 1 for b in collector.batches)


async def test_max_wait_closes_under_a_never_pausing_sender(redis_url: str) -> None:
    collector = Collector()
    texts = [f"m{i}" for i in range(30)]
    async with running_engine(redis_url, collector, idle_ms=200, max_wait_ms=500) as engine:
        for t in texts:
            await engine.add("chatty", t)
            await asyncio.sleep(0.05)  # the sender never pauses for idle_ms
        await collector.wait_messages(len(texts))
    assert collector.texts("chatty") == texts
    batches = collector.batches
    assert len(batches) >= 2
    assert all(b.reason == "max_wait" for b in batches[:-1])
    for b in batches[:-1]:
        assert b.closed_at - b.opened_at < 0.5 + 0.3  # max wait plus claim latency
    assert [b.seq for b in batches] == list(range(1, len(batches) + 1))


async def test_max_messages_closes_at_once_and_caps_the_batch(redis_url: str) -> None:
    collector = Collector()
    texts = [f"m{i}" for i in range(12)]
    async with running_engine(redis_url, collector, idle_ms=2000, max_messages=5) as engine:
        await asyncio.gather(*(engine.add("fast", Message(id=t, text=t)) for t in texts[:5]))
        await collector.wait_messages(5, timeout_s=1.5)  # well before idle_ms
        for t in texts[5:]:
            await engine.add("fast", Message(id=t, text=t))
        await collector.wait_messages(12, timeout_s=5)
    sizes = [len(b.messages) for b in collector.batches]
    assert max(sizes) <= 5
    assert collector.batches[0].reason == "max_messages"
    assert sorted(m.text for b in collector.batches for m in b.messages) == sorted(texts)


async def test_duplicate_message_ids_are_delivered_once(redis_url: str) -> None:
    collector = Collector()
    async with running_engine(redis_url, collector) as engine:
        first = await engine.add("c", Message(id="wamid.1", text="hello"))
        again = await engine.add("c", Message(id="wamid.1", text="hello"))
        await engine.add("c", Message(id="wamid.2", text="world"))
        assert first.accepted and again.duplicate
        await collector.wait_messages(2)
        # after delivery, a late retry of the same webhook is still a duplicate
        late = await engine.add("c", Message(id="wamid.1", text="hello"))
        assert late.duplicate
    assert collector.texts("c") == ["hello", "world"]


async def test_messages_ordered_by_sent_at_then_arrival(redis_url: str) -> None:
    collector = Collector()
    async with running_engine(redis_url, collector) as engine:
        await engine.add("c", Message(id="2", text="second", sent_at=2.0))
        await engine.add("c", Message(id="1", text="first", sent_at=1.0))
        await engine.add("c", Message(id="3", text="third", sent_at=2.0))
        await collector.wait_messages(3)
    assert collector.texts("c") == ["first", "second", "third"]


async def test_timer_race_never_loses_or_duplicates(redis_url: str) -> None:
    """A message landing right as the timer expires joins this batch or
    starts the next one: never lost, never in two batches."""
    collector = Collector()
    sent: dict[str, list[str]] = {}
    idle = 100

    async def racer(i: int) -> None:
        chat = f"race-{i}"
        sent[chat] = ["a", "b"]
        await engine.add(chat, Message(id=f"{chat}a", text="a"))
        await asyncio.sleep((idle + (i % 11) - 5) / 1000)  # -5..+5 ms around the deadline
        await engine.add(chat, Message(id=f"{chat}b", text="b"))

    async with running_engine(redis_url, collector, idle_ms=idle) as engine:
        await asyncio.gather(*(racer(i) for i in range(60)))
        await collector.wait_messages(120)
    assert_exactly_once_in_order(collector, sent)


async def test_four_engines_deliver_each_batch_exactly_once(redis_url: str) -> None:
    collector = Collector()
    sent = {f"multi-{i}": [f"t{k}" for k in range(3)] for i in range(100)}
    async with (
        running_engine(redis_url, collector) as e1,
        running_engine(redis_url, collector) as e2,
        running_engine(redis_url, collector) as e3,
        running_engine(redis_url, collector) as e4,
    ):
        engines = [e1, e2, e3, e4]
        await asyncio.gather(
            *(
                send_burst(engines[i % 4].add, chat, texts, [0] * len(texts))
                for i, (chat, texts) in enumerate(sent.items())
            )
        )
        await collector.wait_messages(300)
        await asyncio.sleep(0.3)  # time is the subject: no late second delivery
    assert_exactly_once_in_order(collector, sent)
    assert len(collector.batches) == 100
    assert sum(e.stats.claimed for e in engines) == 100
    assert sum(e.stats.events for e in engines) >= 100 * 4 * 0.9  # every engine hears events


async def test_one_batch_in_flight_per_chat(redis_url: str) -> None:
    """Messages arriving during processing form the next batch, delivered
    right after the ack, never merged into the in-flight one."""
    release = asyncio.Event()
    started = asyncio.Event()
    collector = Collector()

    async def handler(batch: Batch) -> None:
        if batch.seq == 1:
            started.set()
            await release.wait()
        await collector(batch)

    async with running_engine(redis_url, handler, idle_ms=100) as engine:
        await engine.add("c", "one")
        await asyncio.wait_for(started.wait(), 5)
        await engine.add("c", "two")
        await engine.add("c", "three")
        await asyncio.sleep(0.6)  # time is the subject: well past idle, still not delivered
        assert collector.batches == []
        release.set()
        await collector.wait_messages(3, timeout_s=2)
    first, second = collector.batches
    assert [m.text for m in first.messages] == ["one"]
    assert [m.text for m in second.messages] == ["two", "three"]
    assert (first.seq, second.seq) == (1, 2)
    assert second.batch_id != first.batch_id


async def test_failures_retry_with_same_batch_then_succeed(redis_url: str) -> None:
    collector = Collector(fail=lambda b: b.attempt < 3)
    async with running_engine(redis_url, collector) as engine:
        await engine.add("c", "hello")
        await collector.wait_messages(1)
    assert [b.attempt for b in collector.calls] == [1, 2, 3]
    assert len({b.batch_id for b in collector.calls}) == 1
    assert engine.stats.failures == 2 and engine.stats.delivered == 1


async def test_dead_letter_after_max_attempts(redis_url: str, redis_client: Redis) -> None:
    collector = Collector(fail=lambda b: b.messages[0].text == "poison")
    async with running_engine(redis_url, collector, max_attempts=3) as engine:
        await engine.add("c", "poison")
        await collector.wait_for(lambda: len(collector.calls) == 3)
        await wait_until(lambda: engine.stats.dead == 1)
        # the chat is not stuck behind its dead batch
        await engine.add("c", "healthy")
        await collector.wait_messages(1)
    dead_batch = collector.calls[0].batch_id
    bucket = engine.keys.chat("c").bucket
    assert await redis_client.zscore(bucket.dead, dead_batch) is not None
    info = await redis_client.hgetall(engine.keys.dead_info(bucket.bucket, dead_batch))
    assert info[b"attempts"] == b"3" and b"handler refused" in info[b"error"]
    assert info[b"chat"] == b"c"
    items = await redis_client.lrange(engine.keys.dead_batch(bucket.bucket, dead_batch), 0, -1)
    assert len(items) == 1 and b"poison" in items[0]
    assert await redis_client.ttl(engine.keys.dead_batch(bucket.bucket, dead_batch)) == -1
    assert collector.texts("c") == ["healthy"]


async def test_hostile_chat_ids_are_delivered_to_their_chat(redis_url: str) -> None:
    collector = Collector()
    sent = {chat: [f"for {i}"] for i, chat in enumerate(HOSTILE)}
    async with running_engine(redis_url, collector) as engine:
        for chat, texts in sent.items():
            await engine.add(chat, texts[0])
        await collector.wait_messages(len(sent))
    assert_exactly_once_in_order(collector, sent)


async def test_index_is_empty_once_everything_is_delivered(
    redis_url: str, redis_client: Redis
) -> None:
    collector = Collector()
    async with running_engine(redis_url, collector) as engine:
        for i in range(20):
            await engine.add(f"c{i}", "x")
        await collector.wait_messages(20)
        await wait_until(lambda: engine.stats.delivered == 20)  # counted after each ack
    for bk in engine.keys.all_buckets():
        assert await redis_client.zcard(bk.due) == 0
        assert await redis_client.zcard(bk.inflight) == 0
    async for key in redis_client.scan_iter(match=engine.keys.pattern()):
        assert b":buf:" not in key and b":proc:" not in key and b":timer:" not in key


async def test_a_hung_handler_times_out_and_is_retried(redis_url: str) -> None:
    calls: list[int] = []
    collector = Collector()

    async def handler(batch: Batch) -> None:
        calls.append(batch.attempt)
        if batch.attempt == 1:
            await asyncio.Event().wait()  # never returns
        await collector(batch)

    async with running_engine(redis_url, handler, handler_timeout_ms=200) as engine:
        await engine.add("c", "hello")
        await collector.wait_messages(1, timeout_s=5)
    assert calls == [1, 2]
    assert collector.batches[0].attempt == 2
