"""Every WhatsApp fixture, played signed through a real ``batcher serve`` into a forward sink.

One service process (and one private redis-server) for the whole module: the
module fixture ``played`` posts every ``tests/fixtures/whatsapp/*.json`` with
its exact bytes and ``X-Hub-Signature-256``, waits until the sink has what
``parse_webhook`` says each fixture holds and Redis is drained, then replays
the same signed bytes. The tests only read what it recorded.

1. quiet service: ``statuses_only`` and ``value_errors`` (nothing may open), then
   ``image`` + ``revoke`` back to back (the revoke empties the open batch);
2. burst: ``text`` + ``edit`` back to back (inside the idle window), then the rest;
3. replay of every POST, then one new marker message for Ana: only the marker arrives.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from service.models import Message
from service.providers.whatsapp import parse_webhook
from service.store.embedded import RedisServer
from service.tooling.procs import ServiceProc
from service.tooling.sink import Received, Sink
from tests.conftest import DockerImage
from tests.web.playback import delivered, metric, play_once, settled
from tests.web.test_e2e import (
    APP_SECRET,
    BATCH_FIELDS,
    FIXTURES,
    FORWARD_SECRET,
    KEYS,
    MESSAGE_FIELDS,
    PHONE_ID,
    WaMsg,
    assert_forward_headers,
    fixture_bytes,
    hub_signature,
    index_sizes,
    keys_like,
    post_wa,
    redis_on,
    wait_drained,
)

IDLE_MS = 400
ANA, BRUNO = "15550136724", "15550158390"
CHANNEL = {
    "provider": "whatsapp",
    "phone_number_id": PHONE_ID,
    "display_phone_number": "15550104477",
    "waba_id": "118402755301946",
}
ALL = sorted(p.name for p in FIXTURES.glob("*.json"))
QUIET = ["statuses_only.json", "value_errors.json"]
REVOKED = ["image.json", "revoke.json"]
EDITED = ["text.json", "edit.json"]
BURST = EDITED + [n for n in ALL if n not in {*QUIET, *REVOKED, *EDITED}]
SIGNED = {n: (raw, hub_signature(raw)) for n in ALL for raw in [fixture_bytes(n)]}


def raw_messages(name: str) -> list[dict[str, Any]]:
    doc = json.loads(SIGNED[name][0])
    return [m for e in doc["entry"] for c in e["changes"] for m in c["value"].get("messages", [])]


def parsed(name: str) -> list[tuple[str, Message]]:
    return parse_webhook(json.loads(SIGNED[name][0])).messages


[TEXT], [EDIT], [IMAGE], [REVOKE] = (raw_messages(n) for n in (*EDITED, *REVOKED))
APPLIED = {EDIT["id"], IMAGE["id"], REVOKE["id"]}  # consumed by the append script
EXPECTED = Counter((chat, m.id) for n in ALL for chat, m in parsed(n) if m.id not in APPLIED)
PARSED = {m.id: m for n in ALL for _, m in parsed(n)}
COMPARED = {"type", "text", "sender", "media", "reply_to", "forwarded", "referral"}
COMPARED |= {"reaction", "target_id", "errors", "warnings", "data"}


@dataclass
class Playback:
    marker: WaMsg  # a new message for Ana, posted after the replay
    first: dict[str, int] = field(default_factory=dict)  # fixture -> status of its POST
    replay: dict[str, int] = field(default_factory=dict)
    quiet_state: tuple[int, ...] = ()  # after QUIET: open, in flight, buf keys, meta keys
    revoked_state: tuple[int, ...] = ()  # after REVOKED: open, in flight, buf keys
    delivered: list[Received] = field(default_factory=list)  # forwards of passes 1 and 2
    after_replay: list[Received] = field(default_factory=list)  # forwards after that
    drained: list[bool] = field(default_factory=list)  # after the first pass, after the replay
    metrics: list[str] = field(default_factory=list)  # /metrics, same two moments
    rejected: list[dict[str, Any]] = field(default_factory=list)  # the rejected hash, decoded
    emptied: list[dict[str, Any]] = field(default_factory=list)  # "emptied" log events
    bad_requests: int = 0
    log: str = ""


async def play(server: RedisServer, tmp: Path) -> Playback:
    out = Playback(WaMsg(ANA, f"wamid.REPLAY.{uuid.uuid4().hex}", 1767230000, "again?"))
    async with (
        Sink(secret=FORWARD_SECRET.encode()) as sink,
        httpx.AsyncClient(timeout=10) as client,
        redis_on(server) as r,
    ):
        env = {
            "BATCHER_REDIS_URL": server.url,
            "BATCHER_FORWARD_URL": sink.url,
            "BATCHER_FORWARD_SECRET": FORWARD_SECRET,
            "BATCHER_WHATSAPP_APP_SECRET": APP_SECRET,
            "BATCHER_IDLE_MS": str(IDLE_MS),
            "BATCHER_MAX_WAIT_MS": "5000",
            "BATCHER_RETRY_BASE_MS": "50",
            "BATCHER_RETRY_MAX_MS": "200",
            "BATCHER_SWEEP_INTERVAL_MS": "200",
            "BATCHER_SWEEP_GRACE_MS": "300",
            "BATCHER_LOG_FORMAT": "json",
        }
        svc = ServiceProc("service", env, tmp / "service.log", tmp)

        async def post(names: list[str], into: dict[str, int]) -> None:
            for n in names:
                raw, signature = SIGNED[n]
                into[n] = (await post_wa(client, svc, raw, signature)).status_code

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
            await post(QUIET, out.first)
            out.quiet_state = (*await state(), len(await keys_like(r, "meta")))
            await post(REVOKED, out.first)
            out.revoked_state = await state()
            await post(BURST, out.first)
            await settle({i for _, i in EXPECTED})
            n = len(sink.received)
            await post(QUIET + REVOKED + BURST, out.replay)
            out.replay["marker"] = (await post_wa(client, svc, out.marker.raw())).status_code
            await settle({out.marker.wamid})
        finally:
            await svc.stop()
            out.log, out.emptied = svc.log_tail(200), svc.events("emptied")
        out.delivered, out.after_replay = sink.received[:n], sink.received[n:]
        out.bad_requests = sink.bad_requests
    return out


@pytest.fixture(scope="module")
def played(
    redis_binary: Path | DockerImage, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Playback]:
    playback = play_once(redis_binary, tmp_path_factory.mktemp("wa-fixtures"), play)
    yield playback
    print(f"===== service log =====\n{playback.log}")  # shown when a test failed


def test_every_signed_post_is_answered_200(played: Playback) -> None:
    assert set(played.first) == set(ALL)
    assert {n: s for n, s in played.first.items() if s != 200} == {}
    assert {n: s for n, s in played.replay.items() if s != 200} == {}
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
        assert rec.batch["channel"] == CHANNEL and rec.batch["messages"]
    for _, m in delivered(played.delivered):
        assert set(m) == MESSAGE_FIELDS
        want = PARSED[m["id"]].model_dump(mode="json", include=COMPARED)
        if m["id"] == TEXT["id"]:
            want["text"] = m["text"]  # edited: see the edit test
        assert {k: m[k] for k in want} == want, m["id"]
        if not want["warnings"]:
            assert m["sent_at"] == PARSED[m["id"]].sent_at, m["id"]


def test_group_messages_batched_per_group(played: Playback) -> None:
    raws = raw_messages("group_text.json")
    group = f"wa:{PHONE_ID}:g:{raws[0]['group_id']}"
    assert {r["group_id"] for r in raws} == {raws[0]["group_id"]}
    recs = [rec for rec in played.delivered if rec.chat_id == group]
    assert [rec.message_ids for rec in recs] == [[r["id"] for r in raws]]
    senders = [(m["sender"]["id"], m["sender"]["name"]) for m in recs[0].batch["messages"]]
    assert senders == [(ANA, "Ana Costa"), (BRUNO, "Bruno Lima")]


def test_mixed_post_loses_nothing(played: Playback) -> None:
    good, late, broken = raw_messages("mixed_good_and_broken.json")
    chats = {m["id"]: chat for chat, m in delivered(played.delivered)}
    assert chats.get(good["id"]) == f"wa:{PHONE_ID}:{ANA}"
    assert chats.get(late["id"]) == f"wa:{PHONE_ID}:{BRUNO}"
    assert broken["id"] not in chats
    [entry] = played.rejected[0].values()
    assert (entry["source"], entry["raw"]) == ("whatsapp", broken)
    assert entry["path"] == "entry[0].changes[0].value.messages[2]" and entry["reason"]
    for text in played.metrics:
        assert metric(text, "batcher_rejected_messages_total", source="whatsapp") == 1.0
    assert played.rejected[1] == played.rejected[0]  # the replay kept one entry


def test_edit_applied_inside_the_window(played: Playback) -> None:
    new_text = EDIT["edit"]["message"]["text"]["body"]
    assert EDIT["edit"]["original_message_id"] == TEXT["id"] and new_text != TEXT["text"]["body"]
    [(_, m)] = [(c, m) for c, m in delivered(played.delivered) if m["id"] == TEXT["id"]]
    assert (m["type"], m["text"], m["sent_at"]) == ("text", new_text, float(TEXT["timestamp"]))
    assert m["edited_at"] == float(EDIT["timestamp"])
    assert [(h["id"], h["type"], h["text"]) for h in m["history"]] == [
        (EDIT["id"], "edit", new_text)
    ]
    assert m["history"][0]["target_id"] == TEXT["id"]
    all_ids = {i for rec in played.delivered + played.after_replay for i in rec.message_ids}
    assert EDIT["id"] not in all_ids  # applied, not delivered as a message of its own


def test_revoke_empties_its_batch(played: Playback) -> None:
    assert REVOKE["revoke"]["original_message_id"] == IMAGE["id"]
    assert played.revoked_state == (0, 0, 0), "the emptied batch is still open or due"
    everything = played.delivered + played.after_replay
    all_ids = {i for rec in everything for i in rec.message_ids}
    assert {IMAGE["id"], REVOKE["id"]} & all_ids == set()
    assert all(rec.message_ids for rec in everything), "an empty batch was delivered"
    assert any(REVOKE["id"] in json.dumps(e) for e in played.emptied), played.emptied


def test_statuses_and_value_errors_open_no_batch(played: Playback) -> None:
    assert played.quiet_state == (0, 0, 0, 0), "a status or a value.errors opened a batch"
    statuses = json.loads(SIGNED["statuses_only.json"][0])["entry"][0]["changes"][0]["value"]
    all_ids = {i for rec in played.delivered for i in rec.message_ids}
    assert {s["id"] for s in statuses["statuses"]} & all_ids == set()
    name = "batcher_provider_errors_total"
    assert metric(played.metrics[0], name, source="whatsapp", code="130429") == 1.0


def test_replay_of_the_same_signed_bytes_delivers_nothing_new(played: Playback) -> None:
    assert played.drained[1], "Redis not drained after the replay"
    assert [(r.chat_id, r.message_ids) for r in played.after_replay] == [
        (played.marker.chat_id, [played.marker.wamid])
    ]
    assert played.after_replay[0].texts == ["again?"]
