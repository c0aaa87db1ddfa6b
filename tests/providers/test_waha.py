"""WAHA events read into messages, and the HMAC check (fixtures: tests/fixtures/waha)."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest

from service.providers.waha import parse_event, signature_valid
from tests.helpers import FIXTURES

DIR = FIXTURES / "waha"
ANA, BRUNO = "waha:default:15550136724@c.us", "waha:default:15550158390@c.us"
GROUP = "waha:default:120363040000000001@g.us"
KEY = b"waha-test-hmac-key"


def doc(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DIR / f"{name}.json").read_text(encoding="utf-8"))
    return loaded


def sign(body: bytes, key: bytes = KEY) -> str:
    return hmac.new(key, body, hashlib.sha512).hexdigest()


def test_the_signature_is_hmac_sha512_of_the_raw_body() -> None:
    body = (DIR / "text.json").read_bytes()
    assert signature_valid(KEY, body, sign(body), "sha512")
    assert signature_valid(KEY, body, sign(body).upper(), None)  # hex, either case
    assert not signature_valid(KEY, body + b" ", sign(body), "sha512")
    assert not signature_valid(KEY, body, sign(body, b"other"), "sha512")
    assert not signature_valid(KEY, body, sign(body), "sha256")  # another algorithm
    assert not signature_valid(KEY, body, None, "sha512")
    assert not signature_valid(b"", body, sign(body, b""), "sha512")  # no key, no trust


# fixture -> (chat, type, text, sender id, sender name)
MESSAGES = {
    "text": (ANA, "text", "hi, are you open today?", "15550136724@c.us", "Ana Souza"),
    "image": (ANA, "image", "this one", "15550136724@c.us", "Ana Souza"),
    "voice": (BRUNO, "audio", None, "15550158390@c.us", "Bruno"),
    "location": (BRUNO, "location", "Praça do Comércio", "15550158390@c.us", "Bruno"),
    "reply": (ANA, "text", "yes, that one", "15550136724@c.us", "Ana Souza"),
    "group_text": (GROUP, "text", "who is bringing drinks?", "15550172215@c.us", "Carla"),
    "group_text_2": (GROUP, "text", "me!", "15550136724@c.us", "Ana Souza"),
    "reaction": (ANA, "reaction", "👍", "15550136724@c.us", None),
    "edited": (ANA, "edit", "hi, are you open tomorrow?", "15550136724@c.us", "Ana Souza"),
    "revoked": (ANA, "revoke", None, "15550136724@c.us", "Ana Souza"),
}


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_each_message_fixture(name: str) -> None:
    raw = doc(name)
    got = parse_event(raw)
    [(chat, m)] = got.messages
    want_chat, kind, text, sender, sender_name = MESSAGES[name]
    assert (chat, m.type, m.text) == (want_chat, kind, text)
    assert m.sender is not None and (m.sender.id, m.sender.name) == (sender, sender_name)
    assert m.source == "waha" and not m.warnings
    assert m.channel == {"provider": "waha", "session": "default", "me": "15550104477@c.us"}
    assert (got.statuses, got.skipped, got.rejected, got.typing) == (0, 0, [], [])


def test_fields_beyond_the_text() -> None:
    [(_, image)] = parse_event(doc("image")).messages
    assert image.id == "false_15550136724@c.us_3EB0A1B2C3D4E5F60002"
    assert image.media is not None and image.media.mime_type == "image/jpeg"
    assert image.media.caption == "this one" and image.media.url
    assert image.data == doc("image")["payload"] and image.sent_at == 1767225601
    [(_, voice)] = parse_event(doc("voice")).messages
    assert voice.media is not None and voice.media.voice is True
    [(_, reply)] = parse_event(doc("reply")).messages
    assert reply.reply_to == "true_15550136724@c.us_3EB0FFEE00000000AAAA"
    [(_, reaction)] = parse_event(doc("reaction")).messages
    assert reaction.reaction is not None
    assert reaction.reaction.message_id == "true_15550136724@c.us_3EB0FFEE00000000AAAA"
    [(_, edit)] = parse_event(doc("edited")).messages
    assert edit.target_id == "false_15550136724@c.us_3EB0A1B2C3D4E5F60001"
    assert edit.id != edit.target_id
    [(_, revoke)] = parse_event(doc("revoked")).messages
    assert revoke.target_id == "false_15550136724@c.us_3EB0A1B2C3D4E5F60002"
    [(_, where)] = parse_event(doc("location")).messages
    assert where.sender is not None and where.sender.phone == "15550158390"


def test_receipts_echoes_and_other_events_open_nothing() -> None:
    ack = parse_event(doc("ack"))
    assert (ack.messages, ack.statuses) == ([], 1)
    for name in ("echo", "message_any", "session_status"):
        got = parse_event(doc(name))
        assert (got.messages, got.skipped, got.typing) == ([], 1, []), name


def test_presence_is_typing() -> None:
    assert parse_event(doc("presence_typing")).typing == [(ANA, True)]
    assert parse_event(doc("presence_paused")).typing == [(ANA, False)]
    recording = doc("presence_typing")
    recording["payload"]["presences"][0]["lastKnownPresence"] = "recording"
    assert parse_event(recording).typing == [(ANA, True)]
    assert parse_event(recording).messages == []


def test_a_message_without_a_chat_is_kept_aside() -> None:
    got = parse_event(doc("no_from"))
    [rejected] = got.rejected
    assert got.messages == [] and "chat" in rejected.reason
    assert rejected.raw == doc("no_from")["payload"]


def test_odd_fields_are_warnings_not_losses() -> None:
    raw = doc("text")
    raw["payload"]["timestamp"] = "soon"
    raw["payload"]["replyTo"] = 7
    [(_, m)] = parse_event(raw).messages
    assert m.text == "hi, are you open today?" and m.sent_at is None
    assert any("timestamp" in w for w in m.warnings)


def test_a_body_without_payload_is_skipped() -> None:
    got = parse_event({"event": "message", "session": "default"})
    assert (got.messages, got.skipped) == ([], 1)
