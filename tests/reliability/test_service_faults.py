"""Service bugs found by the chaos soak, reduced to one fault each (issue 6).

Both failed before the fixes (connections.py turns the uvloop error into a
ConnectionError; the delivery stops heartbeats with an event it checks and
awaits them, and hands a broken-off delivery's lease back at once).

1. A connection reset while ``batcher serve`` runs on uvloop (its default loop):
   redis-py writes to a transport the peer has closed and uvloop raises
   ``RuntimeError("unable to perform operation on <TCPTransport closed=True ...>;
   the handler is closed")``, which redis-py does not turn into a
   ``ConnectionError``. The nudger (and, more rarely, the listener) only catch
   ``RedisError``/``OSError``: the task ends, silently, for the life of the process.
2. A batch whose worker gave up on it (an exception escaped ``deliver``, e.g. that
   same RuntimeError from the nack) must be redelivered once its lease runs out. It
   is not when a heartbeat task outlived its attempt: on Python 3.11, redis-py's
   ``asyncio.wait_for`` around socket writes can swallow the ``cancel()`` meant to
   stop the heartbeat, which then renews the lease (same token) every ``lease/3``
   for ever. Seen in a 5-minute soak: 6 chats stalled 74 s (427 messages waited
   over 30 s) after a sink hang, until a later fault let the leases lapse.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import pytest
import uvloop

from service.engine.delivery import Delivery
from service.engine.engine import Engine
from service.models import Batch
from service.settings import Settings
from service.store.connections import create_redis
from service.store.embedded import RedisServer
from service.tooling.chaos.proxy import ChaosProxy

GIVE_UP_WITHIN = 40  # attempts; with no heartbeat left over by then the handler succeeds


def settings(url: str, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "redis_url": url,
        "idle_ms": 50,
        "max_wait_ms": 5_000,
        "nudge_interval_ms": 2,
        "sweep_interval_ms": 50,
        "sweep_grace_ms": 100,
        "listener_ping_ms": 20,
        "listener_dead_ms": 500,
        "retry_base_ms": 10,
        "retry_max_ms": 20,
    }
    return Settings(**{**base, **overrides})


async def nothing(batch: Batch) -> None:
    return None


def test_connection_resets_leave_every_background_loop_running(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()

    async def scenario() -> list[str]:
        proxy = ChaosProxy(server.port)
        await proxy.start()
        engine = Engine(create_redis(proxy.url), settings(proxy.url), nothing)
        await engine.start()
        try:
            for i in range(100):
                proxy.cut(rst=True)
                await asyncio.sleep(0.005 + (i % 5) * 0.004)
            assert engine.listeners is not None
            tasks = [*engine._tasks, *(n.task for n in engine.listeners.nodes.values())]
            assert len(tasks) == 5  # topology, nudger, sweeper, ownership; one listener
            return [f"{task.get_name()}: {task.exception()!r}" for task in tasks if task.done()]
        finally:
            await engine.stop()
            await proxy.stop()

    ended = uvloop.run(scenario())
    assert ended == [], ended


async def test_a_batch_its_worker_gave_up_on_is_redelivered(
    redis_factory: Callable[..., RedisServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = redis_factory()
    lease_ms = 300
    state: dict[str, Any] = {"calls": 0, "gave_up": None, "delivered": None}
    delivered = asyncio.Event()

    async def handler(batch: Batch) -> None:
        state["calls"] += 1
        if state["gave_up"] is None and state["calls"] < GIVE_UP_WITHIN:
            # Fail just as the heartbeat renews the lease (the soak's forward timeout
            # equalled lease/3, the heartbeat period), a little later each time.
            await asyncio.sleep(lease_ms / 3 / 1000 + (state["calls"] % 20) * 0.0001)
            raise ValueError("bot down")
        state["delivered"] = time.monotonic()
        delivered.set()

    real_call = Delivery._call

    async def call(self: Delivery, c: Any) -> Any:
        if c[0].name == "nack" and state["gave_up"] is None and state["calls"] < GIVE_UP_WITHIN:
            await asyncio.sleep(0.02)  # a heartbeat that was really cancelled is gone now
            alive = [
                t for t in asyncio.all_tasks() if t.get_coro().__qualname__.endswith("Lease.keep")
            ]
            if alive:
                state["gave_up"] = time.monotonic()
                # what uvloop raises when the nack meets a connection reset
                raise RuntimeError("unable to perform operation on <TCPTransport closed=True>")
        return await real_call(self, c)

    monkeypatch.setattr(Delivery, "_call", call)
    engine = Engine(
        create_redis(server.url),
        settings(server.url, lease_ms=lease_ms, max_attempts=1_000),
        handler,
        shutdown_timeout_s=1,
    )
    await engine.start()
    try:
        await engine.add("chat-1", "hello")
        # Done when delivered, or 3 s after the worker gave up (10 x the lease).
        while not delivered.is_set():
            if state["gave_up"] is not None and time.monotonic() - state["gave_up"] > 3.0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(delivered.wait(), 0.1)
    finally:
        await engine.stop()
    assert state["delivered"] is not None, f"not redelivered (worker gave up: {state})"
    if state["gave_up"] is not None:
        # the lease (300 ms) runs out, the sweeper (every 50 ms) redelivers
        assert state["delivered"] - state["gave_up"] < 3.0
