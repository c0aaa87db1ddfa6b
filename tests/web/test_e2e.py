"""End to end: a real ``batcher serve`` process, a real redis-server, a real bot-side sink.

Each test starts the service as a subprocess (``python -m service.cli serve``)
against a private redis-server (so that it can be stopped and restarted),
forwarding to a ``service.tooling.sink.Sink`` served in the test's own event loop.
WhatsApp POSTs are built in the shape of the fixtures in
``tests/fixtures/whatsapp`` and signed here (HMAC-SHA256 of the raw bytes).

The service's log (JSON lines) goes to a file that is printed at teardown:
pytest shows it for failed tests only.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import hmac
import itertools
import json
import random
import re
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from service.store.backlog import read_backlog
from service.store.connections import create_redis
from service.store.embedded import RedisServer
from service.store.keyspace import Keyspace
from service.tooling.procs import ServiceProc
from service.tooling.sink import HANG, Received, Reply, Sink
from tests.helpers import FIXTURES as FIXTURES_ROOT
from tests.helpers import is_seen

FIXTURES = FIXTURES_ROOT / "whatsapp"

APP_SECRET = (
    "test-app-secret"  # the secret tests/fixtures/whatsapp/signed_unicode.body is signed with
)
VERIFY_TOKEN = "e2e-verify-token"
FORWARD_SECRET = "e2e-forward-secret"
PHONE_ID = "127350894416205"  # metadata.phone_number_id of the fixtures
IDLE_MS = 250
KEYS = Keyspace()  # the service's defaults: prefix "batcher", 16 buckets

BATCH_FIELDS = {
    "batch_id",
    "chat_id",
    "seq",
    "attempt",
    "reason",
    "opened_at",
    "closed_at",
    "messages",
    "channel",
}
MESSAGE_FIELDS = {
    "id",
    "type",
    "text",
    "sent_at",
    "received_at",
    "source",
    "sender",
    "media",
    "reply_to",
    "forwarded",
    "referral",
    "reaction",
    "target_id",
    "edited_at",
    "history",
    "errors",
    "warnings",
    "data",
}


# --- the service as a subprocess ------------------------------------------------------------


Service = ServiceProc
StartService = Callable[..., Awaitable[Service]]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0) as c:
        yield c


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    async with Sink(secret=FORWARD_SECRET.encode()) as s:
        yield s


@pytest.fixture
def start_service(tmp_path: Path, sink: Sink, client: httpx.AsyncClient) -> Iterator[StartService]:
    """start(redis_server, **env) -> a ready Service forwarding to ``sink``.

    Every service started is stopped at teardown, and its log printed."""
    services: list[Service] = []

    async def start(server: RedisServer, **env: Any) -> Service:
        base = {
            "BATCHER_REDIS_URL": server.url,
            "BATCHER_FORWARD_URL": sink.url,
            "BATCHER_FORWARD_SECRET": FORWARD_SECRET,
            "BATCHER_WHATSAPP_APP_SECRET": APP_SECRET,
            "BATCHER_WHATSAPP_VERIFY_TOKEN": VERIFY_TOKEN,
            "BATCHER_IDLE_MS": str(IDLE_MS),
            "BATCHER_MAX_WAIT_MS": "5000",
            "BATCHER_RETRY_BASE_MS": "50",
            "BATCHER_RETRY_MAX_MS": "200",
            "BATCHER_MAX_ATTEMPTS": "5",
            "BATCHER_SWEEP_INTERVAL_MS": "200",
            "BATCHER_SWEEP_GRACE_MS": "300",
            "BATCHER_LOG_FORMAT": "json",
        }
        base.update(
            {k if k.startswith("BATCHER_") else f"BATCHER_{k}": str(v) for k, v in env.items()}
        )
        name = f"service-{len(services)}"
        svc = Service(name, base, tmp_path / f"{name}.log", tmp_path)
        services.append(svc)
        svc.start()
        await svc.wait_ready(client)
        return svc

    yield start
    for svc in services:
        svc.stop_now()
    for svc in services:  # captured output: pytest shows it when the test failed
        print(f"===== {svc.log_path.name} (pid {svc.proc.pid if svc.proc else '-'}) =====")
        print(svc.log_tail(200))


# --- WhatsApp payloads ------------------------------------------------------------------------


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


TEMPLATE = json.loads(fixture_bytes("text_single.json"))


def hub_signature(body: bytes, secret: str = APP_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class WaMsg:
    """One inbound text message from a WhatsApp user, and the webhook POST carrying it."""

    sender: str
    wamid: str
    ts: int
    body: str
    name: str = "Test User"

    @property
    def chat_id(self) -> str:
        return f"wa:{PHONE_ID}:{self.sender}"

    def payload(self) -> dict[str, Any]:
        doc: dict[str, Any] = copy.deepcopy(TEMPLATE)  # the fixture's structure, other values
        value = doc["entry"][0]["changes"][0]["value"]
        value["metadata"]["phone_number_id"] = PHONE_ID
        value["contacts"] = [{"profile": {"name": self.name}, "wa_id": self.sender}]
        value["messages"] = [
            {
                "from": self.sender,
                "id": self.wamid,
                "timestamp": str(self.ts),
                "type": "text",
                "text": {"body": self.body},
            }
        ]
        return doc

    def raw(self) -> bytes:
        return json.dumps(self.payload()).encode()


def sender_of(wamid: str) -> str:
    """The sender a wamid made by ``conversation`` encodes."""
    return wamid.split(".")[3]


def conversation(
    rng: random.Random, sender: str, n: int, *, ts0: int = 1767225600, same_second: bool = False
) -> list[WaMsg]:
    """``n`` fragments of one user; timestamps 1-2 s apart (or all in one second)."""
    tag = uuid.uuid4().hex[:8]
    out, ts = [], ts0
    for i in range(n):
        out.append(
            WaMsg(
                sender,
                f"wamid.E2E.{tag}.{sender}.{i:03d}",
                ts,
                f"{sender} part {i} ✓",
                f"User {sender[-4:]}",
            )
        )
        ts += 0 if same_second else rng.choice((1, 2))
    return out


async def post_wa(
    client: httpx.AsyncClient, svc: Service, raw: bytes, signature: str | None = None
) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    headers["X-Hub-Signature-256"] = signature if signature is not None else hub_signature(raw)
    return await client.post(svc.url + "/webhooks/whatsapp", content=raw, headers=headers)


async def send_all(client: httpx.AsyncClient, svc: Service, msgs: Iterable[WaMsg]) -> None:
    for m in msgs:
        r = await post_wa(client, svc, m.raw())
        assert r.status_code == 200, r.text


async def send_with_gaps(
    client: httpx.AsyncClient, svc: Service, msgs: list[WaMsg], gaps_s: list[float]
) -> None:
    """One POST per fragment, ``gaps_s`` apart (the time between fragments is the subject)."""
    for m, gap in zip(msgs, gaps_s, strict=True):
        r = await post_wa(client, svc, m.raw())
        assert r.status_code == 200, r.text
        await asyncio.sleep(gap)


# --- Redis-side checks ------------------------------------------------------------------------


async def poll(
    check: Callable[[], Awaitable[bool]], timeout_s: float = 10.0, what: str = ""
) -> None:
    """Poll a server-side state that no event announces, with a deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(RedisError, OSError):
            if await check():
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"not met in {timeout_s}s: {what}")
        await asyncio.sleep(0.02)


