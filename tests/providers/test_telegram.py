"""Telegram Bot API Updates: secret token check and parsing (service.providers.telegram).

Every fixture of ``tests/fixtures/telegram`` (see its README) is parsed here;
``tests/web/test_telegram_webhook.py`` plays them through a real service.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from service.models import Media, Message, Sender
from service.providers.telegram import MAX_DEPTH, ParsedWebhook, parse_update, secret_token_valid
from tests.helpers import FIXTURES as FIXTURES_ROOT
from tests.helpers import Collector, app_client

FIXTURES = FIXTURES_ROOT / "telegram"
ALL_FIXTURES = sorted(p.stem for p in FIXTURES.glob("*.json"))
NOW = 1767230000.5  # the receive time, standing in for an unreadable date
ANA = Sender(id="7100000001", name="Ana Costa", username="ana_costa")
BRUNO = Sender(id="7100000002", name="Bruno Lima")
ANA_CHAT, BRUNO_CHAT = "tg:7100000001", "tg:7100000002"
GROUP, CHANNEL = "tg:-1001555000001", "tg:-1001555000003"
TOPIC = "tg:-1001555000002:t:7190"
SKIPPED = ["callback_inline", "inline_query", "my_chat_member", "service_new_member"]
SECRET = "tg-secret_Token-0123456789"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def parse(doc: Any) -> ParsedWebhook:
    return parse_update(doc, now_s=NOW)


def one(doc: Any) -> tuple[str, Message]:
    parsed = parse(doc)
    assert (parsed.rejected, parsed.skipped, len(parsed.messages)) == ([], 0, 1), parsed
    return parsed.messages[0]


def text_update(**message: Any) -> dict[str, Any]:
    base = {"message_id": 9, "from": {"id": 5, "first_name": "Eva"}, "chat": {"id": 5}}
    return {"update_id": 1, "message": base | {"date": 1767225600, "text": "x"} | message}


# -- the secret token --------------------------------------------------------------


def test_secret_token_matches_exactly() -> None:
    secret = SECRET.encode()
    assert secret_token_valid(secret, SECRET)
    assert secret_token_valid(secret, SECRET.encode())
    for wrong in (None, "", SECRET + "x", SECRET[:-1], SECRET.upper(), f" {SECRET}", "é"):
        assert not secret_token_valid(secret, wrong), wrong
    assert not secret_token_valid(b"", "")  # an empty secret never validates
    assert not secret_token_valid(secret, "\u20ac")  # not a header's latin-1 text


async def test_the_endpoint_checks_the_token_before_parsing(redis_url: str) -> None:
    path, body = "/webhooks/telegram", json.dumps(fixture("text")).encode()
    header = "X-Telegram-Bot-Api-Secret-Token"
    collector = Collector()
    async with app_client(redis_url, collector, telegram_secret_token=SECRET) as (client, _):
        assert (await client.post(path, content=body)).status_code == 401
        bad = await client.post(path, content=body, headers={header: "guess"})
        assert bad.status_code == 401 and header in bad.json()["error"]
        # refused before parsing: a bad body with a bad token is a 401, not a 400
        assert (await client.post(path, content=b"[", headers={header: "x"})).status_code == 401
        assert (await client.post(path, content=b"[", headers={header: SECRET})).status_code == 400
        assert (await client.post(path, content=b"[]", headers={header: SECRET})).status_code == 400
        good = await client.post(path, content=body, headers={header: SECRET})
        assert good.status_code == 200
        await collector.wait_messages(1)
    [batch] = collector.batches
    assert batch.chat_id == ANA_CHAT and batch.channel == {"provider": "telegram"}
    assert [m.id for m in batch.messages] == ["1365"]


async def test_without_a_secret_the_check_is_skipped(redis_url: str) -> None:
    async with app_client(redis_url, Collector()) as (client, _):
        body = json.dumps(fixture("my_chat_member")).encode()
        assert (await client.post("/webhooks/telegram", content=body)).status_code == 200


# -- every fixture -----------------------------------------------------------------

# fixture -> (chat, id, type, text, sender)
MESSAGES: dict[str, tuple[str, str, str, str | None, Sender]] = {
    "text": (ANA_CHAT, "1365", "text", "hi, I need to change my order", ANA),
    "edit": (ANA_CHAT, "1365:edit:1767225604", "edit", "hi, I need to change my order #4411", ANA),
    "photo": (ANA_CHAT, "1366", "photo", "the box arrived like this", ANA),
    "document": (ANA_CHAT, "1367", "document", "invoice-4411.pdf", ANA),
    "voice": (ANA_CHAT, "1368", "voice", None, ANA),
    "audio": (ANA_CHAT, "1369", "audio", "test-music.mp3", ANA),
    "video": (ANA_CHAT, "1370", "video", "opening it", ANA),
    "video_note": (ANA_CHAT, "1371", "video_note", None, ANA),
    "animation": (ANA_CHAT, "1372", "animation", "oops.mp4", ANA),
    "sticker": (ANA_CHAT, "1373", "sticker", None, ANA),
    "location": (ANA_CHAT, "1374", "location", "41.157944,-8.629105", ANA),
    "venue": (ANA_CHAT, "1375", "venue", "Pickup point Aliados", ANA),
    "contact": (ANA_CHAT, "1376", "contact", "Carla Dias +15550142210", ANA),
    "reply": (ANA_CHAT, "1378", "text", "yes, that one", ANA),
    "forwarded": (ANA_CHAT, "1379", "text", "this is what the courier sent me", ANA),
    "callback_query": (ANA_CHAT, "cb:7345555000000000101", "button", "Yes, cancel it", ANA),
    "message_reaction": (ANA_CHAT, "1380:reaction:7100000001:1767225633", "reaction", "👍", ANA),
    "album_1": (BRUNO_CHAT, "2201", "photo", "both sides and the label", BRUNO),
    "album_2": (BRUNO_CHAT, "2202", "photo", None, BRUNO),
    "album_3": (BRUNO_CHAT, "2203", "photo", None, BRUNO),
    "group_ana": (GROUP, "5101", "text", "who has the key to the stock room?", ANA),
    "group_bruno": (GROUP, "5102", "text", "I do, coming", BRUNO),
    "group_anonymous": (
        GROUP,
        "5103",
        "text",
        "thanks both",
        Sender(id=GROUP[3:], name="Order desk"),
    ),
    "topic": (TOPIC, "7205", "text", "the label printer is jammed again", BRUNO),
    "channel_post": (
        CHANNEL,
        "301",
        "text",
        "New opening hours from Monday",
        Sender(id=CHANNEL[3:], name="Shop news", username="shop_news_demo"),
    ),
    "edited_channel_post": (
        CHANNEL,
        "301:edit:1767225672",
        "edit",
        "New opening hours from Monday: 9 to 18",
        Sender(id=CHANNEL[3:], name="Shop news", username="shop_news_demo"),
    ),
}


def test_every_fixture_is_listed() -> None:
    assert sorted([*MESSAGES, *SKIPPED, "no_chat"]) == ALL_FIXTURES


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_fixture_message(name: str) -> None:
    doc = fixture(name)
    chat, message = one(doc)
    want_chat, want_id, want_type, want_text, want_sender = MESSAGES[name]
    assert (chat, message.id, message.type, message.text) == (
        want_chat,
        want_id,
        want_type,
        want_text,
    )
    assert message.sender == want_sender
    assert (message.source, message.channel, message.warnings) == (
        "telegram",
        {"provider": "telegram"},
        [],
    )
    [key] = set(doc) - {"update_id"}
    assert message.data == doc[key]  # the object as received, unchanged
    if "date" in doc[key] or "edit_date" in doc[key]:
        assert message.sent_at == float(doc[key].get("edit_date", doc[key]["date"]))
    Message.model_validate_json(message.stored_json())  # storable as is


@pytest.mark.parametrize("name", SKIPPED)
def test_non_messages_are_skipped(name: str) -> None:
    parsed = parse(fixture(name))
    assert (parsed.messages, parsed.rejected, parsed.skipped, parsed.statuses) == ([], [], 1, 0)
    assert parsed.typing == []  # Telegram reports no user typing


def test_a_message_without_a_chat_is_rejected_whole() -> None:
    doc = fixture("no_chat")
    parsed = parse(doc)
    [rejected] = parsed.rejected
    assert (parsed.messages, rejected.path, rejected.raw) == ([], "message", doc)
    assert "chat" in rejected.reason


# -- fields, kind by kind ----------------------------------------------------------


def test_photo_is_the_largest_size_whatever_the_order() -> None:
    doc = fixture("photo")
    sizes = doc["message"]["photo"]
    _, message = one(doc)
    assert message.media == Media(id=sizes[-1]["file_id"], caption="the box arrived like this")
    doc["message"]["photo"] = [sizes[2], sizes[0], {"width": 9000, "height": 9000}, sizes[1]]
    assert one(doc)[1].media == message.media  # a size without a file_id is no choice


def test_media_fields() -> None:
    media = {n: one(fixture(n))[1].media for n in MESSAGES}
    assert media["document"] == Media(
        id="BQACAgQAAxkBAAIBFGdocAAGpdf",
        mime_type="application/pdf",
        filename="invoice-4411.pdf",
    )
    voice, audio = media["voice"], media["audio"]
    assert voice is not None and (voice.voice, voice.mime_type) == (True, "audio/ogg")
    assert audio is not None and (audio.voice, audio.filename) == (False, "test-music.mp3")
    animation, sticker = media["animation"], media["sticker"]
    assert animation is not None and animation.animated  # not taken as its document twin
    assert sticker is not None and (sticker.id, sticker.animated) == (
        "CAACAgIAAxkBAAIBGmdoSticker",
        False,
    )
    video_note = media["video_note"]
    assert video_note is not None and video_note.id == "DQACAgQAAxkBAAIBGGdoNote"
    for name in ("text", "location", "venue", "contact", "reply"):
        assert media[name] is None, name


def test_reply_forward_and_button() -> None:
    assert one(fixture("reply"))[1].reply_to == "1377"
    assert one(fixture("group_bruno"))[1].reply_to == "5101"
    assert one(fixture("forwarded"))[1].forwarded
    assert not one(fixture("text"))[1].forwarded
    doc = fixture("forwarded")
    for key in ("forward_from", "forward_date"):  # forward_origin alone is enough
        del doc["message"][key]
    assert one(doc)[1].forwarded
    _, button = one(fixture("callback_query"))
    assert (button.reply_to, button.sent_at) == ("1380", None)  # a callback carries no date
    doc = fixture("callback_query")
    del doc["callback_query"]["message"]["reply_markup"]
    assert one(doc)[1].text == "cancel:4411"  # no keyboard to name it: the data


def test_topic_messages_are_a_chat_of_their_own() -> None:
    doc = fixture("topic")
    chat, message = one(doc)
    assert chat == TOPIC and message.reply_to is None  # the topic's first message: no reply
    doc["message"]["reply_to_message"]["message_id"] = 7201
    assert one(doc)[1].reply_to == "7201"
    doc["message"]["is_topic_message"] = None  # a reply thread of a plain group is no topic
    assert one(doc)[0] == "tg:-1001555000002"


def test_album_parts_share_a_chat_and_keep_their_group_id() -> None:
    parts = [one(fixture(f"album_{i}")) for i in (1, 2, 3)]
    assert {chat for chat, _ in parts} == {BRUNO_CHAT}
    assert {m.data["media_group_id"] for _, m in parts} == {"13914510587654321"}
    assert len({m.media.id for _, m in parts if m.media}) == 3


def test_edits_name_their_original() -> None:
    _, original = one(fixture("text"))
    chat, edit = one(fixture("edit"))
    assert (chat, edit.target_id, edit.sent_at) == (ANA_CHAT, original.id, 1767225604.0)
    assert original.with_edit(edit).text == edit.text
    doc = fixture("edit")
    del doc["edited_message"]["edit_date"]
    _, undated = one(doc)
    assert undated.id == "1365:edit:u815000102" and undated.sent_at == NOW
    assert undated.warnings == ["edit_date is missing; the receive time is used"]
    doc = fixture("photo")
    doc["edited_message"] = doc.pop("message") | {"edit_date": 1767225700, "caption": "new"}
    _, caption_edit = one(doc)
    assert (caption_edit.text, caption_edit.media and caption_edit.media.caption) == ("new", "new")


def test_reactions() -> None:
    _, liked = one(fixture("message_reaction"))
    assert liked.reaction is not None and liked.reaction.model_dump() == {
        "message_id": "1380",
        "emoji": "👍",
    }
    doc = fixture("message_reaction")
    body = doc["message_reaction"]
    body["old_reaction"], body["new_reaction"] = body["new_reaction"], []
    _, removed = one(doc)
    assert removed.reaction is not None and (removed.text, removed.reaction.emoji) == (None, None)
    body["new_reaction"] = [*body["old_reaction"], {"type": "emoji", "emoji": "🔥"}]
    assert one(doc)[1].text == "🔥"  # the one added
    body["old_reaction"], body["new_reaction"] = [], [{"type": "paid"}]
    assert one(doc)[1].text == "paid"  # no emoji, yet not removed
    del body["user"]
    body["actor_chat"] = {"id": -1001555000001, "title": "Order desk", "type": "supergroup"}
    assert one(doc)[1].sender == Sender(id="-1001555000001", name="Order desk")


@pytest.mark.parametrize(
    ("extra", "mtype", "text"),
    [
        ({"poll": {"id": "1", "question": "Which day?", "options": []}}, "poll", "Which day?"),
        ({"dice": {"emoji": "🎲", "value": 4}}, "dice", "🎲 4"),
        ({"web_app_data": {"data": "{}", "button_text": "Order"}}, "web_app_data", "Order"),
        (
            {"paid_media": {"star_count": 5, "paid_media": []}, "caption": "pay"},
            "paid_media",
            "pay",
        ),
        ({"some_future_kind": {"x": 1}, "caption": "hello"}, "unknown", "hello"),
        ({"location": {"latitude": 41, "longitude": -8.5}}, "location", "41,-8.5"),
        ({"venue": {"title": "", "address": "", "location": {}}}, "venue", None),
    ],
)
def test_other_kinds(extra: dict[str, Any], mtype: str, text: str | None) -> None:
    doc = text_update(**extra)
    del doc["message"]["text"]
    _, message = one(doc)
    assert (message.type, message.text) == (mtype, text)


# -- odd input -------------------------------------------------------------------


def test_odd_fields_are_warnings_not_losses() -> None:
    chat, message = one(text_update(date="yesterday", **{"from": "Eva"}))
    assert (chat, message.sent_at, message.sender) == ("tg:5", NOW, Sender(id="5"))
    assert sorted(message.warnings) == [
        "date 'yesterday' is not Unix seconds; the receive time is used",
        "from is not an object; ignored",
    ]
    _, numeric = one(text_update(text=42, message_id="9"))
    assert (numeric.id, numeric.text) == ("9", "42")


@pytest.mark.parametrize(
    ("doc", "path", "reason"),
    [
        ({"update_id": 1, "message": "hi"}, "message", "not an object"),
        (text_update(chat={"title": "no id"}), "message", "names no chat"),
        (text_update(chat=None), "message", "names no chat"),
        (text_update(message_id=None), "message", "no message_id"),
        ({"update_id": 1, "edited_message": [1]}, "edited_message", "not an object"),
        (
            {"update_id": 1, "callback_query": {"message": {"chat": {"id": 1}}}},
            "callback_query",
            "no id",
        ),
        (
            {"update_id": 1, "message_reaction": {"chat": {"id": 1}}},
            "message_reaction",
            "message_id",
        ),
        ({"update_id": 1, "message_reaction": {"message_id": 3}}, "message_reaction", "chat"),
    ],
)
def test_rejected(doc: Any, path: str, reason: str) -> None:
    parsed = parse(doc)
    [rejected] = parsed.rejected
    assert (parsed.messages, rejected.path, rejected.raw) == ([], path, doc)
    assert reason in rejected.reason


def test_too_deep_is_rejected() -> None:
    node: Any = "x"
    for _ in range(MAX_DEPTH + 1):
        node = {"k": node}
    parsed = parse(text_update(entities=[node]))
    assert not parsed.messages and "deeper" in parsed.rejected[0].reason


@pytest.mark.parametrize(
    "doc",
    [{}, {"update_id": 5}, {"update_id": 5, "message": None}, {"update_id": 5, "poll": {}}],
)
def test_nothing_to_batch(doc: Any) -> None:
    assert parse(doc) == ParsedWebhook(skipped=1)


def test_one_update_parses_the_same_twice() -> None:
    doc = fixture("photo")
    before = copy.deepcopy(doc)
    assert parse(doc) == parse(doc) and doc == before  # no mutation, stable ids
