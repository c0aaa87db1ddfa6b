"""Security: unsigned serving refused, secrets never leak, replays and OOM handled."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging

import pytest
from redis.asyncio import Redis

from service.settings import Settings
from tests.helpers import Collector, app_client, wa_text_payload, wait_until

APP_SECRET = "app-secret-4d1b"
VERIFY_TOKEN = "verify-token-77aa"
FORWARD_SECRET = "forward-secret-91ce"
REDIS_PASSWORD = "redis-password-c0ffee"


def wa_body(wamid: str, text: str = "hi", sender: str = "15550111111") -> bytes:
    return json.dumps(wa_text_payload([(sender, wamid, text)])).encode()


def sign(body: bytes, secret: str = APP_SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", "Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("host", "secret", "insecure", "providers", "refused"),
    [
        ("127.0.0.1", None, False, None, False),
        ("localhost", None, False, None, False),
        ("0.0.0.0", None, False, None, True),
        ("10.1.2.3", None, False, "whatsapp", True),
        ("0.0.0.0", "s", False, "whatsapp", False),
        ("0.0.0.0", "s", False, None, True),  # the other providers' secrets are unset
        ("0.0.0.0", None, False, "telegram", True),
        ("0.0.0.0", None, True, None, False),
    ],
)
def test_unchecked_webhooks_only_on_loopback(
    host: str, secret: str | None, insecure: bool, providers: str | None, refused: bool
) -> None:
    extra = {"providers": providers} if providers is not None else {}
    s = Settings(host=host, whatsapp_app_secret=secret, insecure_dev=insecure, **extra)
    assert (s.serving_problem() is not None) == refused


def test_every_unset_secret_is_named() -> None:
    s = Settings(host="0.0.0.0", whatsapp_app_secret="s", providers="whatsapp,twilio,waha")
    problem = s.serving_problem() or ""
    assert "BATCHER_TWILIO_AUTH_TOKEN" in problem and "BATCHER_PUBLIC_URL" in problem
    assert "BATCHER_WAHA_HMAC_KEY" in problem and "WHATSAPP" not in problem
    s = Settings(
        host="0.0.0.0",
        providers="twilio",
        twilio_auth_token="t",
        public_url="https://bot.example.com",
    )
    assert s.serving_problem() is None


def test_unknown_providers_are_refused() -> None:
    with pytest.raises(ValueError, match="telegramm"):
        Settings(providers="whatsapp,telegramm")


async def test_a_replayed_signed_body_is_not_delivered_twice(redis_url: str) -> None:
    collector = Collector()
    async with app_client(redis_url, collector, whatsapp_app_secret=APP_SECRET) as (client, _e):
        body = wa_body("wamid.REPLAY1")
        for _ in range(3):
            r = await client.post("/webhooks/whatsapp", content=body, headers=sign(body))
            assert r.status_code == 200
        tampered = body.replace(b'"hi"', b'"ho"')
        r = await client.post("/webhooks/whatsapp", content=tampered, headers=sign(body))
        assert r.status_code == 401
        await collector.wait_messages(1)
        text = (await client.get("/metrics")).text
        assert 'batcher_messages_total{outcome="duplicate",source="whatsapp"} 2.0' in text
    assert [m.text for b in collector.batches for m in b.messages] == ["hi"]


async def test_secrets_never_appear_in_logs_errors_or_metrics(
    redis_factory,
    caplog: pytest.LogCaptureFixture,  # type: ignore[no-untyped-def]
) -> None:
    server = redis_factory()
    admin = Redis.from_url(server.url)
    await admin.config_set("requirepass", REDIS_PASSWORD)
    url = f"redis://default:{REDIS_PASSWORD}@127.0.0.1:{server.port}/0"
    caplog.set_level(logging.DEBUG)
    from service.engine.forward import HttpForwarder

    forwarder = HttpForwarder(
        f"http://bot:{FORWARD_SECRET}@127.0.0.1:9/hook", FORWARD_SECRET.encode(), timeout_s=0.5
    )
    overrides = {
        "whatsapp_app_secret": APP_SECRET,
        "whatsapp_verify_token": VERIFY_TOKEN,
        "forward_secret": FORWARD_SECRET,
        "max_attempts": 2,
    }
    seen: list[str] = []
    async with app_client(url, forwarder, **overrides) as (client, engine):
        seen.append(repr(engine.settings) + str(engine.settings))
        body = wa_body("wamid.S1")
        assert (
            await client.post("/webhooks/whatsapp", content=body, headers=sign(body))
        ).status_code == 200
        bad = await client.post("/webhooks/whatsapp", content=body, headers=sign(body, "nope"))
        seen.append(bad.text)
        wrong = await client.get(
            "/webhooks/whatsapp",
            params={"hub.mode": "subscribe", "hub.verify_token": "x", "hub.challenge": "1"},
        )
        seen.append(wrong.text)
        await wait_until(lambda: engine.stats.dead == 1, 15)  # forward fails: dead-lettered
        seen.append((await client.get("/metrics")).text)
        seen.append((await client.get("/readyz")).text)
        server.stop()
        down = await client.post("/webhooks/whatsapp", content=body, headers=sign(body))
        assert down.status_code == 503
        seen.append(down.text)
        seen.append((await client.get("/readyz")).text)
        server.start()
        await admin.aclose()
    await forwarder.aclose()
    seen.extend(r.getMessage() + str(getattr(r, "fields", "")) for r in caplog.records)
    seen.extend(caplog.text.splitlines())
    blob = "\n".join(seen)
    assert "dead" in blob and "ConnectError" in blob  # the logs did say what happened
    for secret in (APP_SECRET, VERIFY_TOKEN, FORWARD_SECRET, REDIS_PASSWORD):
        assert secret not in blob, secret


async def test_out_of_memory_answers_503_then_recovers(redis_url: str, redis_client: Redis) -> None:
    collector = Collector()
    async with app_client(redis_url, collector, idle_ms=100) as (client, _engine):
        r = await client.post("/v1/messages", json={"chat_id": "c", "id": "1", "text": "before"})
        assert r.status_code == 202
        used = int((await redis_client.info("memory"))["used_memory"])
        await redis_client.config_set("maxmemory", str(used // 2))
        try:
            r = await client.post(
                "/v1/messages", json={"chat_id": "c", "id": "2", "text": "x" * 5000}
            )
            assert r.status_code == 503 and r.headers["retry-after"]
            # the open batch still drains while memory is full
            await collector.wait_messages(1)
        finally:
            await redis_client.config_set("maxmemory", "0")
        r = await client.post("/v1/messages", json={"chat_id": "c", "id": "2", "text": "after"})
        assert r.status_code == 202
        await collector.wait_messages(2)
    assert collector.texts("c") == ["before", "after"]
