"""Every Evolution API fixture, played through a real ``batcher serve`` into a forward sink.

One service process (and one private redis-server) for the whole module: the
module fixture ``played`` posts every ``tests/fixtures/evolution/*.json`` with
its exact bytes (the ``apikey`` in the body, as Evolution sends it; some with
the key in an ``apikey`` header or a ``jwt_key`` JWT instead, some to the
webhook-by-events URL ``/webhooks/evolution/<event>``), waits until the sink
has what ``parse_webhook`` says each fixture holds and Redis is drained, then
replays the same POSTs. The tests only read what it recorded.

1. quiet service: receipts, echoes, a story, a connection update, presence,
   an unplaceable edit and a revoke Evolution reports twice: nothing may open;
   then POSTs with no, wrong or expired credentials: 401, nothing stored; then
   ``image`` + ``delete`` back to back (the revoke empties the open batch);
2. burst: ``text`` + ``edit_upsert`` and ``group_ana`` + ``edited_group`` +
   ``group_bruno`` back to back (inside the idle window), then the rest;
3. replay of every POST, then one new message for Ana: only it arrives.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from service.models import Message
from service.providers.evolution import parse_webhook
from service.store.embedded import RedisServer
from service.tooling.procs import ServiceProc
from service.tooling.sink import Received, Sink
from tests.conftest import DockerImage
from tests.helpers import FIXTURES as FIXTURES_ROOT
from tests.web.playback import delivered, play_once, settled
from tests.web.test_e2e import (
    FORWARD_SECRET,
    KEYS,
    MESSAGE_FIELDS,
    assert_forward_headers,
    index_sizes,
    keys_like,
    redis_on,
    wait_drained,
)

FIXTURES = FIXTURES_ROOT / "evolution"
KEY = "evo-test-instance-key-7Q2M"  # the fixtures' apikey
IDLE_MS = 400
ANA = "evo:shop-main:15550136724@s.whatsapp.net"
GROUP = "evo:shop-main:120363025550001111@g.us"
CHANNEL = {"provider": "evolution", "instance": "shop-main", "sender": "15550104477@s.whatsapp.net"}
ALL = sorted(p.stem for p in FIXTURES.glob("*.json"))
RAW = {n: (FIXTURES / f"{n}.json").read_bytes() for n in ALL}
QUIET = ["update_delivery", "update_read", "echo_from_me", "send_message", "status_broadcast"]
QUIET += ["connection_update", "presence_composing", "presence_paused", "edited_revoke"]
QUIET += ["edited_direct"]
REVOKED = ["image", "delete"]
EDITED = ["text", "edit_upsert", "group_ana", "edited_group", "group_bruno"]
BURST = EDITED + [n for n in ALL if n not in {*QUIET, *REVOKED, *EDITED, "wrong_apikey"}]
BY_EVENTS = set(BURST[1::2])  # posted to /webhooks/evolution/<event>
IN_HEADER = {"lid": "jwt", "poll": "apikey"}  # no apikey in the body: the header carries it


def parsed(name: str) -> list[tuple[str, Message]]:
    return parse_webhook(json.loads(RAW[name])).messages


PARSED = {m.id: m for n in ALL for _, m in parsed(n)}
[(_, TEXT)], [(_, EDIT)], [(_, GROUP_ANA)], [(_, GROUP_EDIT)], [(_, GROUP_BRUNO)] = (
    parsed(n) for n in ("text", "edit_upsert", "group_ana", "edited_group", "group_bruno")
)
APPLIED = {EDIT.id, GROUP_EDIT.id, *(m.id for n in REVOKED for _, m in parsed(n))}
EXPECTED = Counter((c, m.id) for n in QUIET + BURST for c, m in parsed(n) if m.id not in APPLIED)
COMPARED = {"type", "text", "sender", "media", "reply_to", "forwarded", "reaction", "target_id"}
COMPARED |= {"warnings", "data", "source"}
MARKER = json.loads(RAW["text"])
MARKER["data"] |= {"key": MARKER["data"]["key"] | {"id": "3EB0C4A7D1E2F3A4B5C60100"}}
MARKER["data"] |= {"message": {"conversation": "again?"}, "messageTimestamp": 1767229000}


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jwt(exp_in_s: int, key: str = KEY) -> str:
    """What Evolution signs when the webhook's headers hold ``jwt_key``."""
    now = int(time.time())
    head = b64url(b'{"alg":"HS256","typ":"JWT"}')
    claims = {"iat": now, "exp": now + exp_in_s, "app": "evolution", "action": "webhook"}
    body = b64url(json.dumps(claims).encode())
    sig = hmac.new(key.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(sig)}"