async def index_sizes(r: Redis) -> tuple[int, int]:
    """(chats due, batches in flight) over every bucket."""
    backlog = await read_backlog(r, KEYS)
    return backlog.open, backlog.inflight


async def keys_like(r: Redis, kind: str) -> list[bytes]:
    """Keys of one kind (buf, meta, proc...), by exact per-bucket prefix."""
    prefixes = tuple(f"batcher:{{b{b}}}:{kind}:".encode() for b in range(KEYS.buckets))
    return [
        k async for k in r.scan_iter(match=KEYS.pattern(), count=1000) if k.startswith(prefixes)
    ]


async def wait_drained(r: Redis, timeout_s: float = 10.0) -> None:
    """Nothing open, due, claimed or in flight: no further forward can happen."""

    async def drained() -> bool:
        return (
            await index_sizes(r) == (0, 0)
            and not await keys_like(r, "buf")
            and not await keys_like(r, "proc")
        )

    await poll(drained, timeout_s, "Redis drained (no open, due or in-flight batch)")


async def dead_letters(r: Redis, chat_id: str) -> list[dict[str, str]]:
    """The dead-lettered batches of a chat: their deadinfo hashes plus batch id and messages."""
    bk = KEYS.chat(chat_id).bucket
    out = []
    raw_ids: list[bytes] = await r.zrange(bk.dead, 0, -1)
    for raw_id in raw_ids:
        batch_id = raw_id.decode()
        fields: dict[bytes, bytes] = await r.hgetall(KEYS.dead_info(bk.bucket, batch_id))
        info = {k.decode(): v.decode() for k, v in fields.items()}
        if info.get("chat") == chat_id:
            info["batch_id"] = batch_id
            items: list[bytes] = await r.lrange(KEYS.dead_batch(bk.bucket, batch_id), 0, -1)
            info["ids"] = json.dumps([json.loads(i.partition(b"\t")[2])["id"] for i in items])
            out.append(info)
    return out


