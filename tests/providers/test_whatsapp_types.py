"""Every WhatsApp Cloud API message type, parsed (service.providers.whatsapp.parse_webhook).

Pure parser tests, no Redis. The fixtures are request bodies in the shape of
Meta's webhook reference page for each type, with values of their own
(``tests/fixtures/whatsapp/README.md`` says what each one holds).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from service.models import Message
from service.providers.whatsapp import ParsedWebhook, parse_webhook
from tests.helpers import FIXTURES

WA = FIXTURES / "whatsapp"
WABA, DISPLAY, PHONE_ID = "118402755301946", "15550104477", "127350894416205"
ANA, BRUNO = "15550136724", "15550158390"
ANA_BSUID, BRUNO_BSUID = "US.18265530917744028613", "US.20417736580029316654"
LONE_BSUID = "US.30592218846170057721"
CHANNEL = {
    "provider": "whatsapp",
    "phone_number_id": PHONE_ID,
    "display_phone_number": DISPLAY,
    "waba_id": WABA,
}
# Every fixture but the older, general ones (tests/providers/test_whatsapp.py reads those).
TYPE_FIXTURES = sorted(
    {p.stem for p in WA.glob("*.json")} - {"text_single", "multi_sender_mixed", "statuses_only"}
)


def chat(key: str) -> str:
    return f"wa:{PHONE_ID}:{key}"


def load(name: str) -> Any:
    return json.loads((WA / f"{name}.json").read_text(encoding="utf-8"))


def raw_messages(doc: Any) -> list[dict[str, Any]]:
    """The message objects of a document, in payload order."""
    return [
        m
        for entry in doc["entry"]
        for ch in entry["changes"]
        for m in ch["value"].get("messages", [])
    ]


RECEIVED_S = 1767225999.5  # the receive time, standing in for an unreadable timestamp


def parse(doc: Any, per_member_groups: bool = False) -> ParsedWebhook:
    return parse_webhook(doc, per_member_groups=per_member_groups, now_s=RECEIVED_S)


def only(name: str, doc: Any = None) -> tuple[str, Message, dict[str, Any]]:
    """The single message of a fixture (or of ``doc``), with its raw object."""
    doc = load(name) if doc is None else doc
    parsed = parse(doc)
    assert (parsed.statuses, parsed.errors, parsed.rejected, parsed.skipped) == (0, [], [], 0)
    [(chat_id, m)] = parsed.messages
    [raw] = raw_messages(doc)
    assert (m.id, m.source, m.data, m.channel) == (raw["id"], "whatsapp", raw, CHANNEL)
    return chat_id, m, raw


def who(m: Message) -> tuple[str | None, ...]:
    s = m.sender
    assert s is not None
    return (s.id, s.name, s.phone, s.user_id, s.username, s.country_code)


def plain(m: Message) -> None:
    """Nothing but a sender and a text: no media, context, referral or reaction."""
    assert (m.media, m.reply_to, m.referral, m.reaction, m.target_id) == (None,) * 5
    assert (m.forwarded, m.errors, m.warnings) == (False, [], [])


# -- every fixture ---------------------------------------------------------------


@pytest.mark.parametrize("name", TYPE_FIXTURES)
def test_fixture_parses_every_message_once(name: str) -> None:
    doc = load(name)
    parsed = parse(doc)
    seen = [m.data for _, m in parsed.messages] + [r.raw for r in parsed.rejected]
    assert sorted(map(json.dumps, seen)) == sorted(map(json.dumps, raw_messages(doc)))
    kept = [r for r in raw_messages(doc) if r not in [x.raw for x in parsed.rejected]]
    assert [m.data for _, m in parsed.messages] == kept
    assert all(m.source == "whatsapp" and m.channel == CHANNEL for _, m in parsed.messages)


def test_message_ids_unique_across_fixtures() -> None:
    ids = [m["id"] for path in sorted(WA.glob("*.json")) for m in raw_messages(load(path.stem))]
    assert len(TYPE_FIXTURES) == 31 and len(ids) >= 36
    assert len(ids) == len(set(ids))


# -- one test per type -------------------------------------------------------------


def test_text() -> None:
    chat_id, m, raw = only("text")
    assert (chat_id, m.type, m.text) == (chat(ANA), "text", raw["text"]["body"])
    assert m.sent_at == float(raw["timestamp"])
    assert who(m) == (ANA, "Ana Costa", ANA, None, None, None)
    plain(m)


@pytest.mark.parametrize(
    ("name", "kind", "sender", "text"),
    [
        ("image", "image", ANA, "this is the lamp I mean, the green one"),
        ("audio_voice", "audio", BRUNO, None),
        ("video", "video", ANA, "the drawer sticks when I open it, see"),
        ("document", "document", BRUNO, "my receipt from last week"),
        ("sticker", "sticker", ANA, None),
    ],
)
def test_media(name: str, kind: str, sender: str, text: str | None) -> None:
    chat_id, m, raw = only(name)
    body = raw[kind]
    assert (chat_id, m.type, m.text) == (chat(sender), kind, text)
    assert m.media is not None
    assert (m.media.id, m.media.mime_type, m.media.sha256, m.media.url) == (
        body["id"],
        body["mime_type"],
        body["sha256"],
        body["url"],
    )
    assert (m.media.caption, m.media.filename) == (body.get("caption"), body.get("filename"))
    assert (m.media.voice, m.media.animated) == (body.get("voice"), body.get("animated"))
    assert (m.reply_to, m.errors, m.warnings) == (None, [], [])


def test_voice_and_sticker_flags() -> None:
    voice, sticker = only("audio_voice")[1].media, only("sticker")[1].media
    assert voice is not None and sticker is not None
    assert (voice.voice, sticker.animated) == (True, False)
    assert voice.mime_type == "audio/ogg; codecs=opus"


def test_document_without_caption_is_named_by_its_filename() -> None:
    doc = load("document")
    del raw_messages(doc)[0]["document"]["caption"]
    _, m, _ = only("document", doc)
    assert m.text == "receipt-2025-12-24.pdf"
    assert m.media is not None and m.media.caption is None


def test_location() -> None:
    chat_id, m, raw = only("location")
    assert (chat_id, m.type, m.text) == (chat(ANA), "location", "Harbour Lane Market")
    plain(m)
    doc = load("location")
    del raw_messages(doc)[0]["location"]["name"]
    assert only("location", doc)[1].text == raw["location"]["address"]


def test_location_pin_is_its_coordinates() -> None:
    chat_id, m, _ = only("location_pin")
    assert (chat_id, m.type, m.text) == (chat(BRUNO), "location", "41.1579,-8.6291")


def test_contacts_card() -> None:
    chat_id, m, _ = only("contacts")
    assert (chat_id, m.type, m.text) == (chat(ANA), "contacts", "Carla Dias, Duarte Reis")
    assert who(m)[:2] == (ANA, "Ana Costa")  # the sender, never a shared card
    plain(m)


@pytest.mark.parametrize(
    ("name", "sender", "text"),
    [
        ("interactive_button_reply", BRUNO, "Pick up tomorrow"),
        ("interactive_list_reply", ANA, "14:30 - 15:00"),
        ("interactive_nfm_reply", BRUNO, "Sent"),
    ],
)
def test_interactive_reply(name: str, sender: str, text: str) -> None:
    chat_id, m, raw = only(name)
    assert (chat_id, m.type, m.text) == (chat(sender), "interactive", text)
    assert m.reply_to == raw["context"]["id"] and m.reply_to.startswith("wamid.")
    assert (m.forwarded, m.media, m.warnings) == (False, None, [])


def test_template_quick_reply_button() -> None:
    chat_id, m, raw = only("button")
    assert (chat_id, m.type, m.text) == (chat(ANA), "button", "Yes, keep my booking")
    assert m.reply_to == raw["context"]["id"]


def test_reaction_and_its_removal() -> None:
    _, added, raw = only("reaction")
    assert added.reaction is not None
    assert (added.type, added.text) == ("reaction", "\u2764\ufe0f")
    assert (added.reaction.message_id, added.reaction.emoji) == (
        raw["reaction"]["message_id"],
        "\u2764\ufe0f",
    )
    chat_id, removed, raw = only("reaction_removed")
    assert removed.reaction is not None
    assert (chat_id, removed.type, removed.text) == (chat(BRUNO), "reaction", None)
    assert (removed.reaction.message_id, removed.reaction.emoji) == (
        raw["reaction"]["message_id"],
        None,
    )


def test_order() -> None:
    chat_id, m, _ = only("order")
    assert (chat_id, m.type, m.text) == (chat(ANA), "order", "please gift-wrap the candles")
    doc = load("order")
    del raw_messages(doc)[0]["order"]["text"]
    summary = only("order", doc)[1].text
    assert isinstance(summary, str) and summary.strip()


def test_system_changed_number_has_no_contact() -> None:
    doc = load("system_changed_number")
    assert "contacts" not in doc["entry"][0]["changes"][0]["value"]
    chat_id, m, raw = only("system_changed_number")
    assert (chat_id, m.type, m.text) == (chat(ANA), "system", raw["system"]["body"])
    assert who(m) == (ANA, None, ANA, None, None, None)


def test_system_changed_user_id_goes_to_the_bsuid_chat() -> None:
    chat_id, m, raw = only("system_changed_user_id")
    assert (chat_id, m.type, m.text) == (chat(BRUNO_BSUID), "system", raw["system"]["body"])
    assert who(m) == (BRUNO_BSUID, None, None, BRUNO_BSUID, None, None)


def test_unsupported_keeps_its_errors() -> None:
    chat_id, m, raw = only("unsupported")
    assert (chat_id, m.type, m.text, m.media) == (chat(ANA), "unsupported", None, None)
    assert m.errors == raw["errors"]
    assert m.errors[0]["code"] == 131051


def test_edit_targets_the_text_fixture() -> None:
    chat_id, m, raw = only("edit")
    [original] = raw_messages(load("text"))
    assert (chat_id, m.type, m.target_id) == (chat(ANA), "edit", original["id"])
    assert m.text == raw["edit"]["message"]["text"]["body"] != original["text"]["body"]


def test_revoke_targets_the_image_fixture() -> None:
    chat_id, m, _ = only("revoke")
    [original] = raw_messages(load("image"))
    assert (chat_id, m.type, m.text, m.target_id) == (chat(ANA), "revoke", None, original["id"])


def test_request_welcome() -> None:
    chat_id, m, _ = only("request_welcome")
    assert (chat_id, m.type, m.text) == (chat(BRUNO), "request_welcome", None)
    assert who(m)[:3] == (BRUNO, "Bruno Lima", BRUNO)
    plain(m)


@pytest.mark.parametrize("per_member", [False, True])
def test_group_messages(per_member: bool) -> None:
    doc = load("group_text")
    group_id = raw_messages(doc)[0]["group_id"]
    parsed = parse(doc, per_member_groups=per_member)
    group = chat(f"g:{group_id}")
    expected = [chat(ANA), chat(BRUNO)] if per_member else [group, group]
    assert [c for c, _ in parsed.messages] == expected
    assert [who(m)[:2] for _, m in parsed.messages] == [(ANA, "Ana Costa"), (BRUNO, "Bruno Lima")]
    assert parsed.rejected == []


def test_bsuid_only_sender() -> None:
    chat_id, m, _ = only("bsuid_only")
    assert chat_id == chat(ANA_BSUID)
    assert who(m) == (ANA_BSUID, "Ana Costa", None, ANA_BSUID, "@ana.costa", "US")


def test_bsuid_from_the_single_contact() -> None:
    chat_id, m, _ = only("bsuid_contact_only")
    assert chat_id == chat(LONE_BSUID)
    assert who(m) == (LONE_BSUID, None, None, LONE_BSUID, None, None)


def test_bsuid_and_phone_are_one_chat() -> None:
    parsed = parse(load("bsuid_both"))
    assert [c for c, _ in parsed.messages] == [chat(BRUNO), chat(BRUNO)]
    for _, m in parsed.messages:
        assert who(m) == (BRUNO, "Bruno Lima", BRUNO, BRUNO_BSUID, None, None)


def test_value_errors_are_reported_not_batched() -> None:
    doc = load("value_errors")
    parsed = parse(doc)
    assert (parsed.messages, parsed.rejected, parsed.statuses) == ([], [], 0)
    [err] = parsed.errors
    [raw] = doc["entry"][0]["changes"][0]["value"]["errors"]
    assert (err.code, err.title, err.message) == (130429, "Rate limit hit", raw["message"])
    assert (err.details, err.raw) == (raw["error_data"]["details"], raw)


def test_two_entries() -> None:
    parsed = parse(load("two_entries"))
    assert [(c, m.text) for c, m in parsed.messages] == [
        (chat(ANA), "first entry, from Ana"),
        (chat(BRUNO), "second entry, from Bruno"),
    ]
    assert all(m.channel == CHANNEL for _, m in parsed.messages)


def test_mixed_good_and_broken() -> None:
    doc = load("mixed_good_and_broken")
    raws = raw_messages(doc)
    parsed = parse(doc)
    [(good_chat, good), (late_chat, late)] = parsed.messages
    assert (good_chat, good.data, good.warnings) == (chat(ANA), raws[0], [])
    assert good.sent_at == float(raws[0]["timestamp"])
    assert (late_chat, late.data, late.sent_at) == (chat(BRUNO), raws[1], RECEIVED_S)
    assert any("timestamp" in w for w in late.warnings)
    [rejected] = parsed.rejected
    assert (rejected.path, rejected.raw) == ("entry[0].changes[0].value.messages[2]", raws[2])
    assert isinstance(rejected.reason, str) and rejected.reason
    assert parsed.errors == []


def test_forwarded_and_reply_context() -> None:
    doc = load("with_context_forwarded")
    raws = raw_messages(doc)
    [(c1, forwarded), (c2, reply)] = parse(doc).messages
    assert (c1, forwarded.forwarded, forwarded.reply_to) == (chat(ANA), True, None)
    assert (c2, reply.forwarded, reply.reply_to) == (chat(BRUNO), False, raws[1]["context"]["id"])
    often = copy.deepcopy(doc)
    raw_messages(often)[0]["context"] = {"frequently_forwarded": True}
    assert parse(often).messages[0][1].forwarded is True


def test_click_to_whatsapp_referral() -> None:
    chat_id, m, raw = only("referral")
    assert (chat_id, m.type, m.text) == (chat(ANA), "text", raw["text"]["body"])
    assert m.referral == raw["referral"]
    assert (m.reply_to, m.forwarded) == (None, False)
