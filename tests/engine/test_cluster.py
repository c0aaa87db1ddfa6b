"""The engine on a real local Redis Cluster (3 primaries, 3 replicas).

Each test runs several engines (as several service processes would be)
against the cluster while it changes under them, and checks what the bot
must always see: every acknowledged message delivered, in order per chat,
never two batches of one chat at the bot at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis

from service.engine.engine import Engine
from service.errors import RedisUnavailable
from service.models import Batch, Message
from service.store.connections import connect
from service.store.keyspace import Keyspace
from service.tooling.cluster import LocalCluster
from tests.helpers import crash, fast_settings, wait_until

KS = Keyspace()


class Bot:
    """A handler that records batches and fails the test on overlapping ones."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self.busy: set[str] = set()
        self.overlaps: list[str] = []

    async def __call__(self, batch: Batch) -> None:
        if batch.chat_id in self.busy:
            self.overlaps.append(batch.chat_id)
        self.busy.add(batch.chat_id)
        await asyncio.sleep(0.002)  # a handler takes time: overlaps would show
        self.busy.discard(batch.chat_id)
        self.batches.append(batch)

    def delivered(self) -> Counter[str]:
        return Counter(m.id for b in self.batches for m in b.messages)

    def assert_in_order(self, sent: dict[str, list[str]]) -> None:
        assert not self.overlaps, f"two batches of one chat at once: {self.overlaps[:3]}"
        for chat, ids in sent.items():
            got = [m.id for b in sorted(self.batches, key=lambda b: b.seq) for m in b.messages
                   if b.chat_id == chat]  # fmt: skip
            order = {m: i for i, m in enumerate(ids)}
            seen = [order[m] for m in dict.fromkeys(got) if m in order]
            assert seen == sorted(seen), f"{chat}: out of order {got}"


@contextlib.asynccontextmanager
async def engines(
    cluster: LocalCluster, bot: Bot, n: int = 2, **overrides: Any
) -> AsyncIterator[list[Engine]]:
    clients: list[Redis] = []
    running: list[Engine] = []
    try:
        for _ in range(n):
            client = await connect(cluster.url)
            clients.append(client)
            engine = Engine(client, fast_settings(cluster.url, **overrides), bot,
                            shutdown_timeout_s=2)  # fmt: skip
            await engine.start()
            running.append(engine)
        yield running
    finally:
        for engine in running:
            await engine.stop()
        for client in clients:
            await client.aclose()


async def send(engines: list[Engine], sent: dict[str, list[str]], chats: int, k: int) -> int:
    """Message ``k`` of every chat, spread over the engines; how many were acknowledged."""
    acked = 0
    for i in range(chats):
        chat, mid = f"cl-{i}", f"cl-{i}-{k}"
        try:
            await engines[i % len(engines)].add(chat, Message(id=mid, text=mid))
        except RedisUnavailable:
            continue  # not acknowledged: the sender would retry
        sent.setdefault(chat, []).append(mid)
        acked += 1
    return acked


def all_delivered(bot: Bot, sent: dict[str, list[str]]) -> bool:
    got = bot.delivered()
    return all(got[m] >= 1 for ids in sent.values() for m in ids)


async def test_every_bucket_every_primary(redis_cluster: LocalCluster) -> None:
    bot = Bot()
    sent: dict[str, list[str]] = {}
    async with engines(redis_cluster, bot) as running:
        for e in running:  # one listener per primary, subscribed
            await wait_until(lambda e=e: len(e.listeners.states()) == 3 and e.healthy())
        nodes = running[0].redis.get_nodes()  # type: ignore[attr-defined]
        assert all(n.connection_class.__name__.startswith("Hardened") for n in nodes)
        for k in range(3):
            assert await send(running, sent, 64, k) == 64
        assert {KS.bucket_of(c) for c in sent} == set(range(KS.buckets))
        await wait_until(lambda: all_delivered(bot, sent))
        await asyncio.sleep(0.3)  # time is the subject: no late second delivery
    assert set(bot.delivered().values()) == {1}
    bot.assert_in_order(sent)
    assert sum(e.stats.claims_skipped for e in running) <= 5  # one owner per bucket


async def test_failover_of_a_primary_under_traffic(redis_cluster: LocalCluster) -> None:
    bot = Bot()
    sent: dict[str, list[str]] = {}
    async with engines(redis_cluster, bot) as running:
        await wait_until(lambda: all(len(e.listeners.states()) == 3 for e in running))
        await send(running, sent, 48, 0)
        old = redis_cluster.primaries()[0]
        (replica,) = redis_cluster.replicas_of(old)
        failover = asyncio.create_task(asyncio.to_thread(redis_cluster.failover, replica))
        k = 1
        while not failover.done():
            await send(running, sent, 48, k)
            k += 1
        await failover
        await send(running, sent, 48, k)
        new = f"127.0.0.1:{replica.port}"
        for e in running:  # the promoted replica gets a listener; the old primary none
            await wait_until(lambda e=e: new in e.listeners.states(), timeout_s=10)
        await wait_until(lambda: all_delivered(bot, sent), timeout_s=20)
    bot.assert_in_order(sent)