@contextlib.asynccontextmanager
async def redis_on(server: RedisServer) -> AsyncIterator[Redis]:
    r = create_redis(server.url)
    try:
        yield r
    finally:
        await r.aclose()


def delivered_ids(sink: Sink) -> Counter[str]:
    """How many acknowledged forwards carried each message id."""
    return Counter(i for rec in sink.acked() for i in rec.message_ids)


def assert_forward_headers(rec: Received) -> None:
    assert rec.signature_valid, rec.headers
    assert rec.headers["idempotency-key"] == rec.batch_id
    assert rec.headers["content-type"].split(";")[0].strip() == "application/json"


# --- 1. verification handshake ----------------------------------------------------------------


async def test_verification_handshake(
    redis_factory: Callable[..., RedisServer],
    start_service: StartService,
    client: httpx.AsyncClient,
) -> None:
    """Meta's GET handshake: the right token echoes the bare challenge; anything else is 403."""
    svc = await start_service(redis_factory())
    url = svc.url + "/webhooks/whatsapp"
    challenge = "1158201444 & more?"
    ok = await client.get(
        url,
        params={
            "hub.mode": "subscribe",
            "hub.verify_token": VERIFY_TOKEN,
            "hub.challenge": challenge,
        },
    )
    assert ok.status_code == 200
    assert ok.text == challenge  # bare: no JSON, no quotes, no newline
    assert ok.headers["content-type"].startswith("text/plain")
    for params in (
        {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "42"},
        {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN.upper(), "hub.challenge": "42"},
        {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "42"},
        {"hub.mode": "subscribe", "hub.challenge": "42"},
        {},
    ):
        r = await client.get(url, params=params)
        assert r.status_code == 403, params
        assert "42" not in r.text


# --- 2. the seed scenario -----------------------------------------------------------------------


async def test_seed_scenario_one_forward_per_chat(
    redis_factory: Callable[..., RedisServer],
    start_service: StartService,
    client: httpx.AsyncClient,
    sink: Sink,
) -> None:
    """8 users send 3-5 fragments 20-60 ms apart (1-2 s scaled down), idle 250 ms: each
    chat is forwarded exactly once, all its fragments in order, signed, with the
    contract's headers and exactly the contract's Batch JSON fields."""
    server = redis_factory()
    svc = await start_service(server)
    rng = random.Random(20240601)
    chats = {}
    for k in range(8):
        sender = f"1555019{k:04d}"
        chats[sender] = conversation(rng, sender, rng.randint(3, 5), same_second=k % 3 == 0)

    async def user(msgs: list[WaMsg]) -> None:
        await send_with_gaps(client, svc, msgs, [rng.uniform(0.02, 0.06) for _ in msgs])

    await asyncio.gather(*(user(m) for m in chats.values()))
    total = sum(len(m) for m in chats.values())
    await sink.wait_for(lambda: sum(delivered_ids(sink).values()) >= total, 10)
    async with redis_on(server) as r:
        await wait_drained(r)

    assert len(sink.received) == len(chats), [(x.chat_id, x.message_ids) for x in sink.received]
    for sender, msgs in chats.items():
        (rec,) = sink.for_chat(f"wa:{PHONE_ID}:{sender}")
        assert rec.status == 200
        assert_forward_headers(rec)
        batch = rec.batch
        assert set(batch) == BATCH_FIELDS
        assert batch["channel"]["phone_number_id"] == PHONE_ID
        assert batch["chat_id"] == f"wa:{PHONE_ID}:{sender}"
        assert (batch["seq"], batch["attempt"], batch["reason"]) == (1, 1, "idle")
        assert [m["id"] for m in batch["messages"]] == [m.wamid for m in msgs]
        assert [m["text"] for m in batch["messages"]] == [m.body for m in msgs]
        for sent, got in zip(msgs, batch["messages"], strict=True):
            assert set(got) == MESSAGE_FIELDS
            assert (got["type"], got["source"]) == ("text", "whatsapp")
            assert got["sent_at"] == float(sent.ts)
            assert got["data"]["id"] == sent.wamid and got["data"]["from"] == sender
            assert got["sender"] == {
                "id": sender,
                "name": sent.name,
                "phone": sender,
                "user_id": None,
                "username": None,
                "country_code": None,
            }
            assert "profile_name" not in got["data"]  # data: the message as Meta sent it
        received = [m["received_at"] for m in batch["messages"]]
        assert received == sorted(received)
        assert abs(batch["opened_at"] - received[0]) < 0.002  # opened by its first message
        # closed only once the chat had been quiet for the idle time
        assert batch["closed_at"] >= received[-1] + IDLE_MS / 1000 - 0.002
    assert len({x.batch_id for x in sink.received}) == len(chats)


