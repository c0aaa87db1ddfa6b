"""Evolution API v2 payloads: parsing (service.providers.evolution) and credentials
(service.web.evolution.credentials_refusal), per fixture of ``tests/fixtures/evolution``
and per edge case."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.models import Media, Message, Reaction
from service.providers.evolution import ParsedWebhook, canonical_event, parse_webhook
from service.web.evolution import credentials_refusal, jwt_valid
from tests.helpers import FIXTURES as FIXTURES_ROOT

FIXTURES = FIXTURES_ROOT / "evolution"
ALL = sorted(p.stem for p in FIXTURES.glob("*.json"))
KEY = "evo-test-instance-key-7Q2M"
NOW = 1767230000.5
ANA, BRUNO = "15550136724@s.whatsapp.net", "15550158390@s.whatsapp.net"
GROUP = "120363025550001111@g.us"
CHAT = "evo:shop-main:"
CHANNEL = {"provider": "evolution", "instance": "shop-main", "sender": "15550104477@s.whatsapp.net"}


def doc(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_bytes())


def parse(body: Any, **kw: Any) -> ParsedWebhook:
    return parse_webhook(body, now_s=NOW, **kw)


def one(body: Any) -> tuple[str, Message]:
    parsed = parse(body)
    assert (parsed.rejected, len(parsed.messages)) == ([], 1), parsed
    return parsed.messages[0]


def with_data(name: str, **changes: Any) -> Any:
    body = copy.deepcopy(doc(name))
    body["data"] |= changes
    return body


def with_message(message: Any, message_type: str | None = None) -> Any:
    body = copy.deepcopy(doc("text"))
    body["data"]["message"] = message
    if message_type is None:
        body["data"].pop("messageType")
    else:
        body["data"]["messageType"] = message_type
    return body


# -- every fixture ----------------------------------------------------------------

# fixture -> (chat, type, text, sender id)
MESSAGES = {
    "text": (ANA, "text", "hi, is the shop open today?", ANA),
    "reply": (ANA, "text", "great, see you then", ANA),
    "forwarded_extended": (BRUNO, "text", "look at this offer: https://example.test/offer", BRUNO),
    "image": (ANA, "image", "the box arrived like this", ANA),
    "video": (BRUNO, "video", "how it sounds when I shake it", BRUNO),
    "audio_ptt": (ANA, "audio", None, ANA),
    "document": (BRUNO, "document", "here is the invoice", BRUNO),
    "sticker": (BRUNO, "sticker", None, BRUNO),
    "location": (ANA, "location", "Main Street Market", ANA),
    "location_pin": (BRUNO, "location", "41.14961,-8.61099", BRUNO),
    "contact": (ANA, "contacts", "Duarte Reis", ANA),
    "reaction": (ANA, "reaction", "\U0001f44d", ANA),
    "buttons_response": (BRUNO, "button", "Change delivery", BRUNO),
    "list_response": (ANA, "interactive", "Saturday morning", ANA),
    "poll": (BRUNO, "poll", "Which day suits you?", BRUNO),
    "group_ana": (GROUP, "text", "does anyone know if the shop delivers on Sunday?", ANA),
    "group_bruno": (GROUP, "text", "I think only on weekdays", BRUNO),
    "lid": ("201234567890123@lid", "text", "hello, do you ship abroad?", "201234567890123@lid"),
    "wrong_apikey": (ANA, "text", "forged", ANA),
    "edit_upsert": (ANA, "edit", "hi, is the shop open on Saturday?", ANA),
    "edited_group": (GROUP, "edit", "does anyone know if the shop delivers on Sundays?", ANA),
    "delete": (ANA, "revoke", None, ANA),
}
# fixture -> (statuses, skipped, rejected, typing)
OTHERS = {
    "update_delivery": (1, 0, 0, []),
    "update_read": (1, 0, 0, []),
    "echo_from_me": (0, 1, 0, []),
    "send_message": (0, 1, 0, []),
    "status_broadcast": (0, 1, 0, []),
    "connection_update": (0, 1, 0, []),
    "edited_revoke": (0, 1, 0, []),
    "edited_direct": (0, 0, 1, []),
    "presence_composing": (0, 0, 0, [(CHAT + ANA, True)]),
    "presence_paused": (0, 0, 0, [(CHAT + ANA, False)]),
}


def test_every_fixture_is_listed_here() -> None:
    assert sorted({*MESSAGES, *OTHERS}) == ALL


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_message_fixtures(name: str) -> None:
    chat, mtype, text, sender = MESSAGES[name]
    body = doc(name)
    got_chat, m = one(body)
    assert (got_chat, m.type, m.text) == (CHAT + chat, mtype, text)
    assert m.sender is not None and m.sender.id == sender
    assert (m.source, m.channel, m.warnings) == ("evolution", CHANNEL, [])
    if mtype in ("edit", "revoke"):
        assert m.target_id and m.id.startswith(m.target_id + ":")
    else:
        assert m.id == body["data"]["key"]["id"]  # the native id: retries are duplicates
        assert m.data == body["data"]  # the data object as received
        assert m.sent_at == float(body["data"]["messageTimestamp"])
        assert m.target_id is None


@pytest.mark.parametrize("name", sorted(OTHERS))
def test_fixtures_that_are_no_message(name: str) -> None:
    parsed = parse(doc(name))
    assert parsed.messages == []
    got = (parsed.statuses, parsed.skipped, len(parsed.rejected), parsed.typing)
    assert got == OTHERS[name]


def test_senders_names_and_phones() -> None:
    assert one(doc("text"))[1].sender.model_dump() == {  # type: ignore[union-attr]
        "id": ANA,
        "name": "Ana Costa",
        "phone": "15550136724",
        "user_id": None,
        "username": None,
        "country_code": None,
    }
    lid = one(doc("lid"))[1].sender
    assert lid is not None
    assert (lid.phone, lid.user_id, lid.name) == (
        "15550171122",
        "201234567890123@lid",
        "Carla Dias",
    )


def test_media_fields() -> None:
    image = one(doc("image"))[1]
    raw = doc("image")["data"]["message"]["imageMessage"]
    assert image.media == Media(
        id=image.id,
        mime_type="image/jpeg",
        sha256=raw["fileSha256"],
        caption="the box arrived like this",
        url=raw["url"],
    )
    video = one(doc("video"))[1].media
    raw_video = doc("video")["data"]["message"]
    digest = bytes(raw_video["videoMessage"]["fileSha256"][str(i)] for i in range(32))
    assert video is not None and video.sha256 == base64.b64encode(digest).decode()
    assert video.url == raw_video["mediaUrl"]  # the S3 copy, when Evolution made one
    audio = one(doc("audio_ptt"))[1].media
    assert audio is not None and (audio.voice, audio.mime_type) == (True, "audio/ogg; codecs=opus")
    document = one(doc("document"))[1].media
    assert document is not None and document.filename == "invoice-4411.pdf"
    sticker = one(doc("sticker"))[1].media
    assert sticker is not None and (sticker.animated, sticker.voice) == (False, None)


def test_reply_forwarded_reaction() -> None:
    assert one(doc("reply"))[1].reply_to == "3EB0B07E5E1A2B3C4D5E0101"  # top-level contextInfo
    assert one(doc("buttons_response"))[1].reply_to == "3EB0B07E5E1A2B3C4D5E0102"  # inner one
    assert one(doc("forwarded_extended"))[1].forwarded is True
    assert one(doc("text"))[1].forwarded is False
    reaction = one(doc("reaction"))[1].reaction
    assert reaction == Reaction(message_id="3EB0B07E5E1A2B3C4D5E0101", emoji="\U0001f44d")
    removed = with_data("reaction")
    removed["data"]["message"]["reactionMessage"]["text"] = ""
    m = one(removed)[1]
    assert (m.text, m.reaction) == (None, Reaction(message_id="3EB0B07E5E1A2B3C4D5E0101"))


def test_edits_and_revokes_name_their_original() -> None:
    edit = one(doc("edit_upsert"))[1]
    assert (edit.id, edit.target_id) == (
        "3EB0C4A7D1E2F3A4B5C60001:edit:1767225605123",
        one(doc("text"))[1].id,
    )
    assert edit.sent_at == 1767225605.123
    group_edit = one(doc("edited_group"))[1]
    assert group_edit.target_id == one(doc("group_ana"))[1].id
    assert group_edit.data == doc("edited_group")["data"]
    revoke = one(doc("delete"))[1]
    assert (revoke.id, revoke.target_id) == (
        "A5561E44C2A63682E4295B52F4840005:revoke",
        one(doc("image"))[1].id,
    )
    # The same revoke inside an upsert gets the same id: stored once.
    inside = with_message(
        {"protocolMessage": {"key": {"id": revoke.target_id}, "type": "REVOKE"}}, "protocolMessage"
    )
    assert one(inside)[1].id == revoke.id


def test_edit_without_timestamp_gets_a_stable_id() -> None:
    body = copy.deepcopy(doc("edited_group"))
    del body["data"]["timestampMs"]
    first, second = one(body)[1], one(copy.deepcopy(body))[1]
    assert first.id == second.id and first.id.startswith(first.target_id + ":edit:")  # type: ignore[operator]
    assert first.sent_at is None


def test_own_edits_and_deletions_are_skipped() -> None:
    direct = copy.deepcopy(doc("edited_direct"))
    direct["data"]["key"]["remoteJid"] = ANA  # we edited our message to Ana
    group = copy.deepcopy(doc("edited_group"))
    group["data"]["key"]["participant"] = "15550104477:3@s.whatsapp.net"  # our own device
    deleted = with_data("delete", fromMe=True)
    other = with_message({"protocolMessage": {"type": "EPHEMERAL_SETTING"}}, "protocolMessage")
    for body in (direct, group, deleted, other):
        parsed = parse(body)
        assert (parsed.messages, parsed.rejected, parsed.skipped) == ([], [], 1), body


def test_delete_in_the_api_shape_and_in_a_group() -> None:
    api = copy.deepcopy(doc("delete"))
    api["data"] = {"id": "cmjv0w1x2", "key": api["data"], "status": "DELETED"}
    assert one(api)[1].target_id == "A5561E44C2A63682E4295B52F4840005"
    group = with_data("delete", remoteJid=GROUP, participant=BRUNO)
    chat, m = one(group)
    assert (chat, m.sender and m.sender.id) == (CHAT + GROUP, BRUNO)


def test_event_spellings_and_the_url_hint() -> None:
    for spelling in ("messages.upsert", "MESSAGES_UPSERT", "messages-upsert"):
        assert canonical_event(spelling) == "MESSAGES_UPSERT"
        assert len(parse(doc("text") | {"event": spelling}).messages) == 1
    no_event = {k: v for k, v in doc("text").items() if k != "event"}
    assert len(parse(no_event, event_hint="messages-upsert").messages) == 1
    assert parse(no_event).skipped == 1
    # The body's event wins over the URL's.
    assert parse(doc("update_read"), event_hint="messages-upsert").statuses == 1


def test_data_as_a_list_keeps_the_good_messages() -> None:
    body = copy.deepcopy(doc("text"))
    good, other = copy.deepcopy(body["data"]), copy.deepcopy(doc("group_bruno")["data"])
    broken = copy.deepcopy(good)
    del broken["key"]["id"]
    body["data"] = [good, broken, other, "junk"]
    parsed = parse(body)
    assert [m.id for _, m in parsed.messages] == [good["key"]["id"], other["key"]["id"]]
    assert [(r.path, r.raw) for r in parsed.rejected] == [("data[1]", broken), ("data[3]", "junk")]
    wrapped = copy.deepcopy(doc("text"))
    wrapped["data"] = {"messages": [good]}
    assert [m.id for _, m in parse(wrapped).messages] == [good["key"]["id"]]


def test_unassignable_messages_are_rejected_alone() -> None:
    no_instance = {k: v for k, v in doc("text").items() if k != "instance"}
    [rejected] = parse(no_instance).rejected
    assert rejected.raw == doc("text")["data"]  # never the envelope (it holds the apikey)
    no_jid = copy.deepcopy(doc("text"))
    del no_jid["data"]["key"]["remoteJid"]
    deep: Any = "x"
    for _ in range(40):
        deep = {"k": deep}
    too_deep = with_data("text", extra=deep)
    for body in (no_jid, too_deep, with_data("text", key="nope")):
        parsed = parse(body)
        assert (parsed.messages, len(parsed.rejected)) == ([], 1)
    assert len(parse(doc("delete") | {"data": {"fromMe": False}}).rejected) == 1
    deep_edit = copy.deepcopy(doc("edited_group"))
    deep_edit["data"]["extra"] = deep
    assert len(parse(deep_edit).rejected) == 1


def test_odd_fields_become_warnings() -> None:
    m = one(with_data("text", messageTimestamp="yesterday"))[1]
    assert m.sent_at == NOW and m.warnings == [
        "messageTimestamp is not Unix seconds; the receive time is used"
    ]
    assert one(with_data("text", messageTimestamp="1767225601"))[1].sent_at == 1767225601.0
    long = {"low": 1767225601, "high": 0, "unsigned": False}
    assert one(with_data("text", messageTimestamp=long))[1].sent_at == 1767225601.0
    group = copy.deepcopy(doc("group_ana"))
    del group["data"]["key"]["participant"]
    chat, m = one(group)
    assert (chat, m.sender, m.warnings) == (
        CHAT + GROUP,
        None,
        ["key.participant is missing in a group message; no sender"],
    )
    bad_sha = copy.deepcopy(doc("image"))
    bad_sha["data"]["message"]["imageMessage"]["fileSha256"] = {"0": 300}
    assert one(bad_sha)[1].warnings == ["message.imageMessage.fileSha256 is not bytes; ignored"]
    buffer = copy.deepcopy(doc("image"))
    buffer["data"]["message"]["imageMessage"]["fileSha256"] = {"type": "Buffer", "data": [1, 2]}
    assert one(buffer)[1].media.sha256 == "AQI="  # type: ignore[union-attr]
    missing = with_data("text", message=None)
    assert one(missing)[1].type == "unknown"


def test_wrappers_and_types_not_listed() -> None:
    inner = {"imageMessage": {"caption": "once", "mimetype": "image/jpeg"}}
    for wrapper in ("ephemeralMessage", "viewOnceMessageV2", "documentWithCaptionMessage"):
        m = one(with_message({wrapper: {"message": inner}}))[1]
        assert (m.type, m.text) == ("image", "once"), wrapper
    event = one(with_message({"eventMessage": {"name": "Open day"}}, "eventMessage"))[1]
    assert (event.type, event.text) == ("event", None)
    contacts = {"contactsArrayMessage": {"contacts": [{"displayName": "A"}, {"displayName": "B"}]}}
    assert one(with_message(contacts))[1].text == "A, B"


def test_presence_in_a_group_and_odd_presences() -> None:
    group = copy.deepcopy(doc("presence_composing"))
    group["data"] = {
        "id": GROUP,
        "presences": {
            ANA: {"lastKnownPresence": "available"},
            BRUNO: {"lastKnownPresence": "recording"},
        },
    }
    assert parse(group).typing == [(CHAT + GROUP, True)]
    odd = copy.deepcopy(doc("presence_composing"))
    odd["data"] = {"id": ANA}
    assert (parse(odd).typing, parse(odd).skipped) == ([], 1)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    event=st.sampled_from(["messages.upsert", "messages.edited", "messages.delete", "x"]),
    data=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda kids: (
            st.lists(kids, max_size=3)
            | st.dictionaries(
                st.sampled_from(["key", "id", "remoteJid", "message", "type", "participant"]),
                kids,
                max_size=4,
            )
        ),
        max_leaves=12,
    ),
)
def test_any_json_parses_without_raising(event: str, data: Any) -> None:
    parse(doc("text") | {"event": event, "data": data})


# -- credentials --------------------------------------------------------------------


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jwt(claims: Any, key: str = KEY, alg: str = "HS256") -> str:
    head = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64url(json.dumps(claims).encode())
    sig = hmac.new(key.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(sig)}"


CLAIMS = {"iat": int(NOW), "exp": int(NOW) + 600, "app": "evolution", "action": "webhook"}
RAW = (FIXTURES / "text.json").read_bytes()
NO_KEY = json.dumps({k: v for k, v in json.loads(RAW).items() if k != "apikey"}).encode()


def refusal(body: bytes = NO_KEY, apikey: str | None = None, auth: str | None = None) -> str | None:
    return credentials_refusal(KEY, body, apikey, auth, NOW)


def test_body_apikey() -> None:
    assert refusal(RAW) is None
    assert refusal((FIXTURES / "wrong_apikey.json").read_bytes()) == (
        "invalid credentials (body apikey)"
    )
    assert refusal(NO_KEY) == "no apikey in the body, no apikey header, no Authorization header"
    assert refusal(b"not json") is not None
    assert refusal(RAW.replace(b'"apikey"', b'"apiKey"')) is not None


def test_headers() -> None:
    assert refusal(apikey=KEY) is None
    assert refusal(apikey=KEY + "x") == "invalid credentials (apikey header)"
    assert refusal(auth=f"Bearer {KEY}") is None
    assert refusal(auth=f"bearer {jwt(CLAIMS)}") is None
    assert refusal(b"not json", auth=f"Bearer {jwt(CLAIMS)}") is None  # parse answers 400 next
    # A right body apikey is enough beside a wrong header.
    assert refusal(RAW, auth="Bearer nope") is None
    assert refusal(auth=f"Basic {KEY}") == "invalid credentials (Authorization)"


@pytest.mark.parametrize(
    "token",
    [
        jwt(CLAIMS | {"exp": int(NOW) - 61}),  # expired (beyond the leeway)
        jwt(CLAIMS, key="another-key"),
        jwt({k: v for k, v in CLAIMS.items() if k != "exp"}),
        jwt(CLAIMS, alg="HS512"),
        jwt(CLAIMS, alg="none").rsplit(".", 1)[0] + ".",
        jwt(CLAIMS)[:-2],
        jwt(CLAIMS).replace(".", "..", 1),
        "not-a-token",
    ],
)
def test_bad_jwts(token: str) -> None:
    assert not jwt_valid(KEY.encode(), token, NOW)
    assert refusal(auth=f"Bearer {token}") == "invalid credentials (Authorization)"


def test_jwt_within_the_leeway() -> None:
    assert jwt_valid(KEY.encode(), jwt(CLAIMS | {"exp": int(NOW) - 30}), NOW)
    assert not jwt_valid(b"", jwt(CLAIMS), NOW)
