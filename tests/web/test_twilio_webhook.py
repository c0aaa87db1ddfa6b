"""``POST /webhooks/twilio`` end to end: every Twilio fixture, signed, through a real
``batcher serve`` (uvicorn) into a forward sink; and the endpoint's parts on their own.

The service runs as if behind a proxy: ``BATCHER_PUBLIC_URL`` is
``https://bot.example.com`` (the URL configured in Twilio's Console) while the
test posts to ``http://127.0.0.1:<port>``, and every form is signed for
``https://bot.example.com/webhooks/twilio``, as Twilio would sign it. The
module fixture ``played`` (one service process, one private redis-server):

1. quiet service: the status callbacks and a voice webhook (nothing may open),
   then badly signed POSTs (all 401, nothing may open), then ``no_from`` (rejected);
2. every message fixture, back to back; wait until the sink has them all and
   Redis is drained;
3. a replay of every POST, then one new marker message: only the marker arrives.

Twilio sends no echoes of outbound messages, no typing events and no group
messages to this webhook: there is nothing of those kinds to play.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
from starlette.requests import Request

from service.models import Message
from service.providers.parsed import BadPayload
from service.providers.twilio import EMPTY_TWIML, parse_body
from service.settings import Settings
from service.store.embedded import RedisServer
from service.tooling.procs import ServiceProc
from service.tooling.sink import Received, Sink
from service.web import twilio as endpoint
from service.web.state import AppState
from tests.conftest import DockerImage
from tests.helpers import FIXTURES as FIXTURES_ROOT
from tests.web.playback import delivered, metric, play_once, settled
from tests.web.test_e2e import (
    BATCH_FIELDS,
    FORWARD_SECRET,
    KEYS,
    MESSAGE_FIELDS,
    StartService,
    assert_forward_headers,
    index_sizes,
    keys_like,
    redis_on,
    wait_drained,
)

FIXTURES = FIXTURES_ROOT / "twilio"
TOKEN = "e2e-twilio-auth-token"
PUBLIC_URL = "https://bot.example.com"
SIGNED_URL = PUBLIC_URL + "/webhooks/twilio"
IDLE_MS = 400
ALL = sorted(p.name for p in FIXTURES.glob("*.txt"))
QUIET = [n for n in ALL if n.startswith("status_")] + ["voice_call.txt"]
REJECTED = ["no_from.txt"]
BURST = [n for n in ALL if n not in {*QUIET, *REJECTED}]
AC = "ACa1b2c3d4e5f60718293a4b5c6d7e8f90"
ANA_CHAT = "tw:whatsapp:+15550104477:whatsapp:+15550136724"
COMPARED = {"type", "text", "sender", "media", "reply_to", "forwarded", "referral"}
COMPARED |= {"reaction", "target_id", "errors", "warnings", "data", "sent_at"}


def body_of(name: str) -> bytes:
    return (FIXTURES / name).read_bytes().rstrip(b"\r\n")


def twilio_signature(body: bytes, url: str = SIGNED_URL, token: str = TOKEN) -> str:
    """Signed as Twilio documents it, written here apart from the service's code."""
    pairs = parse_qsl(body.decode(), keep_blank_values=True)
    data = url + "".join(k + v for k, v in sorted(pairs, key=lambda kv: kv[0]))
    digest = hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def parsed(name: str) -> list[tuple[str, Message]]:
    return parse_body(body_of(name)).messages


EXPECTED = Counter((chat, m.id) for n in BURST for chat, m in parsed(n))
PARSED = {m.id: m for n in BURST for _, m in parsed(n)}
MARKER = urlencode(
    {
        "MessageSid": "SM00000000000000000000000000marker",
        "From": "whatsapp:+15550136724",
        "To": "whatsapp:+15550104477",
        "Body": "again?",
        "SmsStatus": "received",
        "AccountSid": AC,
    }
).encode()


async def post(
    client: httpx.AsyncClient, base: str, body: bytes, signature: str | None = ""
) -> httpx.Response:
    """POST a form; ``signature`` "" signs it for SIGNED_URL, None sends no header."""
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if signature is not None:
        headers["X-Twilio-Signature"] = signature or twilio_signature(body)
    return await client.post(base + "/webhooks/twilio", content=body, headers=headers)


