"""/healthz, /readyz and /metrics through the real app."""

from __future__ import annotations

from redis.asyncio import Redis

from tests.helpers import Collector, app_client, wait_until


async def test_health_ready_and_metrics(redis_url: str, redis_client: Redis) -> None:
    collector = Collector()
    async with app_client(redis_url, collector) as (client, engine):
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        await wait_until(lambda: engine.listener is not None and engine.listener.subscribed)
        r = await client.get("/readyz")
        assert r.status_code == 200, r.text
        await client.post("/v1/messages", json={"chat_id": "m", "id": "1", "text": "x"})
        await client.post("/v1/messages", json={"chat_id": "m", "id": "1", "text": "x"})
        text = (await client.get("/metrics")).text
        assert 'batcher_messages_total{outcome="accepted",source="api"} 1.0' in text
        assert 'batcher_messages_total{outcome="duplicate",source="api"} 1.0' in text
        assert "batcher_open_batches 1.0" in text
        await collector.wait_messages(1)
        await wait_until(lambda: engine.stats.delivered == 1)
        text = (await client.get("/metrics")).text
        assert 'batcher_batches_flushed_total{reason="idle"} 1.0' in text
        assert "batcher_batch_size_count 1.0" in text
        assert "batcher_flush_lag_seconds_count 1.0" in text
        assert "batcher_batches_delivered_total 1.0" in text
        # notifications switched off behind our back: not ready, and says why
        await redis_client.config_set("notify-keyspace-events", "")
        r = await client.get("/readyz")
        assert r.status_code == 503
        assert any("notifications" in reason for reason in r.json()["reasons"])
