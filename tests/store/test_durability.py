"""BATCHER_ACK_REPLICAS: a message is acknowledged only once replicas have it."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from service.engine.batcher import Batcher
from service.errors import RedisUnavailable
from service.models import Message
from service.store.connections import create_redis
from tests.helpers import fast_settings, poll


async def test_ack_waits_for_the_replica(redis_factory) -> None:  # type: ignore[no-untyped-def]
    primary = redis_factory(extra_args=("--repl-diskless-sync-delay", "0"))
    replica = redis_factory(extra_args=("--replicaof", "127.0.0.1", str(primary.port)))
    p = create_redis(primary.url)
    r = create_redis(replica.url)
    try:

        async def linked() -> bool:
            info = await r.info("replication")
            return bool(info.get("master_link_status") == "up")

        await poll(linked)
        batcher = Batcher(p, fast_settings(primary.url, ack_replicas=1, ack_timeout_ms=2000))
        for i in range(50):
            await batcher.add("chat", Message(id=str(i), text=f"m{i}"))
            # acknowledged => already on the replica, with no waiting on our side
            assert await r.llen(batcher.keys.chat("chat").buf) == i + 1

        replica.stop(kill=True)  # the replica is gone
        slow = Batcher(p, fast_settings(primary.url, ack_replicas=1, ack_timeout_ms=200))
        with pytest.raises(RedisUnavailable, match="replica"):
            await slow.add("chat", Message(id="late", text="not acknowledged"))
        # not acknowledged means the sender retries; the retry is a duplicate, not a loss
        replica.start()
        await poll(linked)
        again = await slow.add("chat", Message(id="late", text="not acknowledged"))
        assert again.duplicate
    finally:
        await p.aclose()
        await r.aclose()


async def test_without_replicas_setting_nothing_waits(redis_url: str, redis_client: Redis) -> None:
    batcher = Batcher(redis_client, fast_settings(redis_url))
    assert (await batcher.add("c", "x")).accepted
    info = await redis_client.info("commandstats")
    assert "cmdstat_wait" not in info
