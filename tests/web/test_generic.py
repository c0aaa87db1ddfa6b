"""POST /v1/messages through the real app."""

from __future__ import annotations

from redis.asyncio import Redis

from tests.helpers import Collector, app_client


async def test_one_message_then_a_list(redis_url: str) -> None:
    collector = Collector()
    async with app_client(redis_url, collector) as (client, _engine):
        r = await client.post("/v1/messages", json={"chat_id": "web:1", "id": "a", "text": "hi"})
        assert r.status_code == 202
        assert r.json() == {"accepted": 1, "duplicates": 0}
        r = await client.post(
            "/v1/messages",
            json={
                "messages": [
                    {"chat_id": "web:1", "id": "a", "text": "hi"},
                    {"chat_id": "web:1", "id": "b", "text": "there", "data": {"k": [1, 2]}},
                    {"chat_id": "web:2", "text": "no id", "sent_at": 1764410001.5},
                ]
            },
        )
        assert r.json() == {"accepted": 2, "duplicates": 1}
        await collector.wait_messages(3)
    assert collector.texts("web:1") == ["hi", "there"]
    assert collector.texts("web:2") == ["no id"]
    msg = collector.by_chat()["web:1"][0].messages[1]
    assert msg.data == {"k": [1, 2]} and msg.source == "api"


async def test_validation_errors_name_the_field(redis_url: str, redis_client: Redis) -> None:
    async with app_client(redis_url, Collector()) as (client, engine):
        r = await client.post("/v1/messages", json={"text": "no chat"})
        assert r.status_code == 422
        assert r.json()["fields"][0]["field"] == "chat_id"
        r = await client.post(
            "/v1/messages",
            json={"messages": [{"chat_id": "ok", "text": "x"}, {"chat_id": 5, "text": "y"}]},
        )
        assert r.status_code == 422
        assert r.json()["fields"][0]["field"] == "messages.1.chat_id"
        r = await client.post("/v1/messages", json={"chat_id": "c", "colour": "red"})
        assert r.status_code == 422 and r.json()["fields"][0]["field"] == "colour"
        r = await client.post("/v1/messages", content=b"{not json")
        assert r.status_code == 400
        r = await client.post("/v1/messages", content=b"\xff\xfe")
        assert r.status_code == 400
        r = await client.post("/v1/messages", content=b"[" * 100_000)
        assert r.status_code in (400, 422)
    # nothing of the refused requests was stored (one valid message in a bad POST included)
    assert [k async for k in redis_client.scan_iter(match=engine.keys.pattern() + "buf:*")] == []


async def test_body_limit(redis_url: str) -> None:
    async with app_client(redis_url, Collector()) as (client, _engine):
        r = await client.post("/v1/messages", content=b" " * (4 * 1024 * 1024 + 1))
        assert r.status_code == 413


async def test_redis_down_answers_503(redis_factory, redis_url: str) -> None:  # type: ignore[no-untyped-def]
    server = redis_factory()
    async with app_client(server.url, Collector()) as (client, _engine):
        server.stop()
        r = await client.post("/v1/messages", json={"chat_id": "c", "text": "x"})
        assert r.status_code == 503
        assert r.headers["retry-after"]
        server.start()
        r = await client.post("/v1/messages", json={"chat_id": "c", "text": "x"})
        assert r.status_code == 202


# --- POST /v1/typing ---------------------------------------------------------------------


async def test_typing_holds_the_open_batch_and_a_pause_releases_it(redis_url: str) -> None:
    collector = Collector()
    async with app_client(redis_url, collector, typing_ms=60_000) as (client, _engine):
        r = await client.post("/v1/typing", json={"chat_id": "web:t"})
        assert (r.status_code, r.json()) == (200, {"outcome": "no_batch", "flush_in_ms": 0})
        await client.post("/v1/messages", json={"chat_id": "web:t", "id": "a", "text": "one"})
        r = await client.post("/v1/typing", json={"chat_id": "web:t", "typing": True})
        assert r.json()["outcome"] == "held" and r.json()["flush_in_ms"] > 1_000
        await client.post("/v1/messages", json={"chat_id": "web:t", "id": "b", "text": "two"})
        r = await client.post("/v1/typing", json={"chat_id": "web:t"})  # typing on
        assert r.json()["outcome"] == "held"
        assert not collector.batches  # held for a minute: only the pause can end it early
        r = await client.post("/v1/typing", json={"chat_id": "web:t", "typing": False})
        assert r.json()["outcome"] == "released"
        await collector.wait_messages(2)
        text = (await client.get("/metrics")).text
    assert collector.texts("web:t") == ["one", "two"]
    assert len(collector.batches) == 1
    assert 'batcher_messages_total{outcome="typing",source="api"} 4.0' in text


async def test_typing_validation_and_redis_down(redis_factory, redis_url: str) -> None:  # type: ignore[no-untyped-def]
    server = redis_factory()
    async with app_client(server.url, Collector()) as (client, _engine):
        r = await client.post("/v1/typing", json={"typing": True})
        assert r.status_code == 422 and r.json()["fields"][0]["field"] == "chat_id"
        r = await client.post("/v1/typing", json={"chat_id": "c", "typing": "maybe"})
        assert r.status_code == 422 and r.json()["fields"][0]["field"] == "typing"
        r = await client.post("/v1/typing", content=b"{")
        assert r.status_code == 400
        server.stop()
        r = await client.post("/v1/typing", json={"chat_id": "c"})
        assert r.status_code == 503 and r.headers["retry-after"]