async def test_killed_primary_loses_no_acknowledged_message(redis_cluster: LocalCluster) -> None:
    """With BATCHER_ACK_REPLICAS=1 an acknowledged message is on a replica: a
    SIGKILL of its primary (the replica takes over) loses none of them."""
    bot = Bot()
    sent: dict[str, list[str]] = {}
    async with engines(redis_cluster, bot, ack_replicas=1, idle_ms=400) as running:
        await wait_until(lambda: all(len(e.listeners.states()) == 3 for e in running))
        await send(running, sent, 48, 0)
        victim = redis_cluster.primaries()[1]
        redis_cluster.kill(victim)
        refused = 0
        for k in range(1, 40):
            refused += 48 - await send(running, sent, 48, k)
            if k > 5 and refused and await asyncio.to_thread(_ok, redis_cluster):
                break
        await send(running, sent, 48, 99)
        await wait_until(lambda: all_delivered(bot, sent), timeout_s=30)
    bot.assert_in_order(sent)


def _ok(cluster: LocalCluster) -> bool:
    try:
        cluster.wait_ok(timeout_s=0.2)
    except Exception:
        return False
    return True


async def test_a_bucket_slot_moved_to_another_primary(redis_cluster: LocalCluster) -> None:
    bot = Bot()
    sent: dict[str, list[str]] = {}
    async with engines(redis_cluster, bot, idle_ms=600) as running:
        await wait_until(lambda: all(len(e.listeners.states()) == 3 for e in running))
        await send(running, sent, 32, 0)  # open batches in every bucket
        client = running[0].redis
        slot = client.keyslot(KS.chat("cl-0").bucket.due)  # type: ignore[attr-defined]
        source = redis_cluster.node_for_slot(slot)
        target = next(p for p in redis_cluster.primaries() if p.port != source.port)
        await asyncio.to_thread(redis_cluster.move_slot, slot, target)
        assert redis_cluster.node_for_slot(slot).port == target.port
        await send(running, sent, 32, 1)
        await wait_until(lambda: all_delivered(bot, sent), timeout_s=20)
    assert set(bot.delivered().values()) == {1}
    bot.assert_in_order(sent)


async def test_a_new_primary_takes_bucket_slots(redis_cluster: LocalCluster) -> None:
    """A fourth primary joins, bucket slots move to it: its listener starts,
    the batches whose keys moved are delivered from there."""
    bot = Bot()
    sent: dict[str, list[str]] = {}
    async with engines(redis_cluster, bot, idle_ms=600) as running:
        await wait_until(lambda: all(len(e.listeners.states()) == 3 for e in running))
        await send(running, sent, 32, 0)
        fourth = await asyncio.to_thread(redis_cluster.add_primary)
        client = running[0].redis
        for bucket in (0, 5):  # bucket 0 also holds the process registry
            slot = client.keyslot(KS.bucket(bucket).due)  # type: ignore[attr-defined]
            await asyncio.to_thread(redis_cluster.move_slot, slot, fourth)
        name = f"127.0.0.1:{fourth.port}"
        for e in running:
            await wait_until(lambda e=e: e.listeners.states().get(name) is True, timeout_s=10)
        await send(running, sent, 32, 1)
        await wait_until(lambda: all_delivered(bot, sent), timeout_s=20)
    assert set(bot.delivered().values()) == {1}
    bot.assert_in_order(sent)


async def test_a_process_killed_while_owning_buckets(redis_cluster: LocalCluster) -> None:
    bot = Bot()
    sent: dict[str, list[str]] = {}
    async with engines(redis_cluster, bot, n=3) as running:
        await wait_until(lambda: all(len(e.ownership.owned) < KS.buckets for e in running))
        victim, survivors = running[0], running[1:]
        await crash(victim)  # no more heartbeats, listeners or workers
        await send(survivors, sent, 48, 0)
        lease_s = victim.settings.owner_lease_ms / 1000
        await wait_until(
            lambda: sum(len(e.ownership.owned) for e in survivors) == KS.buckets, lease_s * 3
        )
        await wait_until(lambda: all_delivered(bot, sent), timeout_s=20)
    assert set(bot.delivered().values()) == {1}
    bot.assert_in_order(sent)
