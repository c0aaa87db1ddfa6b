"""The Lua scripts on a real server: append, claim, ack, and what carries a TTL."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from service.engine.batcher import Batcher
from service.errors import RedisUnavailable
from service.models import Message
from service.store.keyspace import SEEN_RING, seen_entry, seen_slot_ms
from service.store.scripts import ClaimOutcome, Scripts, Skipped
from tests.helpers import fast_settings, poll


def batcher_for(client: Redis, url: str, **overrides: int) -> Batcher:
    return Batcher(client, fast_settings(url, **overrides))


async def test_append_arms_timer_and_index(redis_client: Redis, redis_url: str) -> None:
    b = batcher_for(redis_client, redis_url, idle_ms=500, max_wait_ms=5000)
    r = await b.add("c1", Message(id="m1", text="hi"))
    assert r.accepted and r.count == 1
    assert r.deadline_ms - r.now_ms == 500
    ck = b.keys.chat("c1")
    assert 400 < await redis_client.pttl(ck.timer) <= 500
    assert await redis_client.zscore(ck.bucket.due, "c1") == r.deadline_ms
    assert await redis_client.llen(ck.buf) == 1


async def test_deadline_is_capped_by_max_wait(redis_client: Redis, redis_url: str) -> None:
    b = batcher_for(redis_client, redis_url, idle_ms=1000, max_wait_ms=1200)
    first = await b.add("c1", "one")
    await redis_client.hset(b.keys.chat("c1").meta, "opened", first.now_ms - 1000)
    second = await b.add("c1", "two")
    # opened 1000 ms ago: only 200 ms of the 1200 ms max wait remain
    assert second.deadline_ms == first.now_ms - 1000 + 1200


async def test_duplicate_ids_are_dropped(redis_client: Redis, redis_url: str) -> None:
    b = batcher_for(redis_client, redis_url)
    assert (await b.add("c1", Message(id="x", text="a"))).accepted
    dup = await b.add("c1", Message(id="x", text="a again"))
    assert dup.duplicate and dup.count == 1
    # the same id in another chat is another message
    assert (await b.add("c2", Message(id="x", text="b"))).accepted
    assert await redis_client.llen(b.keys.chat("c1").buf) == 1


async def redis_ms(client: Redis) -> int:
    sec, usec = await client.time()
    return int(sec) * 1000 + int(usec) // 1000


async def sleep_until_ms(client: Redis, ms: int) -> None:
    """Time is the subject here: wait for the server's clock to reach ``ms``."""

    async def reached() -> bool:
        return await redis_ms(client) >= ms

    await poll(reached)


