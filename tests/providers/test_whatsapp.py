"""WhatsApp Cloud API payloads: signature check and parsing (service.providers.whatsapp).

The fixtures are request bodies in Meta's documented shape, written for these
tests (``tests/fixtures/whatsapp/README.md`` says what each one holds).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.providers.whatsapp import (
    MAX_DEPTH,
    MalformedPayload,
    ParsedWebhook,
    parse_webhook,
    signature_valid,
)
from tests.helpers import FIXTURES as FIXTURES_ROOT

SECRET = b"test-app-secret"
SIGNED_UNICODE_HEADER = "sha256=593b8daa3361a5b5112cae45ef7b791c9fc31dab1611b1dc9f38141f0b676ba1"
PHONE_ID = "127350894416205"
ANA, BRUNO = "15550136724", "15550158390"

# A second test vector, written inline: one line, exact bytes.
VECTOR_BODY = (
    b'{"object":"whatsapp_business_account","entry":[{"id":"118402755301946","changes":[{"value":'
    b'{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550104477",'
    b'"phone_number_id":"127350894416205"},"contacts":[{"profile":{"name":"Ana"},'
    b'"wa_id":"15550136724"}],"messages":[{"from":"15550136724",'
    b'"id":"wamid.HBgLMTU1NTAxMzY3MjQVAgASGBQzRUIwVkVDVE9SMDAwMDAwMDAwMQA=",'
    b'"timestamp":"1767226000","type":"text","text":{"body":"na\\u00efve \\ud83c\\udf89"}}]},'
    b'"field":"messages"}]}]}'
)
VECTOR_HEADER = "sha256=93d83376775dd045a98ede17b0ad03ff3fd9db761a7eefe4f6ead9beaf2e9609"


FIXTURES = FIXTURES_ROOT / "whatsapp"
FIXTURE_NAMES = ("text_single", "multi_sender_mixed", "statuses_only", "reaction")


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture_doc(name: str) -> Any:
    return json.loads(fixture_bytes(f"{name}.json"))


# -- hand-built payloads ---------------------------------------------------------


def msg(mid: str = "wamid.A", frm: str | None = ANA, type_: str = "text", **extra: Any) -> Any:
    doc: dict[str, Any] = {"id": mid, "timestamp": "1767225600", "type": type_}
    if frm is not None:
        doc["from"] = frm
    if type_ == "text" and "text" not in extra:
        doc["text"] = {"body": f"body of {mid}"}
    return doc | extra


def value(*messages: Any, phone_id: str = PHONE_ID, **extra: Any) -> Any:
    doc: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550104477", "phone_number_id": phone_id},
    }
    if messages:
        doc["messages"] = list(messages)
    return doc | extra


def change(val: Any, field: str = "messages") -> Any:
    return {"field": field, "value": val}


def payload(*entries: list[Any]) -> Any:
    """One entry per argument, each a list of changes."""
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": f"10000000000000{i}", "changes": chs} for i, chs in enumerate(entries)],
    }


def single(message: Any, **value_extra: Any) -> Any:
    return payload([change(value(message, **value_extra))])


def one(message: Any, **value_extra: Any) -> tuple[str, Any]:
    parsed = parse_webhook(single(message, **value_extra))
    assert len(parsed.messages) == 1
    return parsed.messages[0]


# -- signature -------------------------------------------------------------------


def test_signed_fixture_verifies() -> None:
    body = fixture_bytes("signed_unicode.body")
    assert signature_valid(SECRET, body, SIGNED_UNICODE_HEADER)
    assert not signature_valid(b"another-secret", body, SIGNED_UNICODE_HEADER)


@pytest.mark.parametrize(
    "dump",
    [
        pytest.param(lambda d: json.dumps(d), id="json.dumps"),
        pytest.param(
            lambda d: json.dumps(d, separators=(",", ":"), ensure_ascii=False), id="compact-utf8"
        ),
    ],
)
def test_signed_fixture_fails_once_reserialised(dump: Callable[[Any], str]) -> None:
    # (Compact separators with ASCII escapes happen to rebuild this body byte for
    # byte, key order included; a real Meta body need not round-trip like that.)
    body = fixture_bytes("signed_unicode.body")
    again = dump(json.loads(body)).encode("utf-8", "surrogatepass")
    assert again != body
    assert not signature_valid(SECRET, again, SIGNED_UNICODE_HEADER)


@pytest.mark.parametrize("where", [0, 100, 250, -1])
def test_signed_fixture_fails_with_one_byte_changed(where: int) -> None:
    body = bytearray(fixture_bytes("signed_unicode.body"))
    body[where] ^= 0x01
    assert not signature_valid(SECRET, bytes(body), SIGNED_UNICODE_HEADER)
    assert not signature_valid(SECRET, bytes(body) + b"\n", SIGNED_UNICODE_HEADER)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha256=",
        "sha256",
        SIGNED_UNICODE_HEADER.upper(),  # upper-case prefix
        "SHA256=" + SIGNED_UNICODE_HEADER[7:],
        SIGNED_UNICODE_HEADER[7:],  # bare hex, no prefix
        "sha1=" + SIGNED_UNICODE_HEADER[7:],
        SIGNED_UNICODE_HEADER[:-1],  # 63 hex digits
        SIGNED_UNICODE_HEADER + "0",  # 65 hex digits
        SIGNED_UNICODE_HEADER[:-1] + "g",  # not hex
        SIGNED_UNICODE_HEADER[:-1] + "\u0661",  # a non-ASCII digit
        "sha256=" + "\u00e9" * 64,
        "sha256= " + SIGNED_UNICODE_HEADER[7:],
        SIGNED_UNICODE_HEADER + "," + SIGNED_UNICODE_HEADER,
        "sha256=" + "0" * 64,
    ],
)
def test_missing_or_garbled_header_fails(header: str | None) -> None:
    assert not signature_valid(SECRET, fixture_bytes("signed_unicode.body"), header)


def test_upper_case_hex_and_surrounding_space_accepted() -> None:
    body = fixture_bytes("signed_unicode.body")
    assert signature_valid(SECRET, body, "sha256=" + SIGNED_UNICODE_HEADER[7:].upper())
    assert signature_valid(SECRET, body, f"  {SIGNED_UNICODE_HEADER} ")


def test_reference_vector() -> None:
    assert signature_valid(SECRET, VECTOR_BODY, VECTOR_HEADER)
    doc = json.loads(VECTOR_BODY)
    for again in (json.dumps(doc), json.dumps(doc, separators=(",", ":"), ensure_ascii=False)):
        assert not signature_valid(SECRET, again.encode(), VECTOR_HEADER)
    chat_id, message = parse_webhook(doc).messages[0]
    assert (chat_id, message.text) == (f"wa:{PHONE_ID}:{ANA}", "na\u00efve \U0001f389")


def test_empty_secret_never_validates() -> None:
    header = "sha256=" + hmac.new(b"", b"{}", hashlib.sha256).hexdigest()
    assert not signature_valid(b"", b"{}", header)


# -- the fixtures ---------------------------------------------------------------


def test_text_single() -> None:
    parsed = parse_webhook(fixture_doc("text_single"))
    assert (parsed.statuses, parsed.errors, parsed.skipped) == (0, 0, 0)
    [(chat_id, m)] = parsed.messages
    assert chat_id == f"wa:{PHONE_ID}:{ANA}"
    assert m.id == "wamid.HBgLMTU1NTAxMzY3MjQVAgASGBQzRUIwOTgyMjE2M0FGQTNCN0ZBMAA="
    assert (m.type, m.text, m.sent_at, m.source) == (
        "text",
        "good morning, is the shop open today?",
        1767225600.0,
        "whatsapp",
    )
    assert m.received_at is None
    assert m.data["profile_name"] == "Ana Costa"
    assert m.data["text"] == {"body": "good morning, is the shop open today?"}
    assert m.data["from"] == ANA


def test_signed_unicode_body_parses() -> None:
    [(_, m)] = parse_webhook(json.loads(fixture_bytes("signed_unicode.body"))).messages
    assert m.text == "Bom dia! Quero mudar a entrega para s\u00e1bado \U0001f69a \u2014 Bel\u00e9m"


def test_multi_sender_mixed() -> None:
    doc = fixture_doc("multi_sender_mixed")
    # The contacts are listed Bruno first, the messages start with Ana: pairing by
    # index would swap the names.
    assert [c["wa_id"] for c in doc["entry"][0]["changes"][0]["value"]["contacts"]] == [BRUNO, ANA]
    parsed = parse_webhook(doc)
    assert len(parsed.messages) == 3
    assert [c for c, _ in parsed.messages] == [
        f"wa:{PHONE_ID}:{ANA}",
        f"wa:{PHONE_ID}:{BRUNO}",
        f"wa:{PHONE_ID}:{BRUNO}",
    ]
    assert len({c for c, _ in parsed.messages}) == 2
    ms = [m for _, m in parsed.messages]
    assert [m.type for m in ms] == ["text", "image", "interactive"]
    assert [m.text for m in ms] == [
        "do you deliver on saturdays?",
        "is this one still in stock?",
        "Reserve it",
    ]
    assert [m.data["profile_name"] for m in ms] == ["Ana Costa", "Bruno Lima", "Bruno Lima"]
    assert [m.sent_at for m in ms] == [1767225661.0, 1767225662.0, 1767225663.0]
    assert ms[1].data["image"]["id"] == "4000000000000004"
    assert ms[2].data["context"]["id"].startswith("wamid.")


def test_statuses_only() -> None:
    parsed = parse_webhook(fixture_doc("statuses_only"))
    # A failed receipt's own errors[] belong to the receipt: not counted in `errors`.
    assert parsed == ParsedWebhook(messages=[], statuses=3, errors=0, skipped=0)


def test_reaction() -> None:
    doc = fixture_doc("reaction")
    [(chat_id, m)] = parse_webhook(doc).messages
    assert chat_id == f"wa:{PHONE_ID}:{ANA}"
    assert (m.type, m.text) == ("reaction", "\u2764\ufe0f")
    del doc["entry"][0]["changes"][0]["value"]["messages"][0]["reaction"]["emoji"]
    [(_, removed)] = parse_webhook(doc).messages
    assert (removed.type, removed.text) == ("reaction", None)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixtures_not_mutated_and_storable(name: str) -> None:
    doc = fixture_doc(name)
    before = copy.deepcopy(doc)
    parsed = parse_webhook(doc)
    assert doc == before
    for _, m in parsed.messages:
        assert json.loads(m.stored_json())["data"] == m.data


# -- hand-built cases ----------------------------------------------------------------


def test_every_entry_change_and_message() -> None:
    doc = payload(
        [
            change(value(msg("wamid.1"), msg("wamid.2", BRUNO))),
            change(value(msg("wamid.3"), phone_id="300")),
        ],
        [
            change({"anything": True}, field="account_update"),
            change(value(msg("wamid.4"), msg("wamid.5", BRUNO), statuses=[{"id": "s"}])),
        ],
    )
    parsed = parse_webhook(doc)
    assert [(c, m.id) for c, m in parsed.messages] == [
        (f"wa:{PHONE_ID}:{ANA}", "wamid.1"),
        (f"wa:{PHONE_ID}:{BRUNO}", "wamid.2"),
        (f"wa:300:{ANA}", "wamid.3"),
        (f"wa:{PHONE_ID}:{ANA}", "wamid.4"),
        (f"wa:{PHONE_ID}:{BRUNO}", "wamid.5"),
    ]
    assert (parsed.statuses, parsed.errors, parsed.skipped) == (1, 0, 1)


def test_empty_envelope() -> None:
    assert parse_webhook(payload()) == ParsedWebhook([], 0, 0, 0)
    assert parse_webhook(payload([])) == ParsedWebhook([], 0, 0, 0)
    assert parse_webhook(payload([change(value())])) == ParsedWebhook([], 0, 0, 0)


def test_duplicate_wamids_are_kept_for_the_batcher_to_dedupe() -> None:
    parsed = parse_webhook(payload([change(value(msg("wamid.1"), msg("wamid.1")))]))
    assert [m.id for _, m in parsed.messages] == ["wamid.1", "wamid.1"]


@pytest.mark.parametrize("frm", ["", None])
def test_empty_from_falls_back_to_bsuid(frm: str | None) -> None:
    contacts = [{"wa_id": "", "user_id": "US.abc123", "profile": {"name": "Cleo"}}]
    chat_id, m = one(msg(frm=frm, from_user_id="US.abc123"), contacts=contacts)
    assert chat_id == f"wa:{PHONE_ID}:US.abc123"
    assert m.data["profile_name"] == "Cleo"


def test_from_wins_over_bsuid() -> None:
    chat_id, _ = one(msg(from_user_id="US.abc123"))
    assert chat_id == f"wa:{PHONE_ID}:{ANA}"


def test_plus_prefixed_from_is_normalised() -> None:
    contacts = [{"wa_id": ANA, "profile": {"name": "Ana"}}]
    chat_id, m = one(msg(frm="+" + ANA), contacts=contacts)
    assert chat_id == f"wa:{PHONE_ID}:{ANA}"
    assert m.data["profile_name"] == "Ana"
    assert m.data["from"] == "+" + ANA  # the provider's object stays as received


def test_profile_name_only_when_known() -> None:
    assert "profile_name" not in one(msg())[1].data
    for contacts in (
        [{"wa_id": BRUNO, "profile": {"name": "Bruno"}}],
        [{"wa_id": ANA}],
        [{"wa_id": ANA, "profile": {}}],
        [{"wa_id": ANA, "profile": {"name": ""}}],
        None,
    ):
        assert "profile_name" not in one(msg(), contacts=contacts)[1].data


def test_data_is_a_copy_of_the_message() -> None:
    doc = single(msg(), contacts=[{"wa_id": ANA, "profile": {"name": "Ana"}}])
    before = copy.deepcopy(doc)
    [(_, m)] = parse_webhook(doc).messages
    assert doc == before
    original = doc["entry"][0]["changes"][0]["value"]["messages"][0]
    assert m.data == original | {"profile_name": "Ana"}
    assert m.data is not original


def test_other_fields_are_skipped_unread() -> None:
    doc = payload(
        [change("not even an object", field="account_alerts"), change(None, field="flows")]
    )
    assert parse_webhook(doc) == ParsedWebhook([], 0, 0, 2)


def test_unknown_type_is_delivered_without_text() -> None:
    _, m = one(msg(type_="poll_vote", poll_vote={"option": "A"}))
    assert (m.type, m.text, m.data["poll_vote"]) == ("poll_vote", None, {"option": "A"})


def test_system_messages_are_skipped() -> None:
    system = msg(
        "wamid.S",
        frm=None,
        type_="system",
        system={"type": "user_changed_number", "body": "changed", "wa_id": "1555"},
    )
    parsed = parse_webhook(payload([change(value(system, msg("wamid.T")))]))
    assert [m.id for _, m in parsed.messages] == ["wamid.T"]
    assert parsed.skipped == 1


def test_unsupported_is_delivered_and_its_errors_counted() -> None:
    error = {"code": 131051, "title": "Message type unknown"}
    doc = single(
        msg(type_="unsupported", unsupported={"type": "poll"}, errors=[error]), errors=[error]
    )
    parsed = parse_webhook(doc)
    [(_, m)] = parsed.messages
    assert (m.type, m.text) == ("unsupported", None)
    assert parsed.errors == 2


def test_value_errors_only() -> None:
    doc = payload([change({"metadata": {"phone_number_id": PHONE_ID}, "errors": [{}, {}]})])
    assert parse_webhook(doc) == ParsedWebhook([], 0, 2, 0)


@pytest.mark.parametrize(
    ("message", "text"),
    [
        (msg(type_="text", text={"body": ""}), None),
        (msg(type_="text"), "body of wamid.A"),
        (msg(type_="image", image={"id": "1", "caption": "look"}), "look"),
        (msg(type_="image", image={"id": "1"}), None),
        (msg(type_="video", video={"caption": "clip"}), "clip"),
        (msg(type_="audio", audio={"id": "1", "voice": True}), None),
        (msg(type_="sticker", sticker={"id": "1", "animated": False}), None),
        (msg(type_="document", document={"filename": "a.pdf", "caption": "the bill"}), "the bill"),
        (msg(type_="document", document={"filename": "a.pdf"}), "a.pdf"),
        (msg(type_="document", document={"filename": "a.pdf", "caption": ""}), "a.pdf"),
        (msg(type_="document", document={}), None),
        (
            msg(type_="location", location={"latitude": 1.5, "longitude": 2, "name": "Shop"}),
            "Shop",
        ),
        (
            msg(type_="location", location={"latitude": 1, "longitude": 2, "address": "Rua 1"}),
            "Rua 1",
        ),
        (
            msg(type_="location", location={"latitude": 38.7223, "longitude": -9.1393}),
            "38.7223,-9.1393",
        ),
        (msg(type_="location", location={"latitude": 38.7223}), None),
        (msg(type_="location"), None),
        (
            msg(
                type_="contacts",
                contacts=[
                    {"name": {"formatted_name": "Ana P", "first_name": "Ana"}},
                    {"phones": [{"phone": "+1555"}]},
                    {"name": {"formatted_name": "Bruno S"}},
                ],
            ),
            "Ana P, Bruno S",
        ),
        (msg(type_="contacts", contacts=[{"name": {"first_name": "X"}}]), None),
        (
            msg(
                type_="interactive",
                interactive={"type": "button_reply", "button_reply": {"id": "y", "title": "Yes"}},
            ),
            "Yes",
        ),
        (
            msg(
                type_="interactive",
                interactive={"type": "list_reply", "list_reply": {"id": "2", "title": "Two"}},
            ),
            "Two",
        ),
        (
            msg(
                type_="interactive",
                interactive={
                    "type": "nfm_reply",
                    "nfm_reply": {"name": "flow", "body": "Sent", "response_json": "{}"},
                },
            ),
            "Sent",
        ),
        (msg(type_="interactive", interactive={"list_reply": {"title": "Two"}}), "Two"),
        (msg(type_="interactive", interactive={"type": "call_permission_reply"}), None),
        (
            msg(type_="button", button={"payload": "STOP", "text": "Stop promotions"}),
            "Stop promotions",
        ),
        (
            msg(type_="reaction", reaction={"message_id": "wamid.Z", "emoji": "\u2764\ufe0f"}),
            "\u2764\ufe0f",
        ),
        (msg(type_="order", order={"catalog_id": "1", "text": "two please"}), "two please"),
        (msg(type_="order", order={"catalog_id": "1", "product_items": []}), None),
        (msg(type_="request_welcome"), None),
    ],
    ids=lambda v: v["type"] if isinstance(v, dict) else None,
)
def test_text_per_type(message: Any, text: str | None) -> None:
    _, m = one(message)
    assert (m.type, m.text) == (message["type"], text)


@pytest.mark.parametrize(
    ("timestamp", "sent_at"),
    [
        ("1767225600", 1767225600.0),
        ("0", 0.0),
        ("007", 7.0),
        (1767225600, 1767225600.0),
        (None, None),
    ],
)
def test_sent_at(timestamp: Any, sent_at: float | None) -> None:
    assert one(msg(timestamp=timestamp))[1].sent_at == sent_at


def test_sent_at_absent() -> None:
    no_timestamp = msg()
    del no_timestamp["timestamp"]
    assert one(no_timestamp)[1].sent_at is None


def test_null_optional_keys_are_absent_keys() -> None:
    parsed = parse_webhook(
        single(
            msg(type_="image", image={"caption": None}), contacts=None, statuses=None, errors=None
        )
    )
    assert parsed.messages[0][1].text is None
    assert (parsed.statuses, parsed.errors) == (0, 0)


def nested(depth: int, leaf: Any = "x") -> Any:
    node = leaf
    for i in range(depth):
        node = [node] if i % 2 else {"k": node}
    return node


def test_nesting_limit() -> None:
    _, m = one(msg(context={"deep": nested(MAX_DEPTH - 3)}))
    json.loads(m.stored_json())
    with pytest.raises(MalformedPayload, match=r"entry\[0\]\.changes\[0\]\.value\.messages\[0\]"):
        parse_webhook(single(msg(context=nested(10_000))))


# -- malformed documents --------------------------------------------------------------

DROP = object()


def bad(path: tuple[Any, ...], new: Any, expected: str, label: str) -> Any:
    """A parameter: the valid two-change document with ``path`` set to ``new`` (or dropped)."""
    return pytest.param(path, new, expected, id=label)


def base_doc() -> Any:
    return payload(
        [
            change(value(msg("wamid.1"))),
            change(value(msg("wamid.2", type_="image", image={"caption": "c"}))),
        ]
    )


V1 = ("entry", 0, "changes", 1, "value")
M1 = (*V1, "messages", 0)
P1 = "entry[0].changes[1].value"


@pytest.mark.parametrize(
    ("path", "new", "expected"),
    [
        bad((), [], "payload must be an object", "not-an-object"),
        bad(("object",), DROP, "object must be 'whatsapp_business_account'", "object-missing"),
        bad(("object",), "page", "object must be 'whatsapp_business_account'", "object-wrong"),
        bad(("entry",), DROP, "entry must be a list", "entry-missing"),
        bad(("entry",), {}, "entry must be a list", "entry-object"),
        bad(("entry", 0), "x", "entry[0] must be an object", "entry-item-string"),
        bad(("entry", 0, "changes"), None, "entry[0].changes must be a list", "changes-null"),
        bad(("entry", 0, "changes", 1), [], "entry[0].changes[1] must be an object", "change-list"),
        bad(
            ("entry", 0, "changes", 1, "field"), DROP, f"{P1[:-6]}.field must be a string", "field"
        ),
        bad(V1, DROP, f"{P1} must be an object", "value-missing"),
        bad((*V1, "messages"), {}, f"{P1}.messages must be a list", "messages-object"),
        bad(M1, "wamid.2", f"{P1}.messages[0] must be an object", "message-string"),
        bad((*M1, "id"), DROP, f"{P1}.messages[0].id must be a non-empty string", "id-missing"),
        bad((*M1, "id"), 12, f"{P1}.messages[0].id must be a non-empty string", "id-int"),
        bad((*M1, "id"), "", f"{P1}.messages[0].id must be a non-empty string", "id-empty"),
        bad((*M1, "type"), ["image"], f"{P1}.messages[0].type must be", "type-list"),
        bad((*M1, "from"), int(ANA), f"{P1}.messages[0].from must be a string", "from-int"),
        bad((*M1, "from"), "", f"{P1}.messages[0] has neither 'from' nor", "no-sender"),
        bad((*M1, "from_user_id"), 7, f"{P1}.messages[0].from_user_id must be", "bsuid-int"),
        bad((*V1, "metadata"), DROP, f"{P1}.metadata must be an object", "metadata-missing"),
        bad((*V1, "metadata"), "x", f"{P1}.metadata must be an object", "metadata-string"),
        bad((*V1, "metadata", "phone_number_id"), "", f"{P1}.metadata.phone_number_id", "pnid"),
        bad((*V1, "metadata", "phone_number_id"), 2, f"{P1}.metadata.phone_number_id", "pnid-int"),
        bad((*M1, "timestamp"), "soon", f"{P1}.messages[0].timestamp", "timestamp-word"),
        bad((*M1, "timestamp"), "1.5", f"{P1}.messages[0].timestamp", "timestamp-decimal"),
        bad((*M1, "timestamp"), " 17", f"{P1}.messages[0].timestamp", "timestamp-space"),
        bad((*M1, "timestamp"), "\u0661\u0662", f"{P1}.messages[0].timestamp", "timestamp-arabic"),
        bad((*M1, "timestamp"), "9" * 400, f"{P1}.messages[0].timestamp", "timestamp-huge"),
        bad((*M1, "timestamp"), "9" * 5000, f"{P1}.messages[0].timestamp", "timestamp-5000"),
        bad((*M1, "timestamp"), True, f"{P1}.messages[0].timestamp", "timestamp-bool"),
        bad((*M1, "timestamp"), 1.5, f"{P1}.messages[0].timestamp", "timestamp-float"),
        bad((*M1, "image"), "c", f"{P1}.messages[0].image must be an object", "image-string"),
        bad((*M1, "image", "caption"), 3, f"{P1}.messages[0].image.caption must be", "caption"),
        bad((*V1, "contacts"), {}, f"{P1}.contacts must be a list", "contacts-object"),
        bad((*V1, "contacts"), [1], f"{P1}.contacts[0] must be an object", "contact-int"),
        bad(
            (*V1, "contacts"),
            [{"wa_id": "1", "profile": {"name": 5}}],
            f"{P1}.contacts[0].profile.name must be a string",
            "profile-name-int",
        ),
        bad((*V1, "contacts"), [{"wa_id": 1}], f"{P1}.contacts[0].wa_id must be", "wa-id-int"),
        bad((*V1, "statuses"), "read", f"{P1}.statuses must be a list", "statuses-string"),
        bad((*V1, "statuses"), ["read"], f"{P1}.statuses[0] must be an object", "status-str"),
        bad((*V1, "errors"), {"code": 1}, f"{P1}.errors must be a list", "errors-object"),
        bad((*M1, "errors"), "x", f"{P1}.messages[0].errors must be a list", "msg-errors"),
        bad(("entry", 1), None, "entry[1] must be an object", "second-entry"),
    ],
)
def test_malformed(path: tuple[Any, ...], new: Any, expected: str) -> None:
    doc = base_doc()
    doc["entry"].append({"id": "2", "changes": []})
    if path:
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if new is DROP:
            del parent[path[-1]]
        else:
            parent[path[-1]] = new
    else:
        doc = new
    parse_webhook(base_doc())  # the unmodified document is fine
    with pytest.raises(MalformedPayload) as info:
        parse_webhook(doc)
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (msg(text={"body": 5}), "messages[0].text.body must be a string"),
        (msg(text="hello"), "messages[0].text must be an object"),
        (msg(type_="location", location={"latitude": "1", "longitude": 2}), "location.latitude"),
        (msg(type_="location", location={"latitude": True, "longitude": 2}), "location.latitude"),
        (msg(type_="contacts", contacts={"name": "x"}), "messages[0].contacts must be a list"),
        (msg(type_="contacts", contacts=[{"name": {"formatted_name": 1}}]), "formatted_name"),
        (
            msg(
                type_="interactive",
                interactive={"type": "button_reply", "button_reply": {"title": 1}},
            ),
            "interactive.button_reply.title must be a string",
        ),
        (msg(type_="interactive", interactive={"type": 3}), "interactive.type must be a string"),
        (msg(type_="reaction", reaction={"emoji": ["x"]}), "reaction.emoji must be a string"),
        (msg(type_="button", button=[]), "messages[0].button must be an object"),
        (msg(type_="order", order={"text": {}}), "order.text must be a string"),
    ],
)
def test_malformed_text_fields(message: Any, expected: str) -> None:
    with pytest.raises(MalformedPayload, match=expected.replace(".", r"\.").replace("[", r"\[")):
        parse_webhook(single(message))


# -- property: any JSON value anywhere ------------------------------------------------

KEYS = sorted(
    {"object", "entry", "changes", "field", "value", "metadata", "phone_number_id", "contacts"}
    | {"profile", "name", "wa_id", "user_id", "messages", "statuses", "errors", "from", "id"}
    | {"from_user_id", "timestamp", "type", "text", "body", "image", "caption", "document"}
    | {"filename", "location", "latitude", "longitude", "address", "interactive", "button_reply"}
    | {"list_reply", "nfm_reply", "title", "button", "reaction", "emoji", "order", "system"}
)
TEXT = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=12),
    st.sampled_from([*KEYS, "whatsapp_business_account", "+", "", "1767225600", "9" * 400]),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(),  # NaN and infinities too: json.loads accepts them
    TEXT,
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=30,
)
DEEP = st.builds(nested, st.integers(min_value=0, max_value=3_000), JSON)
ANY_JSON = st.one_of(JSON, DEEP)


def check(doc: Any) -> None:
    try:
        parsed = parse_webhook(doc)
    except MalformedPayload:
        return
    assert isinstance(parsed, ParsedWebhook)
    for chat_id, m in parsed.messages:
        assert chat_id.startswith("wa:") and m.source == "whatsapp" and m.id
        assert m.text is None or isinstance(m.text, str)
        m.stored_json()  # whatever is accepted can be stored


def slots(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every position in a document, the root included."""
    found = [path]
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, child in items:
        found += slots(child, (*path, key))
    return found


BASES = [fixture_doc(n) for n in FIXTURE_NAMES]
SPLICE_POINTS = [(b, path) for b, doc in enumerate(BASES) for path in slots(doc)]
PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(ANY_JSON)
def test_any_json_at_top_level(doc: Any) -> None:
    check(doc)


@PROPERTY
@given(st.sampled_from(SPLICE_POINTS), st.one_of(st.none(), st.sampled_from(KEYS)), ANY_JSON)
def test_any_json_spliced_into_a_valid_payload(
    point: tuple[int, tuple[Any, ...]], new_key: str | None, new: Any
) -> None:
    """Replace the value at a position, or add a (likely meaningful) key to an object there."""
    b, path = point
    doc = copy.deepcopy(BASES[b])
    parent: Any = doc
    for key in path[:-1]:
        parent = parent[key]
    target = parent[path[-1]] if path else doc
    if new_key is not None and isinstance(target, dict):
        target[new_key] = new
    elif path:
        parent[path[-1]] = new
    else:
        doc = new
    check(doc)
