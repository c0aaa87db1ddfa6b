"""Every Telegram fixture, played through a real ``batcher serve`` into a forward sink.

One service process (and one private redis-server) for the whole module: the
module fixture ``played`` posts every ``tests/fixtures/telegram/*.json`` as
Telegram would (one Update per POST, ``X-Telegram-Bot-Api-Secret-Token``),
waits until the sink has what ``parse_update`` says each fixture holds and
Redis is drained, then replays the same POSTs. The tests only read what it
recorded.

1. quiet service: the updates that are no message (a member update, an inline
   query, a service message, an inline-mode button) and the one without a chat:
   nothing may open; then POSTs with a missing or wrong secret token: 401, nothing
   stored;
2. burst: ``text`` + ``edit`` and ``channel_post`` + ``edited_channel_post``
   back to back (inside the idle window), then the rest, the album of three
   photos among them;
3. replay of every POST, then one new message for Ana: only it arrives.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from service.models import Message
from service.providers.telegram import HEADER, parse_update
from service.store.embedded import RedisServer
from service.tooling.procs import ServiceProc
from service.tooling.sink import Received, Sink
from tests.conftest import DockerImage
from tests.helpers import FIXTURES as FIXTURES_ROOT
from tests.web.playback import delivered, metric, play_once, settled
from tests.web.test_e2e import (
    FORWARD_SECRET,
    KEYS,
    assert_forward_headers,
    index_sizes,
    keys_like,
    redis_on,
    wait_drained,
)

FIXTURES = FIXTURES_ROOT / "telegram"
SECRET = "e2e-telegram_secret-token"
IDLE_MS = 400
ANA_CHAT, BRUNO_CHAT, GROUP = "tg:7100000001", "tg:7100000002", "tg:-1001555000001"
ALL = sorted(p.stem for p in FIXTURES.glob("*.json"))
QUIET = ["callback_inline", "inline_query", "my_chat_member", "service_new_member", "no_chat"]
EDITED = ["text", "edit", "channel_post", "edited_channel_post"]
BURST = EDITED + [n for n in ALL if n not in {*QUIET, *EDITED}]
RAW = {n: (FIXTURES / f"{n}.json").read_bytes() for n in ALL}


def parsed(name: str) -> list[tuple[str, Message]]:
    return parse_update(json.loads(RAW[name])).messages


PARSED = {m.id: m for n in ALL for _, m in parsed(n)}
EDITS = {m.id: m for n in ("edit", "edited_channel_post") for _, m in parsed(n)}
EXPECTED = Counter((c, m.id) for n in ALL for c, m in parsed(n) if m.id not in EDITS)
COMPARED = {"type", "sender", "media", "reply_to", "forwarded", "reaction", "target_id"}
COMPARED |= {"warnings", "data", "source"}
MARKER = {
    "update_id": 815000999,
    "message": {
        "message_id": 1400,
        "from": {"id": 7100000001, "is_bot": False, "first_name": "Ana"},
        "chat": {"id": 7100000001, "type": "private", "first_name": "Ana"},
        "date": 1767226000,
        "text": "again?",
    },
}
INTRUDER = json.loads(RAW["text"]) | {"update_id": 815000998}
INTRUDER["message"] = INTRUDER["message"] | {"message_id": 1399, "text": "forged"}


@dataclass
class Playback:
    first: dict[str, int] = field(default_factory=dict)  # fixture -> status of its POST
    replay: dict[str, int] = field(default_factory=dict)
    refused: list[int] = field(default_factory=list)  # statuses of the POSTs without the token
    quiet_state: tuple[int, ...] = ()  # after QUIET: open, in flight, buf keys, meta keys
    refused_state: tuple[int, ...] = ()  # after the refused POSTs: the same
    delivered: list[Received] = field(default_factory=list)  # forwards of passes 1 and 2
    after_replay: list[Received] = field(default_factory=list)
    drained: list[bool] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)  # /metrics after pass 2, after the replay
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
            "BATCHER_TELEGRAM_SECRET_TOKEN": SECRET,
            "BATCHER_IDLE_MS": str(IDLE_MS),
            "BATCHER_MAX_WAIT_MS": "5000",
            "BATCHER_RETRY_BASE_MS": "50",
            "BATCHER_RETRY_MAX_MS": "200",
            "BATCHER_SWEEP_INTERVAL_MS": "200",
            "BATCHER_SWEEP_GRACE_MS": "300",
            "BATCHER_LOG_FORMAT": "json",
        }
        svc = ServiceProc("service", env, tmp / "service.log", tmp)

        async def send(raw: bytes, token: str | None = SECRET) -> int:
            headers = {"Content-Type": "application/json"}
            if token is not None:
                headers[HEADER] = token
            url = svc.url + "/webhooks/telegram"
            return (await client.post(url, content=raw, headers=headers)).status_code

        async def post(names: list[str], into: dict[str, int]) -> None:
            for n in names:
                into[n] = await send(RAW[n])

        async def state() -> tuple[int, ...]:
            buf, meta = await keys_like(r, "buf"), await keys_like(r, "meta")
            return (*await index_sizes(r), len(buf), len(meta))

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
            out.quiet_state = await state()
            intruder = json.dumps(INTRUDER).encode()
            for token in (None, "", "wrong-token", SECRET + "x", SECRET[:-1]):
                out.refused.append(await send(intruder, token))
            out.refused.append(await send(RAW["text"], "wrong-token"))
            out.refused_state = await state()
            await post(BURST, out.first)
            await settle({i for _, i in EXPECTED})
            n = len(sink.received)
            await post(QUIET + BURST, out.replay)
            out.replay["marker"] = await send(json.dumps(MARKER).encode())
            await settle({"1400"})
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
    playback = play_once(redis_binary, tmp_path_factory.mktemp("tg-fixtures"), play)
    yield playback
    print(f"===== service log =====\n{playback.log}")  # shown when a test failed


def test_every_post_with_the_token_is_answered_200(played: Playback) -> None:
    assert set(played.first) == set(ALL)
    assert {n: s for n, s in played.first.items() if s != 200} == {}
    assert {n: s for n, s in played.replay.items() if s != 200} == {}
    assert played.bad_requests == 0


def test_a_missing_or_wrong_token_stores_nothing(played: Playback) -> None:
    assert played.refused == [401] * 6
    assert played.refused_state == (0, 0, 0, 0), "a refused POST opened a batch"
    everything = played.delivered + played.after_replay
    assert "1399" not in {i for rec in everything for i in rec.message_ids}


def test_every_message_delivered_once_to_its_chat(played: Playback) -> None:
    assert played.drained[0], "Redis not drained after the first pass"
    got = Counter((chat, m["id"]) for chat, m in delivered(played.delivered))
    assert {k: v for k, v in got.items() if v > 1} == {}, "delivered more than once"
    assert sorted(set(EXPECTED) - set(got)) == [], "never delivered"
    assert sorted(set(got) - set(EXPECTED)) == [], "delivered but not expected (or wrong chat)"
    for rec in played.delivered:
        assert_forward_headers(rec)
        assert (rec.status, rec.attempt) == (200, 1)
        assert rec.batch["channel"] == {"provider": "telegram"} and rec.batch["messages"]
    for _, m in delivered(played.delivered):
        want = PARSED[m["id"]].model_dump(mode="json", include=COMPARED)
        assert {k: m[k] for k in want} == want, m["id"]
        assert m["sent_at"] == PARSED[m["id"]].sent_at, m["id"]
        if not m["history"]:
            assert m["text"] == PARSED[m["id"]].text, m["id"]


def test_edits_applied_inside_the_window(played: Playback) -> None:
    by_id = {m["id"]: m for _, m in delivered(played.delivered)}
    for edit in EDITS.values():
        assert edit.target_id is not None
        original = by_id[edit.target_id]
        assert (original["type"], original["text"]) == ("text", edit.text)
        assert original["edited_at"] == edit.sent_at
        assert [(h["id"], h["type"]) for h in original["history"]] == [(edit.id, "edit")]
        assert original["data"] == PARSED[edit.target_id].data  # the original object stays
    all_ids = {i for rec in played.delivered + played.after_replay for i in rec.message_ids}
    assert set(EDITS) & all_ids == set()  # applied, not delivered as messages of their own


def test_the_album_is_one_batch(played: Playback) -> None:
    album = [m for n in ("album_1", "album_2", "album_3") for _, m in parsed(n)]
    assert len({m.data["media_group_id"] for m in album}) == 1
    recs = [rec for rec in played.delivered if rec.chat_id == BRUNO_CHAT]
    assert [rec.message_ids for rec in recs] == [[m.id for m in album]]
    photos = [m["media"]["id"] for m in recs[0].batch["messages"]]
    assert len(set(photos)) == 3
    assert {m["data"]["media_group_id"] for m in recs[0].batch["messages"]} == {
        album[0].data["media_group_id"]
    }


def test_group_messages_batched_per_group(played: Playback) -> None:
    recs = [rec for rec in played.delivered if rec.chat_id == GROUP]
    assert [rec.message_ids for rec in recs] == [["5101", "5102", "5103"]]
    senders = [(m["sender"]["id"], m["sender"]["name"]) for m in recs[0].batch["messages"]]
    assert senders == [
        ("7100000001", "Ana Costa"),
        ("7100000002", "Bruno Lima"),
        ("-1001555000001", "Order desk"),  # an anonymous admin: the group itself
    ]


def test_non_messages_open_no_batch(played: Playback) -> None:
    assert played.quiet_state == (0, 0, 0, 0), "a non-message update opened a batch"
    for text, times in zip(played.metrics, (1, 2), strict=True):
        got = metric(text, "batcher_messages_total", source="telegram", outcome="skipped")
        assert got == 4.0 * times  # counted per POST: the replay counts again
        assert metric(text, "batcher_rejected_messages_total", source="telegram") == 1.0
    [entry] = played.rejected[0].values()
    assert (entry["source"], entry["path"]) == ("telegram", "message")
    assert entry["raw"] == json.loads(RAW["no_chat"]) and entry["reason"]
    assert played.rejected[1] == played.rejected[0]  # the replay kept one entry


def test_replay_of_every_post_delivers_nothing_new(played: Playback) -> None:
    assert played.drained[1], "Redis not drained after the replay"
    assert [(r.chat_id, r.message_ids) for r in played.after_replay] == [(ANA_CHAT, ["1400"])]
    assert played.after_replay[0].texts == ["again?"]