async def test_dedupe_keeps_an_id_for_the_window_then_lets_it_in(
    redis_client: Redis, redis_url: str
) -> None:
    window = 200  # four slots of 50 ms; an entry stays for 200-250 ms
    b = batcher_for(
        redis_client, redis_url, dedupe_window_ms=window, idle_ms=60_000, max_wait_ms=120_000
    )
    first = await b.add("c1", Message(id="x", text="a"))
    assert first.accepted
    while (now := await redis_ms(redis_client)) < first.now_ms + window - 20:
        assert (await b.add("c1", Message(id="x", text="again"))).duplicate, now - first.now_ms
        await asyncio.sleep(0.02)
    await sleep_until_ms(redis_client, first.now_ms + window * 5 // 4 + 1)
    assert (await b.add("c1", Message(id="x", text="later"))).accepted
    assert await redis_client.llen(b.keys.chat("c1").buf) == 2


async def test_dedupe_slot_is_emptied_by_the_next_use_of_its_set(
    redis_client: Redis, redis_url: str
) -> None:
    slot = seen_slot_ms(400)
    b = batcher_for(
        redis_client, redis_url, dedupe_window_ms=400, idle_ms=60_000, max_wait_ms=120_000
    )
    a = seen_entry("c1", "a")
    other = next(f"m{i}" for i in range(10_000) if seen_entry("c1", f"m{i}").shard == a.shard)
    ring = b.keys.chat("c1").bucket.seen_ring(a.shard)
    first = await b.add("c1", Message(id="a", text="a"))
    key = ring[first.now_ms // slot % SEEN_RING]
    assert await redis_client.sismember(key, a.digest)
    assert await redis_client.ttl(key) == -1  # removed by the script, never by expiry
    # The same set again, five slots later: it held an older slot, now emptied.
    await sleep_until_ms(redis_client, (first.now_ms // slot + SEEN_RING) * slot)
    again = await b.add("c1", Message(id=other, text="b"))
    assert ring[again.now_ms // slot % SEEN_RING] == key
    assert not await redis_client.sismember(key, a.digest)
    assert await redis_client.scard(key) == 2  # the slot's tag and the new entry
    assert await redis_client.object("encoding", key) == b"intset"
    assert (await b.add("c1", Message(id="a", text="a again"))).accepted


async def test_claim_outcomes(redis_client: Redis, redis_url: str) -> None:
    b = batcher_for(redis_client, redis_url)
    s: Scripts = b.scripts
    ck = b.keys.chat("c1")
    await b.add("c1", "hello")

    def claim(batch_id: str) -> object:
        return s.claim_call(ck, batch_id, "tok", recovered=False)

    # timer still running: not idle
    got = Scripts.parse_claim(await s.run(claim("b1")))
    assert got == Skipped(ClaimOutcome.TIMER_RUNNING)
    await redis_client.delete(ck.timer)
    got = Scripts.parse_claim(await s.run(claim("b1")))
    assert not isinstance(got, Skipped)
    assert got.seq == 1 and got.reason == "idle" and len(got.items) == 1
    proc = b.keys.proc(ck.bucket.bucket, "b1")
    assert await redis_client.ttl(proc) == -1  # processing keys never expire
    # second claimer: taken
    assert Scripts.parse_claim(await s.run(claim("b2"))) == Skipped(ClaimOutcome.NOT_DUE)

    # next batch while b1 is in flight: parked, not claimed
    await b.add("c1", "more")
    await redis_client.delete(ck.timer)
    busy = Scripts.parse_claim(await s.run(claim("b3")))
    assert busy == Skipped(ClaimOutcome.BUSY)
    lease = await redis_client.zscore(ck.bucket.inflight, "c1")
    assert await redis_client.zscore(ck.bucket.due, "c1") == lease

    # ack: b1 gone, the waiting batch is due at once
    assert (await s.run(s.ack_call(ck, "b1", "not-the-lease")))[0] == 0  # not this attempt's
    assert await redis_client.exists(proc)
    acked, nxt = await s.run(s.ack_call(ck, "b1", "tok"))
    assert (acked, nxt) == (1, 1)
    assert not await redis_client.exists(proc)
    got = Scripts.parse_claim(await s.run(claim("b4")))
    assert not isinstance(got, Skipped) and got.seq == 2
    # acking twice is harmless
    assert (await s.run(s.ack_call(ck, "b1", "tok")))[0] == 0


async def test_an_ack_after_a_redelivery_leaves_the_chat_to_the_new_attempt(
    redis_client: Redis, redis_url: str
) -> None:
    # Attempt 1's lease ran out (Redis was away when it finished) and the batch
    # was redelivered; attempt 1's late ack must not let the chat's next batch
    # start while attempt 2 may still be at the handler.
    b = batcher_for(redis_client, redis_url)
    s: Scripts = b.scripts
    ck = b.keys.chat("c1")
    await b.add("c1", "first")
    await redis_client.delete(ck.timer)
    assert not isinstance(
        Scripts.parse_claim(await s.run(s.claim_call(ck, "b1", "t1", recovered=False))), Skipped
    )
    await redis_client.zadd(ck.bucket.inflight, {"c1": 1})  # the lease ran out
    again = Scripts.parse_claim(await s.run(s.redeliver_call(ck, "b1", "t2")))
    assert not isinstance(again, Skipped) and again.attempt == 2
    await b.add("c1", "next")
    await redis_client.delete(ck.timer)
    assert (await s.run(s.ack_call(ck, "b1", "t1")))[0] == 0
    busy = Scripts.parse_claim(await s.run(s.claim_call(ck, "b2", "t3", recovered=False)))
    assert busy == Skipped(ClaimOutcome.BUSY)
    assert (await s.run(s.ack_call(ck, "b1", "t2"))) == [1, 1]
    got = Scripts.parse_claim(await s.run(s.claim_call(ck, "b2", "t3", recovered=False)))
    assert not isinstance(got, Skipped) and got.seq == 2


async def test_only_timers_ever_expire(redis_client: Redis, redis_url: str) -> None:
    b = batcher_for(redis_client, redis_url)
    for chat in ("a", "b", "c"):
        await b.add(chat, Message(id=f"{chat}1", text="x"))
    ck = b.keys.chat("a")
    await redis_client.delete(ck.timer)
    await b.scripts.run(b.scripts.claim_call(ck, "bid", "tok", recovered=False))
    async for key in redis_client.scan_iter(match=b.keys.pattern()):
        ttl = await redis_client.pttl(key)
        if b":timer:" in key:
            assert ttl > 0
        else:
            assert ttl == -1, key


async def test_out_of_memory_append_writes_nothing(redis_client: Redis, redis_url: str) -> None:
    b = batcher_for(redis_client, redis_url)
    await b.add("c1", "before")
    ck = b.keys.chat("c1")
    await redis_client.pexpire(ck.timer, 100_000)  # mark the timer to see it untouched
    used = int((await redis_client.info("memory"))["used_memory"])
    await redis_client.config_set("maxmemory", str(used // 2))
    try:
        with pytest.raises(RedisUnavailable, match="maxmemory"):
            await b.add("c1", "x" * 10_000)
        assert await redis_client.llen(ck.buf) == 1
        assert await redis_client.pttl(ck.timer) > 99_000  # not refreshed
        # draining still works under OOM: claim and ack free memory
        await redis_client.delete(ck.timer)
        raw = await b.scripts.run(b.scripts.claim_call(ck, "b1", "t", recovered=False))
        assert raw[0] == 1
    finally:
        await redis_client.config_set("maxmemory", "0")
    assert (await b.add("c1", "after")).accepted


async def test_script_errors_are_not_swallowed(redis_client: Redis, redis_url: str) -> None:
    b = batcher_for(redis_client, redis_url)
    ck = b.keys.chat("c1")
    await redis_client.set(ck.buf, "not a list")
    await redis_client.zadd(ck.bucket.due, {"c1": 1})
    with pytest.raises(RedisUnavailable, match="WRONGTYPE"):
        await b.add("c1", "x")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await b.scripts.run(b.scripts.claim_call(ck, "b", "t", recovered=False))