def without_apikey(raw: bytes) -> bytes:
    return json.dumps({k: v for k, v in json.loads(raw).items() if k != "apikey"}).encode()


@dataclass
class Playback:
    first: dict[str, int] = field(default_factory=dict)  # fixture -> status of its POST
    replay: dict[str, int] = field(default_factory=dict)
    refused: list[int] = field(default_factory=list)  # statuses of the bad-credential POSTs
    quiet_state: tuple[int, ...] = ()  # after QUIET: open, in flight, buf keys, meta keys
    refused_state: tuple[int, ...] = ()
    revoked_state: tuple[int, ...] = ()
    delivered: list[Received] = field(default_factory=list)  # forwards of passes 1 and 2
    after_replay: list[Received] = field(default_factory=list)
    drained: list[bool] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)  # the rejected hash, decoded
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
            "BATCHER_EVOLUTION_API_KEY": KEY,
            "BATCHER_IDLE_MS": str(IDLE_MS),
            "BATCHER_MAX_WAIT_MS": "5000",
            "BATCHER_RETRY_BASE_MS": "50",
            "BATCHER_RETRY_MAX_MS": "200",
            "BATCHER_SWEEP_INTERVAL_MS": "200",
            "BATCHER_SWEEP_GRACE_MS": "300",
            "BATCHER_LOG_FORMAT": "json",
        }
        svc = ServiceProc("service", env, tmp / "service.log", tmp)

        async def send(raw: bytes, path: str = "", **headers: str) -> int:
            url = f"{svc.url}/webhooks/evolution{path}"
            headers = {"Content-Type": "application/json"} | headers
            return (await client.post(url, content=raw, headers=headers)).status_code

        async def post(names: list[str], into: dict[str, int]) -> None:
            for n in names:
                event = json.loads(RAW[n])["event"].replace(".", "-")
                path = f"/{event}" if n in BY_EVENTS else ""
                if IN_HEADER.get(n) == "jwt":
                    auth = {"Authorization": f"Bearer {jwt(600)}"}
                    into[n] = await send(without_apikey(RAW[n]), path, **auth)
                elif IN_HEADER.get(n) == "apikey":
                    into[n] = await send(without_apikey(RAW[n]), path, apikey=KEY)
                else:
                    into[n] = await send(RAW[n], path)

        async def state() -> tuple[int, ...]:
            buf, meta = await keys_like(r, "buf"), await keys_like(r, "meta")
            return (*await index_sizes(r), len(buf), len(meta))

        def ids() -> set[str]:
            return {i for rec in sink.received if rec.is_batch for i in rec.message_ids}

        async def settle(want: set[str]) -> None:
            await settled(sink.wait_for(lambda: want <= ids(), 10))
            out.drained.append(await settled(wait_drained(r)))
            kept = cast("dict[bytes, bytes]", await r.hgetall(KEYS.rejected))
            out.rejected.append(
                {k.decode(): json.loads(v.partition(b"\t")[2]) for k, v in kept.items()}
            )

        svc.start()
        try:
            await svc.wait_ready(client)
            await post(QUIET, out.first)
            out.quiet_state = await state()
            bare = without_apikey(RAW["text"])
            out.refused += [
                await send(RAW["wrong_apikey"]),
                await send(bare),
                await send(bare, apikey="not-the-key"),
                await send(bare, Authorization=f"Bearer {jwt(-120)}"),  # expired
                await send(bare, Authorization=f"Bearer {jwt(600, 'another-key')}"),
                await send(b"not json"),
            ]
            out.refused_state = await state()
            await post(REVOKED, out.first)
            out.revoked_state = (await state())[:3]
            await post(BURST, out.first)
            await settle({i for _, i in EXPECTED})
            n = len(sink.received)
            await post(QUIET + REVOKED + BURST, out.replay)
            out.replay["marker"] = await send(json.dumps(MARKER).encode())
            await settle({MARKER["data"]["key"]["id"]})
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
    playback = play_once(redis_binary, tmp_path_factory.mktemp("evo-fixtures"), play)
    yield playback
    print(f"===== service log =====\n{playback.log}")  # shown when a test failed


