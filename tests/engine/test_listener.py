"""Fault tests of the event path: the expired-event listener, the nudger and
the sweeper that covers for both (pitfalls P1, P3, P5, P8, P10,
P11, P14-P16 of docs/guarantees.md).

Every test runs a real engine against a real redis-server and checks that
each message is delivered exactly once, in order, in its own chat, whatever
happens to the events: background expiry off, notifications off, timers
deleted without an ``expired`` event, the subscriber killed over and over,
the server frozen (a half-open connection), the subscriber's output buffer
overflowing.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import Callable, Iterable

import redis as sync_redis
from redis.asyncio import Redis

from service.engine.engine import Engine
from service.models import Message
from service.store.backlog import read_backlog
from service.store.embedded import RedisServer
from tests.helpers import Collector, assert_exactly_once, poll, running_engine, wait_until

CHANNEL = b"__keyevent@0__:expired"
Factory = Callable[..., RedisServer]  # the redis_factory fixture


# --- helpers -----------------------------------------------------------------


def msg(chat: str, i: int) -> Message:
    return Message(id=f"{chat}#{i}", text=f"{chat}:{i}")


async def send(engine: Engine, chats: Iterable[str], per_chat: int) -> dict[str, list[str]]:
    """Append ``per_chat`` messages to every chat; returns the expected texts."""
    expected: dict[str, list[str]] = {}
    for chat in chats:
        for i in range(per_chat):
            result = await engine.add(chat, msg(chat, i))
            assert result.accepted
            expected.setdefault(chat, []).append(f"{chat}:{i}")
    return expected


async def assert_drained(client: Redis, engine: Engine) -> None:
    """Nothing left due, in flight or claimed: no later (duplicate) delivery can happen."""

    async def drained() -> bool:
        return (await read_backlog(client, engine.keys)).pending == 0

    await poll(drained, 5.0)
    assert [k async for k in client.scan_iter(match=b"batcher:*:proc:*")] == []


async def subscribed(engine: Engine) -> None:
    await wait_until(lambda: engine.listener is not None and engine.listener.subscribed, 10.0)


async def numsub(client: Redis) -> int:
    return int(dict(await client.pubsub_numsub(CHANNEL))[CHANNEL])


async def notify_flags(client: Redis) -> str:
    (value,) = (await client.config_get("notify-keyspace-events")).values()
    return value.decode() if isinstance(value, bytes) else str(value)


async def is_valkey(client: Redis) -> bool:
    return "valkey_version" in await client.info("server")


# --- events that never come ----------------------------------------------------


async def test_sweeper_delivers_with_active_expiry_and_nudger_off(
    redis_url: str, redis_client: Redis
) -> None:
    """P1/P3: with background expiry off and no nudger, nothing deletes an
    overdue timer, so no ``expired`` event is ever published on its own; the
    listener is up but hears nothing until the sweeper claims from the index."""
    await redis_client.execute_command("DEBUG", "SET-ACTIVE-EXPIRE", 0)
    collector = Collector()
    async with running_engine(redis_url, collector, nudge_interval_ms=60_000) as engine:
        await subscribed(engine)
        chats = [f"noexp-{n}" for n in range(30)]
        expected = await send(engine, chats, 2)
        await collector.wait_messages(60, timeout_s=10)
        await assert_drained(redis_client, engine)
        assert_exactly_once(collector, expected)
        assert engine.stats.nudged == 0
        assert engine.stats.recovered == 30
        assert {b.reason for b in collector.batches} == {"recovered"}
        assert engine.listener is not None and engine.listener.subscribed


async def test_sweeper_delivers_when_notifications_are_turned_off(
    redis_url: str, redis_client: Redis
) -> None:
    """P10: notifications switched off behind the engine's back (after its
    start-up check): the nudger still deletes the overdue timers, silently;
    every batch comes from the sweeper."""
    collector = Collector()
    async with running_engine(redis_url, collector) as engine:
        await subscribed(engine)
        await redis_client.config_set("notify-keyspace-events", "")
        chats = [f"nonotify-{n}" for n in range(20)]
        expected = await send(engine, chats, 3)
        await collector.wait_messages(60, timeout_s=10)
        await assert_drained(redis_client, engine)
        assert_exactly_once(collector, expected)
        assert engine.stats.events == 0
        assert engine.stats.nudged > 0  # the timers were touched, and no event came
        assert engine.stats.recovered == 20
        assert {b.reason for b in collector.batches} == {"recovered"}


async def test_timer_expired_by_an_outsider_with_pexpire_0(
    redis_url: str, redis_client: Redis
) -> None:
    """P5: ``PEXPIRE timer 0`` deletes the timer with a ``del`` event (Redis),
    not ``expired``: the chat is still delivered, by the sweeper, once its
    deadline plus the grace period has passed (never lost, never early)."""
    collector = Collector()
    async with running_engine(redis_url, collector) as engine:
        await subscribed(engine)
        expected = await send(engine, ["victim", "control"], 3)
        timer = engine.keys.chat("victim").timer
        assert await redis_client.pexpire(timer, 0)
        assert not await redis_client.exists(timer)
        await collector.wait_messages(6, timeout_s=10)
        await assert_drained(redis_client, engine)
        assert_exactly_once(collector, expected)
        (victim,) = collector.by_chat()["victim"]
        (control,) = collector.by_chat()["control"]
        assert control.reason == "idle"
        if not await is_valkey(redis_client):  # Valkey >= 8.0 publishes `expired` here
            assert victim.reason == "recovered"
            assert engine.stats.recovered == 1
            grace_s = engine.settings.sweep_grace_ms / 1000
            assert victim.closed_at - victim.deadline_at >= grace_s - 0.01


# --- the subscriber connection ---------------------------------------------------


async def test_pubsub_kill_storm(redis_url: str, redis_client: Redis) -> None:
    """P14: ``CLIENT KILL TYPE pubsub`` every 200 ms for 3 s while 40 chats
    send 3-5 messages 20-80 ms apart. Events published while the listener is
    away are lost; the sweeps after each resubscribe (and the periodic ones)
    recover those chats. Afterwards exactly one subscription is left."""
    rng = random.Random(1234)
    collector = Collector()
    async with running_engine(redis_url, collector) as engine:
        await subscribed(engine)
        stats = engine.stats
        kills: list[int] = []

        async def storm() -> None:
            for _ in range(15):
                kills.append(await redis_client.client_kill_filter(_type="pubsub"))
                await asyncio.sleep(0.2)  # the storm's rhythm: time is the subject

        async def chat_traffic(chat: str, n: int, start_s: float) -> list[str]:
            await asyncio.sleep(start_s)  # spread the chats over the storm
            texts = []
            for i in range(n):
                assert (await engine.add(chat, msg(chat, i))).accepted
                texts.append(f"{chat}:{i}")
                await asyncio.sleep(rng.uniform(0.02, 0.08))  # the user's typing pace
            return texts

        chats = [f"storm-{n}" for n in range(40)]
        plan = [(c, rng.randint(3, 5), rng.uniform(0, 2.6)) for c in chats]
        sent = await asyncio.gather(storm(), *(chat_traffic(*p) for p in plan))
        expected = dict(zip(chats, sent[1:], strict=True))
        total = sum(len(t) for t in expected.values())

        sweeps_after_storm = stats.sweeps
        await collector.wait_messages(total, timeout_s=15)
        await subscribed(engine)
        await assert_drained(redis_client, engine)
        assert_exactly_once(collector, expected)

        assert sum(kills) >= 3  # the storm did hit a subscriber
        assert stats.subscribes >= 4  # resubscribed after at least 3 kills
        await wait_until(lambda: stats.sweeps > sweeps_after_storm, 5.0)
        assert await numsub(redis_client) == 1
        assert stats.reconnects >= 3


async def test_each_resubscribe_rechecks_config_and_sweeps(
    redis_url: str, redis_client: Redis
) -> None:
    """P8 + reconcile: with the periodic sweep pushed out of the way (60 s),
    chats whose events were never published (notifications off) stay
    undelivered until the listener reconnects; each reconnect turns the
    notifications back on (configure_redis) and sweeps, which delivers them."""
    collector = Collector()
    async with running_engine(redis_url, collector, sweep_interval_ms=60_000) as engine:
        await subscribed(engine)
        expected: dict[str, list[str]] = {}
        for round_ in range(1, 3):
            await redis_client.config_set("notify-keyspace-events", "")
            chats = [f"resub{round_}-{n}" for n in range(5)]
            expected |= await send(engine, chats, 2)
            # Let the deadlines and the sweeper's grace pass (time is the subject):
            # the nudger deletes the timers, silently.
            s = engine.settings
            await asyncio.sleep((s.idle_ms + s.sweep_grace_ms + 200) / 1000)
            ck = [engine.keys.chat(c) for c in chats]
            assert not any([await redis_client.exists(k.timer) for k in ck])
            assert collector.message_count() == (round_ - 1) * 10  # nothing else delivers them

            await redis_client.client_kill_filter(_type="pubsub")
            await collector.wait_messages(round_ * 10, timeout_s=5)
            assert engine.stats.subscribes == round_ + 1
            flags = await notify_flags(redis_client)
            assert "E" in flags and "x" in flags

        await assert_drained(redis_client, engine)
        assert_exactly_once(collector, expected)
        assert {b.reason for b in collector.batches} == {"recovered"}


async def test_reconnects_counts_every_reconnect(redis_url: str, redis_client: Redis) -> None:
    """Stats contract (stats.py): one subscribe confirmation for the first
    subscription, then one per reconnect; so one lost connection is one
    reconnect (operators alert on this counter)."""
    async with running_engine(redis_url, Collector()) as engine:
        await subscribed(engine)
        assert engine.stats.reconnects == 0
        assert await redis_client.client_kill_filter(_type="pubsub") == 1
        await wait_until(lambda: engine.stats.subscribes == 2, 5.0)
        await subscribed(engine)
        assert engine.stats.reconnects == 1


async def test_reconnect_backoff_resets_after_a_healthy_subscription(
    redis_url: str, redis_client: Redis
) -> None:
    """One disconnect after a healthy subscription must cost one short
    backoff, not a backoff that grew with every disconnect since the process
    started (events published meanwhile are lost: latency of sweep grace)."""
    collector = Collector()
    async with running_engine(redis_url, collector) as engine:
        await subscribed(engine)
        listener = engine.listener
        assert listener is not None
        took: list[float] = []
        for _ in range(6):
            await asyncio.sleep(0.3)  # a healthy subscription for a while: time is the subject
            await redis_client.client_kill_filter(_type="pubsub")
            t0 = time.monotonic()
            await wait_until(lambda: not listener.subscribed, 5.0)
            await subscribed(engine)
            took.append(time.monotonic() - t0)
        assert engine.stats.subscribes == 7
        # The backoff starts again at 50 ms after each good subscription; had it
        # kept doubling, the sixth reconnect would wait 1.6 s. The bound sits
        # between the two with room for a slow machine.
        assert max(took) < 1.0, f"resubscribe took {[round(t, 2) for t in took]} s"


async def test_half_open_connection_is_declared_dead(redis_factory: Factory) -> None:
    """P15: a frozen server (SIGSTOP) looks like a half-open socket: no error,
    no data. The listener's own ping must declare it dead within
    listener_dead_ms (+ one ping period), then reconnect once the server is
    back, and the messages appended before the freeze are delivered once."""
    server = redis_factory()
    pid = server.pid
    assert pid is not None
    client = Redis.from_url(server.url)
    collector = Collector()
    dead_ms, ping_ms = 800, 100
    try:
        async with running_engine(
            server.url, collector, idle_ms=300, listener_dead_ms=dead_ms, listener_ping_ms=ping_ms
        ) as engine:
            await subscribed(engine)
            listener = engine.listener
            assert listener is not None
            expected = await send(engine, [f"frozen-{n}" for n in range(5)], 3)

            os.kill(pid, signal.SIGSTOP)
            frozen_at = time.monotonic()
            try:
                await wait_until(lambda: not listener.subscribed, 5.0)
                declared_dead_after = time.monotonic() - frozen_at
                assert not engine.healthy()
                # Keep the server frozen past the bound (time is the subject).
                await asyncio.sleep(
                    max(0.0, frozen_at + (dead_ms + 1000) / 1000 - time.monotonic())
                )
            finally:
                os.kill(pid, signal.SIGCONT)
            assert declared_dead_after <= (dead_ms + ping_ms + 400) / 1000

            await wait_until(lambda: listener.subscribed and engine.stats.subscribes == 2, 10.0)
            await collector.wait_messages(15, timeout_s=10)
            await assert_drained(client, engine)
            assert_exactly_once(collector, expected)
            assert await numsub(client) == 1
            # the dead connection, plus any reconnect attempt that timed out
            # while the server was still frozen
            assert engine.stats.reconnects >= 1
    finally:
        await client.aclose()


def flood_while_deaf(redis_url: str) -> int:
    """Synchronous on purpose: it blocks the caller's event loop (the engine's
    listener stops reading) while another connection makes Redis publish
    ~16 MB of events to it, more than the kernel's socket buffers absorb, so
    Redis's own output buffer for the subscriber passes its hard limit.
    Returns the subscribers left on the expired channel afterwards."""
    noise = [f"noise:{n}:".encode() + b"x" * 4000 for n in range(4000)]
    with sync_redis.Redis.from_url(redis_url) as sync:
        pipe = sync.pipeline(transaction=False)
        for key in noise:
            pipe.set(key, 1, px=1)
        pipe.execute()
        time.sleep(0.01)  # let the noise keys expire (time is the subject)
        pipe = sync.pipeline(transaction=False)
        for key in noise:
            pipe.exists(key)  # lazy expiry: one event each, at once
        pipe.execute()
        time.sleep(0.6)  # the chats' deadlines pass while the listener is deaf
        return int(sync.pubsub_numsub(CHANNEL)[0][1])


async def test_subscriber_output_buffer_overflow(redis_url: str, redis_client: Redis) -> None:
    """P11: a listener that stops reading (its event loop blocked) while a
    burst of events arrives is disconnected by Redis once its output buffer
    passes the pubsub hard limit; every event queued for it is lost. The
    reconnect and its sweep deliver the chats anyway."""
    await redis_client.config_set("client-output-buffer-limit", "pubsub 64kb 32kb 1")
    collector = Collector()
    async with running_engine(redis_url, collector) as engine:
        await subscribed(engine)
        expected = await send(engine, [f"overflow-{n}" for n in range(10)], 2)
        # Block this process's event loop, and so the engine's listener with it.
        subscribers_left = flood_while_deaf(redis_url)
        assert subscribers_left == 0  # Redis dropped the subscriber
        await collector.wait_messages(20, timeout_s=10)
        await assert_drained(redis_client, engine)
        assert_exactly_once(collector, expected)
        await subscribed(engine)
        assert engine.stats.subscribes >= 2
        assert await numsub(redis_client) == 1