# --- 3. retries -------------------------------------------------------------------------------


async def test_sink_fails_twice_then_takes_the_batch(
    redis_factory: Callable[..., RedisServer],
    start_service: StartService,
    client: httpx.AsyncClient,
    sink: Sink,
) -> None:
    """500, 500, 200: the same batch (same batch_id and Idempotency-Key, same messages) is
    POSTed three times with attempt 1, 2, 3, backing off in between. A message arriving
    meanwhile waits for the next batch of that chat (one batch in flight per chat)."""
    server = redis_factory()
    svc = await start_service(server)
    msgs = conversation(random.Random(3), "15550133333", 3)
    first_id: dict[str, str] = {}

    def reply(rec: Received) -> Reply | None:
        # Slow enough that the late message's idle timer runs out while the first
        # batch is still in flight.
        first_id.setdefault("id", rec.batch_id)
        if rec.batch_id != first_id["id"]:
            return None
        return Reply(500, delay_s=0.2) if rec.attempt < 3 else Reply(200, delay_s=0.3)

    sink.respond_with(reply)
    await send_all(client, svc, msgs)
    await sink.wait_for(lambda: len(sink.received) >= 1 and sink.received[0].status == 500, 5)
    late = WaMsg(msgs[0].sender, msgs[0].wamid + "late", msgs[-1].ts + 5, "one more thing")
    await send_all(client, svc, [late])
    await sink.wait_for(lambda: len(sink.acked()) >= 2, 10)
    async with redis_on(server) as r:
        await wait_drained(r)

    posts = sink.received
    assert [(p.attempt, p.status) for p in posts] == [(1, 500), (2, 500), (3, 200), (1, 200)]
    first = posts[:3]
    assert {p.batch_id for p in first} == {first_id["id"]}
    assert {p.headers["idempotency-key"] for p in first} == {first_id["id"]}
    assert all(p.message_ids == [m.wamid for m in msgs] for p in first)
    for p in posts:
        assert_forward_headers(p)
    for a, b in itertools.pairwise(first):
        assert b.arrived - a.arrived >= 0.02  # backed off (base 50 ms, half of it fixed)
    nxt = posts[3]
    assert nxt.batch_id != first_id["id"]
    assert nxt.message_ids == [late.wamid]
    assert (nxt.batch["seq"], posts[2].batch["seq"]) == (2, 1)
    assert posts[2].answered is not None
    assert nxt.arrived >= posts[2].answered  # not before the first batch was taken


async def test_sink_that_never_answers_times_out_and_is_retried(
    redis_factory: Callable[..., RedisServer],
    start_service: StartService,
    client: httpx.AsyncClient,
    sink: Sink,
) -> None:
    """A sink that accepts the POST and never answers: the forward times out
    (BATCHER_FORWARD_TIMEOUT_MS) and the same batch is POSTed again with attempt 2,
    which the sink takes."""
    server = redis_factory()
    svc = await start_service(server, FORWARD_TIMEOUT_MS=1000)
    msgs = conversation(random.Random(33), "15550133334", 2)
    sink.plan(HANG)
    await send_all(client, svc, msgs)
    await sink.wait_for(lambda: len(sink.acked()) == 1, 20)
    async with redis_on(server) as r:
        await wait_drained(r)
    hung, took = sink.received
    assert hung.status is None  # still hanging: the service gave up on it
    assert (hung.attempt, took.attempt, took.status) == (1, 2, 200)
    assert hung.batch_id == took.batch_id and took.message_ids == [m.wamid for m in msgs]
    assert took.arrived - hung.arrived >= 0.95
    (failed,) = svc.events("failed")  # log fields are not a contract: search the line
    assert "Timeout" in json.dumps(failed), failed


