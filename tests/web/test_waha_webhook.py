"""WAHA events, signed, through a real ``batcher serve`` into a forward sink.

Every fixture of ``tests/fixtures/waha`` is posted with its exact bytes and
``X-Webhook-Hmac`` (HMAC-SHA512 of the body): receipts, echoes, the events
that are no message, a presence for a chat with nothing open and the
message with no chat open nothing; a bad signature is answered 401 and
stores nothing; the messages arrive exactly once (the edit and the revoke
applied to the open batch); a replay of every POST delivers nothing new.
Then a slow typist: WAHA's ``presence.update`` events hold the open batch
past the idle timeout, and the next message joins it.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx

from service.providers.waha import parse_event
from service.store.embedded import RedisServer
from service.tooling.sink import Sink
from tests.helpers import FIXTURES
from tests.web.test_e2e import (
    StartService,
    assert_forward_headers,
    delivered_ids,
    index_sizes,
    keys_like,
    redis_on,
    wait_drained,
)

DIR = FIXTURES / "waha"
KEY = "e2e-waha-hmac-key"
ANA = "waha:default:15550136724@c.us"
QUIET = ["ack", "echo", "message_any", "session_status", "presence_typing", "no_from"]
APPLIED = ["text", "edited", "image", "revoked"]  # the edit and the revoke land in the open batch
REST = ["voice", "location", "reply", "group_text", "group_text_2", "reaction"]
RAW = {p.stem: p.read_bytes() for p in DIR.glob("*.json")}


def headers(body: bytes, key: str = KEY) -> dict[str, str]:
    digest = hmac.new(key.encode(), body, hashlib.sha512).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-Webhook-Hmac": digest,
        "X-Webhook-Hmac-Algorithm": "sha512",
    }


def ids_of(name: str) -> list[str]:
    return [m.id for _, m in parse_event(json.loads(RAW[name])).messages]


def event(name: str, **payload: Any) -> bytes:
    """A fixture with fields of its payload replaced (a new message, a new presence)."""
    doc = json.loads(RAW[name])
    doc["payload"] = copy.deepcopy(doc["payload"]) | payload
    return json.dumps(doc).encode()


async def post(client: httpx.AsyncClient, url: str, body: bytes, **h: str) -> httpx.Response:
    return await client.post(url + "/webhooks/waha", content=body, headers=headers(body) | h)


async def test_every_fixture_exactly_once_and_nothing_else(
    redis_factory: Callable[..., RedisServer],
    start_service: StartService,
    client: httpx.AsyncClient,
    sink: Sink,
) -> None:
    server = redis_factory()
    svc = await start_service(server, WAHA_HMAC_KEY=KEY)
    async with redis_on(server) as r:
        for name in QUIET:
            got = await post(client, svc.url, RAW[name])
            assert got.status_code == 200, (name, got.text)
        assert await index_sizes(r) == (0, 0) and not await keys_like(r, "buf")
        assert await r.hlen(b"batcher:{b0}:rejected") == 1  # no_from, kept aside

        forged = RAW["text"].replace(b"open today", b"closed now")
        bad = [
            headers(RAW["text"]) | {"Content-Type": "application/json"},  # signed for other bytes
            headers(forged, "not-the-key"),
            {"X-Webhook-Hmac": "", "Content-Type": "application/json"},
        ]
        for h in bad:
            got = await client.post(svc.url + "/webhooks/waha", content=forged, headers=h)
            assert got.status_code == 401
        got = await post(client, svc.url, forged, **{"X-Webhook-Hmac-Algorithm": "sha256"})
        assert got.status_code == 401
        assert await index_sizes(r) == (0, 0) and not await keys_like(r, "buf")

        for name in APPLIED + REST:
            assert (await post(client, svc.url, RAW[name])).status_code == 200, name
        want = Counter(i for n in ["text", *REST] for i in ids_of(n))
        await sink.wait_for(lambda: set(want) <= set(delivered_ids(sink)))
        await wait_drained(r)
        first = len(sink.received)

        for name in QUIET + APPLIED + REST:
            assert (await post(client, svc.url, RAW[name])).status_code == 200, name
        marker = event("text", id="false_15550136724@c.us_3EB0A1B2C3D4E5F6MARK", body="again?")
        assert (await post(client, svc.url, marker)).status_code == 200
        await sink.wait_for(
            lambda: "false_15550136724@c.us_3EB0A1B2C3D4E5F6MARK" in delivered_ids(sink)
        )
        await wait_drained(r)
        metrics = (await client.get(svc.url + "/metrics")).text

    assert delivered_ids(sink) == want + Counter(["false_15550136724@c.us_3EB0A1B2C3D4E5F6MARK"])
    assert [rec.message_ids for rec in sink.received[first:]] == [
        ["false_15550136724@c.us_3EB0A1B2C3D4E5F6MARK"]
    ]
    for rec in sink.batches():
        assert_forward_headers(rec)
        assert rec.batch["channel"] == {
            "provider": "waha", "session": "default", "me": "15550104477@c.us",
        }  # fmt: skip
    [ana] = [rec.batch for rec in sink.batches()[:first] if rec.chat_id == ANA]
    by_id = {m["id"]: m for m in ana["messages"]}
    [text_id] = ids_of("text")
    assert by_id[text_id]["text"] == "hi, are you open tomorrow?"  # the edit, applied
    assert not set(ids_of("image")) & set(by_id)  # revoked while the batch was open
    assert 'outcome="status",source="waha"} 2.0' in metrics  # the ack, twice
    assert 'endpoint="waha",status="401"} 4.0' in metrics


async def test_presence_holds_the_batch_while_the_user_types(
    redis_factory: Callable[..., RedisServer],
    start_service: StartService,
    client: httpx.AsyncClient,
    sink: Sink,
) -> None:
    """Idle 250 ms, typing window 500 ms: typing for 800 ms between two
    messages keeps them in one batch, which closes once the user pauses."""
    server = redis_factory()
    svc = await start_service(server, WAHA_HMAC_KEY=KEY, TYPING_MS=500)
    one = event("text", id="false_15550136724@c.us_TYPIST0000000001", body="I was thinking")
    two = event("text", id="false_15550136724@c.us_TYPIST0000000002", body="about the trip")
    assert (await post(client, svc.url, one)).status_code == 200
    end = time.monotonic() + 0.8
    while time.monotonic() < end:  # the gaps between events are the subject: slept
        assert (await post(client, svc.url, RAW["presence_typing"])).status_code == 200
        assert not sink.batches(), "a batch closed while its user was typing"
        await asyncio.sleep(0.15)
    assert (await post(client, svc.url, two)).status_code == 200
    assert (await post(client, svc.url, RAW["presence_typing"])).status_code == 200
    assert (await post(client, svc.url, RAW["presence_paused"])).status_code == 200
    await sink.wait_for(lambda: sum(len(b.message_ids) for b in sink.batches()) >= 2)
    [batch] = sink.batches()
    assert batch.texts == ["I was thinking", "about the trip"]
