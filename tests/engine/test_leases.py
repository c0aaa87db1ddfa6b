"""A handler never outlives its worker's lease (service/leases.py).

Once a lease runs out in Redis the sweeper hands the batch to another worker,
which may deliver it and then the chat's next batch: the first worker's
handler, still running, would overlap them at the bot. So the handler is
stopped as soon as a renewal is refused, or before the lease can run out when
renewals cannot reach Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from redis.asyncio import Redis

from service.models import Batch
from service.store.embedded import RedisServer
from service.store.keyspace import ChatKeys, Keyspace
from service.tooling.chaos.proxy import ChaosProxy
from tests.helpers import running_engine, wait_until

HANDLER_TIMEOUT_MS = 60_000  # far beyond every bound below: only the lease can stop the handler


def engine_keys(chat_id: str) -> ChatKeys:
    return Keyspace().chat(chat_id)  # the settings' default prefix and buckets


class Blocking:
    """A handler whose first call runs until it is cancelled; later calls return."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled_at: float | None = None  # wall clock, like Redis's TIME
        self.delivered: list[Batch] = []

    async def __call__(self, batch: Batch) -> None:
        if self.started.is_set():
            self.delivered.append(batch)
            return
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled_at = time.time()
            raise


async def test_handler_is_stopped_when_another_worker_takes_its_batch(
    redis_client: Redis, redis_url: str
) -> None:
    ck = engine_keys("taken")
    handler = Blocking()
    async with running_engine(
        redis_url, handler, lease_ms=600, handler_timeout_ms=HANDLER_TIMEOUT_MS
    ) as engine:
        await engine.add("taken", "hello")
        await asyncio.wait_for(handler.started.wait(), 5)
        # What a redelivery by another worker does: the lease token changes hands.
        await redis_client.hset(ck.meta, "token", "another-worker")
        t0 = time.time()
        await wait_until(lambda: handler.cancelled_at is not None, timeout_s=5)
        assert handler.cancelled_at is not None
        assert handler.cancelled_at - t0 < 0.6  # the next renewal (every 200 ms) stops it
        # This worker neither acked nor retried the batch: it belongs to the other one.
        assert await redis_client.hget(ck.meta, "token") == b"another-worker"
        assert await redis_client.hget(ck.meta, "attempt") == b"1"
        assert handler.delivered == []


async def test_handler_is_stopped_before_the_lease_runs_out_when_redis_is_cut_off(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()
    proxy = ChaosProxy(server.port)
    await proxy.start()
    direct = Redis.from_url(server.url)
    ck = engine_keys("cut-off")
    handler = Blocking()
    lease_ms = 900
    try:
        async with running_engine(
            proxy.url,
            handler,
            lease_ms=lease_ms,
            handler_timeout_ms=HANDLER_TIMEOUT_MS,
            sweep_interval_ms=50,
        ) as engine:
            await engine.add("cut-off", "hello")
            await asyncio.wait_for(handler.started.wait(), 5)
            proxy.blackhole(True)  # renewals now vanish: no reply, no reset
            await wait_until(lambda: handler.cancelled_at is not None, timeout_s=5)
            lease_deadline_ms = await direct.zscore(ck.bucket.inflight, "cut-off")
            assert handler.cancelled_at is not None and lease_deadline_ms is not None
            # Stopped while the lease still held: nobody else could have the batch yet.
            assert handler.cancelled_at * 1000 < lease_deadline_ms
            proxy.blackhole(False)
            proxy.zombie_s = 0.0  # reset the stuck connections now; the engine reconnects
            await wait_until(lambda: len(handler.delivered) == 1, timeout_s=15)
            assert [m.text for m in handler.delivered[0].messages] == ["hello"]
    finally:
        await direct.aclose()
        await proxy.stop()