# --- the endpoint's parts, without a server -------------------------------------------


def state(**settings: Any) -> AppState:
    return cast("AppState", SimpleNamespace(settings=Settings(**settings)))


def request(query: bytes = b"", **headers: str) -> Request:
    return Request(
        {
            "type": "http",
            "method": "POST",
            "scheme": "http",
            "server": ("127.0.0.1", 8000),
            "path": "/webhooks/twilio",
            "root_path": "",
            "query_string": query,
            "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
        }
    )


SIGNED = {"twilio_auth_token": TOKEN, "public_url": PUBLIC_URL}
TEXT = body_of("whatsapp_text.txt")


def test_check_accepts_the_signature_for_the_public_url() -> None:
    sig = twilio_signature(TEXT)
    assert endpoint.check(state(**SIGNED), request(x_twilio_signature=sig), TEXT) is None
    slash = state(twilio_auth_token=TOKEN, public_url=PUBLIC_URL + "/")
    assert endpoint.check(slash, request(x_twilio_signature=sig), TEXT) is None


def test_check_signs_the_raw_query_string() -> None:
    query = b"tenant=a%20b&x=1"
    sig = twilio_signature(TEXT, SIGNED_URL + "?" + query.decode())
    assert endpoint.check(state(**SIGNED), request(query, x_twilio_signature=sig), TEXT) is None
    assert endpoint.check(state(**SIGNED), request(x_twilio_signature=sig), TEXT) is not None


@pytest.mark.parametrize(
    ("headers", "body", "why"),
    [
        ({}, TEXT, "missing X-Twilio-Signature"),
        ({"x_twilio_signature": twilio_signature(TEXT, token="other")}, TEXT, "invalid"),
        (
            {"x_twilio_signature": twilio_signature(TEXT, "http://127.0.0.1:8000/webhooks/twilio")},
            TEXT,
            "invalid",
        ),
        ({"x_twilio_signature": twilio_signature(TEXT)}, TEXT + b"&Extra=1", "invalid"),
        ({"x_twilio_signature": "x"}, b"Body=%FF", "no form"),
    ],
)
def test_check_refuses(headers: dict[str, str], body: bytes, why: str) -> None:
    refusal = endpoint.check(state(**SIGNED), request(**headers), body)
    assert refusal is not None and refusal.status == 401 and why in refusal.why


def test_without_public_url_the_signature_cannot_be_verified() -> None:
    sig = twilio_signature(TEXT)
    refusal = endpoint.check(state(twilio_auth_token=TOKEN), request(x_twilio_signature=sig), TEXT)
    assert refusal is not None and refusal.status == 401
    assert "BATCHER_PUBLIC_URL" in refusal.why


def test_without_the_token_nothing_is_checked() -> None:
    assert endpoint.check(state(public_url=PUBLIC_URL), request(), b"anything") is None


def test_parse_wants_a_form() -> None:
    ok = request(content_type="application/x-www-form-urlencoded; charset=utf-8")
    assert endpoint.parse(state(), ok, TEXT).messages
    assert endpoint.parse(state(), request(), TEXT).messages  # no Content-Type: read as a form
    with pytest.raises(BadPayload, match="application/json"):
        endpoint.parse(state(), request(content_type="application/json"), b'{"a": 1}')


def test_reply_is_empty_twiml() -> None:
    response = endpoint.reply()
    assert response.body == EMPTY_TWIML.encode()
    assert response.media_type == "text/xml"


# --- end to end ------------------------------------------------------------------------


@dataclass
class Playback:
    first: dict[str, int] = field(default_factory=dict)  # fixture -> status of its POST
    replay: dict[str, int] = field(default_factory=dict)
    replies: set[tuple[str, bytes]] = field(default_factory=set)  # content type, body
    bad: list[tuple[int, str]] = field(default_factory=list)  # the refused POSTs
    quiet_state: tuple[int, ...] = ()  # open, in flight, buf keys, meta keys
    refused_state: tuple[int, ...] = ()
    rejected_state: tuple[int, ...] = ()
    delivered: list[Received] = field(default_factory=list)
    after_replay: list[Received] = field(default_factory=list)
    drained: list[bool] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    bad_requests: int = 0
    log: str = ""