# --- 4. dead letters ------------------------------------------------------------------------


async def test_dead_letter_then_the_chat_flows_again(
    redis_factory: Callable[..., RedisServer],
    start_service: StartService,
    client: httpx.AsyncClient,
    sink: Sink,
) -> None:
    """MAX_ATTEMPTS=2. A sink answering 500 for good, then a sink that is down: after two
    attempts each batch is in the dead-letter store (zset + messages + error text), never
    retried again; once the sink is back, later messages of both chats still flow."""
    server = redis_factory()
    svc = await start_service(server, MAX_ATTEMPTS=2)
    rng = random.Random(4)
    a1, b1 = conversation(rng, "15550144441", 2), conversation(rng, "15550144442", 2)
    chat_a, chat_b = a1[0].chat_id, b1[0].chat_id
    async with redis_on(server) as r:

        async def dead(chat_id: str) -> bool:
            return bool(await dead_letters(r, chat_id))

        sink.set_mode("fail")
        await send_all(client, svc, a1)
        await poll(lambda: dead(chat_a), 10, "chat A dead-lettered")
        (info_a,) = await dead_letters(r, chat_a)
        assert info_a["attempts"] == "2"
        assert "HTTP 500" in info_a["error"], info_a
        assert json.loads(info_a["ids"]) == [m.wamid for m in a1]
        posts_a = sink.for_chat(chat_a)
        assert [(p.attempt, p.status) for p in posts_a] == [(1, 500), (2, 500)]
        assert {p.batch_id for p in posts_a} == {info_a["batch_id"]}

        await sink.stop()  # down: connection refused
        await send_all(client, svc, b1)
        await poll(lambda: dead(chat_b), 10, "chat B dead-lettered")
        (info_b,) = await dead_letters(r, chat_b)
        assert info_b["attempts"] == "2"
        assert re.search(r"ConnectError|ConnectTimeout", info_b["error"]), info_b
        assert json.loads(info_b["ids"]) == [m.wamid for m in b1]
        assert sink.for_chat(chat_b) == []
        await wait_drained(r)

        sink.set_mode("ok")
        await sink.start()
        a2 = conversation(rng, a1[0].sender, 2, ts0=a1[-1].ts + 60)
        b2 = conversation(rng, b1[0].sender, 1, ts0=b1[-1].ts + 60)
        await send_all(client, svc, a2 + b2)
        await sink.wait_for(lambda: len(sink.acked()) >= 2, 10)
        await wait_drained(r)
        assert len(await dead_letters(r, chat_a)) == len(await dead_letters(r, chat_b)) == 1

    assert len(sink.acked()) == 2
    got = {p.chat_id: p for p in sink.acked()}
    assert got[chat_a].message_ids == [m.wamid for m in a2]
    assert got[chat_b].message_ids == [m.wamid for m in b2]
    assert got[chat_a].batch["seq"] == got[chat_b].batch["seq"] == 2
    assert all(p.attempt == 1 for p in got.values())
    dead_ids = {info_a["batch_id"], info_b["batch_id"]}
    assert not dead_ids & {p.batch_id for p in sink.acked()}  # dead batches are not re-sent


# --- 5. statuses only ---------------------------------------------------------------------------


async def test_statuses_only_payload_opens_no_batch(
    redis_factory: Callable[..., RedisServer],
    start_service: StartService,
    client: httpx.AsyncClient,
    sink: Sink,
) -> None:
    """Delivery receipts are acknowledged (200) and never forwarded, nor do they open or
    extend a batch of the recipient's chat."""
    server = redis_factory()
    svc = await start_service(server)
    raw = fixture_bytes("statuses_only.json")
    r = await post_wa(client, svc, raw)
    assert r.status_code == 200, r.text
    await asyncio.sleep(3 * IDLE_MS / 1000)  # time is the subject: nothing may happen
    assert sink.received == []
    async with redis_on(server) as rc:
        assert await index_sizes(rc) == (0, 0)
        assert await keys_like(rc, "buf") == []
        assert await keys_like(rc, "meta") == []

        # The pipeline is alive: the recipient's next message is forwarded on its own.
        text = fixture_bytes("text_single.json")
        assert (await post_wa(client, svc, text)).status_code == 200
        await sink.wait_for(lambda: len(sink.acked()) == 1, 5)
        await wait_drained(rc)
    (rec,) = sink.received
    assert rec.chat_id == f"wa:{PHONE_ID}:15550136724"
    assert rec.texts == ["good morning, is the shop open today?"]
    assert abs(rec.batch["opened_at"] - rec.batch["messages"][0]["received_at"]) < 0.002