def test_every_post_is_answered_200(played: Playback) -> None:
    assert set(played.first) == set(ALL) - {"wrong_apikey"}
    assert {n: s for n, s in played.first.items() if s != 200} == {}
    assert {n: s for n, s in played.replay.items() if s != 200} == {}
    assert played.bad_requests == 0


def test_bad_credentials_are_refused_and_store_nothing(played: Playback) -> None:
    assert played.refused == [401] * 6
    assert played.refused_state == (0, 0, 0, 0)
    forged = json.loads(RAW["wrong_apikey"])["data"]["key"]["id"]
    assert forged not in {i for rec in played.delivered for i in rec.message_ids}


def test_receipts_echoes_and_presence_open_no_batch(played: Playback) -> None:
    assert played.quiet_state == (0, 0, 0, 0), "a receipt, echo or presence opened a batch"
    [unplaced] = [e for e in played.rejected[0].values() if e["source"] == "evolution"]
    assert unplaced["raw"] == json.loads(RAW["edited_direct"])["data"]
    assert "names no chat" in unplaced["reason"]
    assert played.rejected[1] == played.rejected[0]  # the replay kept one entry


def test_every_message_delivered_once_to_its_chat(played: Playback) -> None:
    assert played.drained[0], "Redis not drained after the first pass"
    got = Counter((chat, m["id"]) for chat, m in delivered(played.delivered))
    assert {k: v for k, v in got.items() if v > 1} == {}, "delivered more than once"
    assert sorted(set(EXPECTED) - set(got)) == [], "never delivered"
    assert sorted(set(got) - set(EXPECTED)) == [], "delivered but not expected (or wrong chat)"
    for rec in played.delivered:
        assert_forward_headers(rec)
        assert (rec.status, rec.attempt) == (200, 1)
        assert rec.batch["channel"] == CHANNEL and rec.batch["messages"]
    for _, m in delivered(played.delivered):
        assert set(m) == MESSAGE_FIELDS
        want = PARSED[m["id"]].model_dump(mode="json", include=COMPARED)
        if m["id"] in (TEXT.id, GROUP_ANA.id):
            want["text"] = m["text"]  # edited: see the edit test
        assert {k: m[k] for k in want} == want, m["id"]
        assert m["sent_at"] == PARSED[m["id"]].sent_at, m["id"]


def test_edits_applied_inside_the_window(played: Playback) -> None:
    by_id = {m["id"]: m for _, m in delivered(played.delivered)}
    for original, edit in ((TEXT, EDIT), (GROUP_ANA, GROUP_EDIT)):
        m = by_id[original.id]
        assert (m["type"], m["text"], m["edited_at"]) == ("text", edit.text, edit.sent_at)
        assert [(h["id"], h["type"], h["target_id"]) for h in m["history"]] == [
            (edit.id, "edit", original.id)
        ]
    recs = [rec for rec in played.delivered if rec.chat_id == GROUP]
    assert [rec.message_ids for rec in recs] == [[GROUP_ANA.id, GROUP_BRUNO.id]]
    senders = [(m["sender"]["id"], m["sender"]["name"]) for m in recs[0].batch["messages"]]
    assert senders == [
        ("15550136724@s.whatsapp.net", "Ana Costa"),
        ("15550158390@s.whatsapp.net", "Bruno Lima"),
    ]
    everything = {i for rec in played.delivered + played.after_replay for i in rec.message_ids}
    assert {EDIT.id, GROUP_EDIT.id} & everything == set()


def test_delete_empties_its_batch(played: Playback) -> None:
    assert played.revoked_state == (0, 0, 0), "the emptied batch is still open or due"
    everything = played.delivered + played.after_replay
    gone = {m.id for n in REVOKED for _, m in parsed(n)}
    assert gone & {i for rec in everything for i in rec.message_ids} == set()
    assert all(rec.message_ids for rec in everything), "an empty batch was delivered"


def test_replay_delivers_nothing_new(played: Playback) -> None:
    assert played.drained[1], "Redis not drained after the replay"
    assert [(r.chat_id, r.message_ids) for r in played.after_replay] == [
        (ANA, [MARKER["data"]["key"]["id"]])
    ]
    assert played.after_replay[0].texts == ["again?"]