async def play(server: RedisServer, tmp: Path) -> Playback:
    out = Playback()
    async with (
        Sink(secret=FORWARD_SECRET.encode()) as sink,
        httpx.AsyncClient(timeout=10) as client,
        redis_on(server) as r,
    ):
        env = {
            "BATCHER_REDIS_URL": server.url,
            "BATCHER_FORWARD_URL": sink.url,
            "BATCHER_FORWARD_SECRET": FORWARD_SECRET,
            "BATCHER_TWILIO_AUTH_TOKEN": TOKEN,
            "BATCHER_PUBLIC_URL": PUBLIC_URL,
            "BATCHER_IDLE_MS": str(IDLE_MS),
            "BATCHER_MAX_WAIT_MS": "5000",
            "BATCHER_RETRY_BASE_MS": "50",
            "BATCHER_RETRY_MAX_MS": "200",
            "BATCHER_SWEEP_INTERVAL_MS": "200",
            "BATCHER_SWEEP_GRACE_MS": "300",
            "BATCHER_LOG_FORMAT": "json",
        }
        svc = ServiceProc("service", env, tmp / "service.log", tmp)

        async def post_all(names: list[str], into: dict[str, int]) -> None:
            for n in names:
                got = await post(client, svc.url, body_of(n))
                into[n] = got.status_code
                out.replies.add((got.headers["content-type"], got.content))

        async def state() -> tuple[int, ...]:
            return (*await index_sizes(r), len(await keys_like(r, "buf")))

        def ids() -> set[str]:
            return {i for rec in sink.received if rec.is_batch for i in rec.message_ids}

        async def settle(want: set[str]) -> None:
            await settled(sink.wait_for(lambda: want <= ids(), 10))
            out.drained.append(await settled(wait_drained(r)))
            out.metrics.append((await client.get(svc.url + "/metrics")).text)
            kept = cast("dict[bytes, bytes]", await r.hgetall(KEYS.rejected))
            out.rejected.append(
                {k.decode(): json.loads(v.partition(b"\t")[2]) for k, v in kept.items()}
            )

        svc.start()
        try:
            await svc.wait_ready(client)
            await post_all(QUIET, out.first)
            out.quiet_state = (*await state(), len(await keys_like(r, "meta")))
            other = twilio_signature(TEXT, token="not-the-token")
            internal = twilio_signature(TEXT, svc.url + "/webhooks/twilio")
            for body, sig in [
                (TEXT, other),
                (TEXT, None),
                (TEXT, internal),
                (TEXT.replace(b"pedido", b"PEDIDO"), twilio_signature(TEXT)),
            ]:
                got = await post(client, svc.url, body, sig)
                out.bad.append((got.status_code, got.json()["error"]))
            out.refused_state = await state()
            await post_all(REJECTED, out.first)
            out.rejected_state = await state()
            await post_all(BURST, out.first)
            await settle({i for _, i in EXPECTED})
            n = len(sink.received)
            await post_all(QUIET + REJECTED + BURST, out.replay)
            out.replay["marker"] = (await post(client, svc.url, MARKER)).status_code
            await settle({"SM00000000000000000000000000marker"})
        finally:
            await svc.stop()
            out.log = svc.log_tail(200)
        out.delivered, out.after_replay = sink.received[:n], sink.received[n:]
        out.bad_requests = sink.bad_requests
    return out


@pytest.fixture(scope="module")
def played(
    redis_binary: Path | DockerImage, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Playback]:
    playback = play_once(redis_binary, tmp_path_factory.mktemp("twilio-fixtures"), play)
    yield playback
    print(f"===== service log =====\n{playback.log}")  # shown when a test failed


def test_every_signed_post_is_answered_200_with_empty_twiml(played: Playback) -> None:
    assert set(played.first) == set(ALL)
    assert {n: s for n, s in played.first.items() if s != 200} == {}
    assert {n: s for n, s in played.replay.items() if s != 200} == {}
    assert played.replies == {("text/xml; charset=utf-8", EMPTY_TWIML.encode())}
    assert played.bad_requests == 0