# --- 6. signatures ----------------------------------------------------------------------------


async def test_signatures_checked_over_the_raw_bytes(
    redis_factory: Callable[..., RedisServer],
    start_service: StartService,
    client: httpx.AsyncClient,
    sink: Sink,
) -> None:
    """Wrong secret, tampered body, wrong scheme, unsigned, re-serialised body: 401 and
    nothing stored. The fixture's raw bytes with its documented header: 200 and forwarded,
    text intact."""
    server = redis_factory()
    svc = await start_service(server)
    raw = fixture_bytes("signed_unicode.body")
    documented = "sha256=593b8daa3361a5b5112cae45ef7b791c9fc31dab1611b1dc9f38141f0b676ba1"
    assert hub_signature(raw) == documented  # the vector and our signer agree
    reserialised = json.dumps(json.loads(raw), ensure_ascii=False).encode()
    digest = documented.removeprefix("sha256=")
    refused: list[tuple[bytes, str | None]] = [
        (raw, hub_signature(raw, "not-the-app-secret")),
        (raw.replace(b"mudar", b"MUDAR"), documented),
        (reserialised, documented),
        (raw, "sha1=" + digest),
        (raw, digest),
        (raw, "sha256=" + digest[:-1]),
        (raw, ""),
    ]
    for body, sig in refused:
        r = await post_wa(client, svc, body, signature=sig)
        assert r.status_code == 401, (sig, r.text)
    unsigned = await client.post(
        svc.url + "/webhooks/whatsapp", content=raw, headers={"Content-Type": "application/json"}
    )
    assert unsigned.status_code == 401
    async with redis_on(server) as rc:
        assert await keys_like(rc, "buf") == [] and await index_sizes(rc) == (0, 0)

        r = await post_wa(client, svc, raw, signature=documented)
        assert r.status_code == 200, r.text
        await sink.wait_for(lambda: len(sink.acked()) == 1, 5)
        await wait_drained(rc)
    (rec,) = sink.received
    assert_forward_headers(rec)
    assert rec.chat_id == f"wa:{PHONE_ID}:15550136724"
    assert rec.texts == ["Bom dia! Quero mudar a entrega para sábado 🚚 — Belém"]
    assert rec.batch["messages"][0]["sender"]["name"] == "Ana Costa"


# --- 7. Redis stopped mid-traffic -------------------------------------------------------------


