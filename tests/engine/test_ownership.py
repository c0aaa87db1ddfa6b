"""Service processes share the buckets: one claims, nudges and sweeps each.

Several engines on one server (as several processes would be): each bucket
has one owner once they have heard of each other, an engine that stops hands
its buckets over at once, and one that dies (no heartbeat, no goodbye) loses
them within its lease. Correctness never rests on this: the claim script
still decides every batch.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from service.engine.engine import Engine
from service.models import Message
from tests.helpers import Collector, crash, running_engine, wait_until

BUCKETS = 16


def shares_settled(*engines: Engine) -> bool:
    """Every engine lists all of them, and their shares split the buckets."""
    ids = {e.ownership.process_id for e in engines}
    if any(set(e.ownership.live) != ids for e in engines):
        return False
    owned = Counter(b for e in engines for b in e.ownership.owned)
    return sorted(owned) == list(range(BUCKETS)) and set(owned.values()) == {1}


async def burst(engines: list[Engine], chats: int, tag: str) -> dict[str, list[str]]:
    sent = {f"{tag}-{i}": [f"{tag}-{i}-{k}" for k in range(3)] for i in range(chats)}
    for i, (chat, ids) in enumerate(sent.items()):
        add = engines[i % len(engines)].batcher.add_many  # appends go to any process
        await add([(chat, Message(id=m, text=m)) for m in ids])
    return sent


def delivered_once(collector: Collector, sent: dict[str, list[str]]) -> bool:
    got = Counter(m.id for b in collector.batches for m in b.messages if b.chat_id in sent)
    assert all(n == 1 for n in got.values()), "a message delivered twice"
    return sum(got.values()) == sum(len(v) for v in sent.values())


async def test_each_batch_is_claimed_by_its_buckets_owner_alone(redis_url: str) -> None:
    collector = Collector()
    async with (
        running_engine(redis_url, collector) as e1,
        running_engine(redis_url, collector) as e2,
        running_engine(redis_url, collector) as e3,
    ):
        engines = [e1, e2, e3]
        await wait_until(lambda: shares_settled(*engines))
        sent = await burst(engines, 90, "own")
        await wait_until(lambda: delivered_once(collector, sent))
        by_engine = [e.stats.claimed for e in engines]
        assert sum(by_engine) == 90 and all(n > 0 for n in by_engine)
        # Every engine heard every event, but only the owner ran the claim.
        assert sum(e.stats.claims_skipped for e in engines) <= 3
        assert all(e.stats.events >= 80 for e in engines)


async def test_a_stopping_engine_hands_its_buckets_over(redis_url: str) -> None:
    collector = Collector()
    async with running_engine(redis_url, collector) as keeper:
        async with running_engine(redis_url, collector) as leaver:
            await wait_until(lambda: shares_settled(keeper, leaver))
            assert len(keeper.ownership.owned) == BUCKETS // 2
        # leave() at stop: the keeper owns everything at its next heartbeat,
        # well before the leaver's lease (owner_lease_ms) would have run out.
        await wait_until(lambda: len(keeper.ownership.owned) == BUCKETS, timeout_s=0.25)
        sent = await burst([keeper], 20, "after")
        await wait_until(lambda: delivered_once(collector, sent))


async def test_a_dead_engine_loses_its_buckets_within_a_lease(redis_url: str) -> None:
    collector = Collector()
    async with running_engine(redis_url, collector) as survivor:
        victim = running_engine(redis_url, collector)
        dead = await victim.__aenter__()
        try:
            await wait_until(lambda: shares_settled(survivor, dead))
            await crash(dead)  # no more heartbeats, listeners or workers
            # Chats of every bucket, some of them the dead engine's: all delivered.
            sent = await burst([survivor], 40, "orphan")
            lease_s = survivor.settings.owner_lease_ms / 1000
            await wait_until(lambda: len(survivor.ownership.owned) == BUCKETS, lease_s * 2)
            await wait_until(lambda: delivered_once(collector, sent))
            assert {b.chat_id for b in collector.batches} >= set(sent)
        finally:
            await asyncio.wait_for(victim.__aexit__(None, None, None), 10)