def test_every_message_delivered_once_to_its_chat(played: Playback) -> None:
    assert played.drained[0], "Redis not drained after the first pass"
    got = Counter((chat, m["id"]) for chat, m in delivered(played.delivered))
    assert {k: v for k, v in got.items() if v > 1} == {}, "delivered more than once"
    assert sorted(set(EXPECTED) - set(got)) == [], "never delivered"
    assert sorted(set(got) - set(EXPECTED)) == [], "delivered but not expected (or wrong chat)"
    for rec in played.delivered:
        assert_forward_headers(rec)
        assert (rec.status, rec.attempt, set(rec.batch)) == (200, 1, BATCH_FIELDS)
        to = "whatsapp:+15550104477" if rec.chat_id.startswith("tw:whatsapp:") else "+15550104477"
        assert rec.batch["channel"] == {"provider": "twilio", "account_sid": AC, "to": to}
        assert rec.batch["channel"] == PARSED[rec.message_ids[-1]].channel
    for _, m in delivered(played.delivered):
        assert set(m) == MESSAGE_FIELDS and m["source"] == "twilio"
        assert {k: m[k] for k in COMPARED} == PARSED[m["id"]].model_dump(
            mode="json", include=COMPARED
        ), m["id"]


def test_one_users_messages_share_one_chat(played: Playback) -> None:
    ana = [m["id"] for chat, m in delivered(played.delivered) if chat == ANA_CHAT]
    want = [m.id for n in BURST for chat, m in parsed(n) if chat == ANA_CHAT]
    assert len(want) == 5 and sorted(ana) == sorted(want)


def test_status_callbacks_open_no_batch(played: Playback) -> None:
    assert played.quiet_state == (0, 0, 0, 0), "a status callback opened a batch"
    text = played.metrics[0]
    assert metric(text, "batcher_messages_total", source="twilio", outcome="status") == 5.0
    assert metric(text, "batcher_messages_total", source="twilio", outcome="skipped") == 1.0
    name = "batcher_provider_errors_total"
    assert metric(text, name, source="twilio", code="63016") == 1.0


def test_bad_signatures_are_refused_and_store_nothing(played: Playback) -> None:
    assert [s for s, _ in played.bad] == [401, 401, 401, 401]
    assert [e for _, e in played.bad] == [
        "invalid X-Twilio-Signature (for BATCHER_PUBLIC_URL + path)",
        "missing X-Twilio-Signature",
        "invalid X-Twilio-Signature (for BATCHER_PUBLIC_URL + path)",
        "invalid X-Twilio-Signature (for BATCHER_PUBLIC_URL + path)",
    ]
    assert played.refused_state == (0, 0, 0)
    text = played.metrics[0]
    assert metric(text, "batcher_http_requests_total", endpoint="twilio", status="401") == 4.0


def test_a_message_without_from_is_kept_aside(played: Playback) -> None:
    assert played.rejected_state == (0, 0, 0)
    [entry] = played.rejected[0].values()
    assert (entry["source"], entry["path"]) == ("twilio", "form")
    assert entry["raw"] == dict(parse_qsl(body_of("no_from.txt").decode(), keep_blank_values=True))
    assert played.rejected[1] == played.rejected[0]  # the replay kept one entry


def test_replay_of_every_post_delivers_nothing_new(played: Playback) -> None:
    assert played.drained[1], "Redis not drained after the replay"
    assert [(r.chat_id, r.message_ids, r.texts) for r in played.after_replay] == [
        (ANA_CHAT, ["SM00000000000000000000000000marker"], ["again?"])
    ]


async def test_token_without_public_url_refuses_with_the_reason(
    redis_factory: Callable[..., RedisServer],
    start_service: StartService,
    client: httpx.AsyncClient,
) -> None:
    """Set the token but not BATCHER_PUBLIC_URL: every POST is 401, saying why."""
    server = redis_factory()
    svc = await start_service(server, TWILIO_AUTH_TOKEN=TOKEN)
    got = await post(client, svc.url, TEXT)
    assert got.status_code == 401 and "BATCHER_PUBLIC_URL" in got.json()["error"]
    async with redis_on(server) as r:
        assert await index_sizes(r) == (0, 0) and await keys_like(r, "buf") == []