async def test_redis_stopped_mid_traffic(
    redis_factory: Callable[..., RedisServer],
    start_service: StartService,
    client: httpx.AsyncClient,
    sink: Sink,
) -> None:
    """6 users keep sending while Redis is shut down for 0.6 s and started again (same port,
    AOF). While it is down every POST answers 503 with Retry-After (not a 500, not a hang)
    and /readyz says 503. Afterwards the 503'd POSTs are retried as Meta would, some 200'd
    ones are re-sent too (Meta duplicates): every message is forwarded exactly once."""
    server = redis_factory()
    svc = await start_service(server, MAX_ATTEMPTS=20)
    rng = random.Random(7)
    users = [conversation(rng, f"1555017{k:04d}", 14) for k in range(6)]
    statuses: dict[str, list[int]] = {}
    down_at: list[float] = []
    up_at: list[float] = []

    async def user(msgs: list[WaMsg]) -> None:
        pause_at = rng.randrange(3, len(msgs) - 3)  # one pause long enough to close a batch
        for i, m in enumerate(msgs):
            r = await post_wa(client, svc, m.raw())
            statuses.setdefault(m.wamid, []).append(r.status_code)
            if r.status_code == 503:
                assert r.headers["retry-after"].isdigit(), r.headers
            await asyncio.sleep(0.35 if i == pause_at else rng.uniform(0.04, 0.09))

    async def outage() -> None:
        await asyncio.sleep(0.5)  # time is the subject: the outage falls mid-traffic
        await asyncio.to_thread(server.stop)  # SIGTERM: Redis flushes its AOF and exits
        down_at.append(time.monotonic())
        r = await client.get(svc.url + "/readyz")
        assert r.status_code == 503 and "redis" in r.text, r.text
        await asyncio.sleep(0.6)
        await asyncio.to_thread(server.start)  # same port, same data directory
        up_at.append(time.monotonic())

    await asyncio.gather(*(user(u) for u in users), outage())
    everything = [m for u in users for m in u]
    first = Counter(statuses[m.wamid][0] for m in everything)
    assert set(first) <= {200, 503}, first
    assert first[503] >= 6, f"the outage hit no traffic: {first}"
    acked_first = [m for m in everything if statuses[m.wamid][0] == 200]

    # Meta retries what was not acknowledged, and sometimes re-sends what was.
    deadline = time.monotonic() + 15
    pending = [m for m in everything if statuses[m.wamid][0] != 200]
    while pending:
        assert time.monotonic() < deadline, f"still refused: {len(pending)}"
        again = []
        for m in pending:
            r = await post_wa(client, svc, m.raw())
            assert r.status_code in (200, 503), r.text
            if r.status_code != 200:
                again.append(m)
        pending = again
        if pending:
            await asyncio.sleep(0.1)
    for m in rng.sample(acked_first, 8):
        assert (await post_wa(client, svc, m.raw())).status_code == 200

    want = {m.wamid for m in everything}
    await sink.wait_for(lambda: want <= set(delivered_ids(sink)), 20)
    async with redis_on(server) as rc:
        await wait_drained(rc, 15)
    counts = delivered_ids(sink)
    twice = {i: n for i, n in counts.items() if n > 1}
    assert not twice, f"forwarded more than once: {twice}"
    assert set(counts) == want
    for rec in sink.acked():
        assert_forward_headers(rec)
        sent_at = [m["sent_at"] for m in rec.batch["messages"]]
        assert sent_at == sorted(sent_at)
        assert all(rec.chat_id == f"wa:{PHONE_ID}:{sender_of(i)}" for i in rec.message_ids)
    (await client.get(svc.url + "/readyz")).raise_for_status()


# --- 8. SIGTERM during traffic ----------------------------------------------------------------


async def test_sigterm_during_traffic_loses_nothing(
    redis_factory: Callable[..., RedisServer],
    start_service: StartService,
    client: httpx.AsyncClient,
    sink: Sink,
) -> None:
    """SIGTERM while chat A's forward is in progress (a slow sink that then answers 500),
    chat B's burst has just been sent and chat C keeps sending until refused. The process
    exits cleanly (0) once A's forward has returned; a new process on the same Redis
    forwards every acknowledged message, duplicates only as the same batch: A's batch is
    handed back at shutdown and forwarded again by the new process (same batch_id,
    attempt 2); open bursts (B, C) are recovered there."""
    server = redis_factory()
    svc = await start_service(server)
    rng = random.Random(8)
    a = conversation(rng, "15550188881", 3)
    b = conversation(rng, "15550188882", 2)
    c = conversation(rng, "15550188883", 60)
    chat_a, chat_b = a[0].chat_id, b[0].chat_id

    def reply(rec: Received) -> Reply | None:
        if rec.chat_id == chat_a and rec.attempt == 1:
            return Reply(500, delay_s=0.8)  # slow, then a failure
        return None

    sink.respond_with(reply)
    acked: set[str] = set()
    await send_with_gaps(client, svc, a, [0.03] * len(a))
    acked |= {m.wamid for m in a}
    await sink.wait_for(lambda: bool(sink.for_chat(chat_a)), 5)  # A's forward is in progress

    stop_c = asyncio.Event()
    c_acked = asyncio.Event()

    async def user_c() -> None:  # keeps sending until the service refuses connections
        for m in c:
            if stop_c.is_set():
                return
            with contextlib.suppress(httpx.HTTPError):
                r = await post_wa(client, svc, m.raw())
                assert r.status_code in (200, 503), r.text
                if r.status_code == 200:
                    acked.add(m.wamid)
                    if len(acked) >= len(a) + 3:
                        c_acked.set()
            await asyncio.sleep(0.03)

    c_task = asyncio.create_task(user_c())
    await asyncio.wait_for(c_acked.wait(), 5)
    await send_with_gaps(client, svc, b, [0.02, 0.0])  # B's burst is open
    acked |= {m.wamid for m in b}
    sigterm_at = time.monotonic()
    code = await svc.signal_and_wait(signal.SIGTERM, 20.0)
    stopped_in = time.monotonic() - sigterm_at
    stop_c.set()
    await c_task
    assert code == 0, svc.log_tail()
    assert stopped_in < 8, stopped_in
    assert "Application shutdown complete" in svc.log_text()
    (a_first,) = sink.for_chat(chat_a)
    assert a_first.status == 500 and a_first.answered is not None
    assert a_first.answered > sigterm_at  # the forward really was in progress at SIGTERM

    restarted_at = time.monotonic()
    svc2 = await start_service(server)
    unacked = [m for m in c if m.wamid not in acked]
    await send_all(client, svc2, unacked)
    want = {m.wamid for m in a + b + c}
    await sink.wait_for(lambda: want <= set(delivered_ids(sink)), 15)
    async with redis_on(server) as r:
        await wait_drained(r)

    batches_of: dict[str, set[str]] = {}
    for rec in sink.received:
        assert_forward_headers(rec)
        for i in rec.message_ids:
            batches_of.setdefault(i, set()).add(rec.batch_id)
    split = {i: ids for i, ids in batches_of.items() if len(ids) > 1}
    assert not split, f"a message was forwarded in two different batches: {split}"
    assert set(delivered_ids(sink)) == want
    a_posts = sink.for_chat(chat_a)
    assert [(p.attempt, p.status) for p in a_posts] == [(1, 500), (2, 200)]
    assert a_posts[0].batch_id == a_posts[1].batch_id
    assert a_posts[1].message_ids == [m.wamid for m in a]
    # handed back at shutdown, taken over by the new process
    assert a_posts[1].arrived > restarted_at
    (redelivering,) = svc2.events("redelivering")  # log fields are not a contract: search
    assert a_posts[0].batch_id in json.dumps(redelivering), redelivering
    (b_post,) = sink.for_chat(chat_b)
    assert b_post.message_ids == [m.wamid for m in b] and b_post.status == 200


