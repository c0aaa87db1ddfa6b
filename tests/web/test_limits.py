"""Limits: each gives a clear 4xx/413 and a metric, never a crash or a partial append."""

from __future__ import annotations

import json

from redis.asyncio import Redis

from service.models import Message
from tests.helpers import Collector, app_client, running_engine, wa_text_payload


def wa_doc(n: int) -> dict[str, object]:
    return wa_text_payload([(f"1555{i % 7}", f"wamid.L{i}", "hi") for i in range(n)])


async def test_request_limits(redis_url: str, redis_client: Redis) -> None:
    async with app_client(redis_url, Collector()) as (client, engine):
        r = await client.post("/webhooks/whatsapp", content=json.dumps(wa_doc(1001)))
        assert r.status_code == 413 and "1000 messages" in r.json()["error"]
        r = await client.post("/webhooks/whatsapp", content=json.dumps(wa_doc(1000)))
        assert r.status_code == 200
        big = {"chat_id": "c", "id": "big", "text": "t", "data": {"blob": "x" * 70_000}}
        r = await client.post(
            "/v1/messages",
            json={"messages": [{"chat_id": "c", "id": "small", "text": "fine"}, big]},
        )
        assert r.status_code == 413 and "byte limit" in r.json()["error"]
        r = await client.post("/v1/messages", json={"chat_id": "c" * 1025, "text": "x"})
        assert r.status_code == 422 and r.json()["fields"][0]["field"] == "chat_id"
        r = await client.post(
            "/v1/messages", json={"messages": [{"chat_id": "c", "text": "x"}] * 1001}
        )
        assert r.status_code == 422 and r.json()["fields"][0]["field"] == "messages"
        metrics = (await client.get("/metrics")).text
        assert 'batcher_http_requests_total{endpoint="whatsapp",status="413"} 1.0' in metrics
        assert 'batcher_http_requests_total{endpoint="generic",status="413"} 1.0' in metrics
        assert 'batcher_messages_total{outcome="rejected",source="api"} 2.0' in metrics
        # the refused generic POST stored nothing, not even its small message
        ck = engine.keys.chat("c")
        assert await redis_client.llen(ck.buf) == 0


async def test_batch_closes_at_max_bytes(redis_url: str) -> None:
    collector = Collector()
    async with running_engine(
        redis_url, collector, idle_ms=5_000, max_wait_ms=20_000, max_batch_bytes=2048
    ) as engine:
        for i in range(3):
            await engine.add("bulky", Message(id=str(i), text="y" * 900))
        await collector.wait_messages(3, timeout_s=3)  # well before idle_ms
    assert collector.batches[0].reason == "max_bytes"
    assert [len(b.messages) for b in collector.batches] == [3]