# --- accepted means forwardable ----------------------------------------------------------------


async def test_every_accepted_message_can_be_forwarded(
    redis_factory: Callable[..., RedisServer],
    start_service: StartService,
    client: httpx.AsyncClient,
    sink: Sink,
) -> None:
    """Once the service has said 200/202, the batch must reach the bot (not the
    dead-letter store). Inputs valid JSON allows: a lone surrogate (escaped) in a
    WhatsApp text (Meta retries anything but a 200, so it must be taken), one in a
    generic message's ``data``, and generic ``data`` nested 31 and 300 levels deep.
    A generic input may instead be refused (400/422 naming the field, nothing stored)."""
    server = redis_factory()
    svc = await start_service(server, MAX_ATTEMPTS=2)
    (wa,) = conversation(random.Random(9), "15550199991", 1)
    doc = wa.payload()
    doc["entry"][0]["changes"][0]["value"]["messages"][0]["text"]["body"] = "broken \ud83d emoji"
    raw = json.dumps(doc).encode()  # ensure_ascii: the surrogate travels as \ud83d
    assert b"\\ud83d" in raw
    assert (await post_wa(client, svc, raw)).status_code == 200
    accepted = [wa.chat_id]
    generic = {
        "web:surrogate": b'{"k": "x\\udfffy", "\\ud800": 1}',
        "web:deep31": b"[" * 31 + b"]" * 31,
        "web:deep300": b"[" * 300 + b"]" * 300,
    }
    async with redis_on(server) as rc:
        for chat, data in generic.items():
            body = b'{"chat_id": "%s", "id": "m1", "text": "hi", "data": %s}' % (
                chat.encode(),
                data,
            )
            r = await client.post(svc.url + "/v1/messages", content=body)
            assert r.status_code in (202, 400, 422), r.text
            if r.status_code == 202:
                accepted.append(chat)
            else:
                assert "data" in r.text, r.text
                assert not await is_seen(rc, KEYS, chat, "m1")  # not stored

        async def settled() -> bool:
            for chat in accepted:
                if not any(p.ok for p in sink.for_chat(chat)) and not await dead_letters(rc, chat):
                    return False
            return True

        await poll(settled, 10, "every accepted chat forwarded or dead-lettered")
        dead = {chat: (await dead_letters(rc, chat)) for chat in accepted}
        await wait_drained(rc)
    problems = {chat: d[0]["error"] for chat, d in dead.items() if d}
    assert not problems, f"accepted, then dead-lettered without reaching the bot: {problems}"
    assert {p.chat_id for p in sink.acked()} == set(accepted)
    assert len(sink.acked()) == len(accepted)
