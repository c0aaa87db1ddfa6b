"""WhatsApp Cloud API payloads: signature check and parsing (service.providers.whatsapp).

The general fixtures (``tests/fixtures/whatsapp/README.md``), edge cases and odd
payloads; one test per message type is in ``test_whatsapp_types.py``.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from types import EllipsisType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.models import Message
from service.packing import unpack
from service.providers.whatsapp import MAX_DEPTH, ParsedWebhook, parse_webhook, signature_valid
from tests.helpers import FIXTURES as FIXTURES_ROOT

SECRET = b"test-app-secret"
SIGNED_UNICODE_HEADER = "sha256=593b8daa3361a5b5112cae45ef7b791c9fc31dab1611b1dc9f38141f0b676ba1"
PHONE_ID = "127350894416205"
ANA, BRUNO = "15550136724", "15550158390"
CHAT = f"wa:{PHONE_ID}:"
OBJECT = "whatsapp_business_account"
NOW = 1767230000.5  # the receive time, standing in for an unreadable timestamp

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
ALL_FIXTURES = sorted(p.stem for p in FIXTURES.glob("*.json"))


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture_doc(name: str) -> Any:
    return json.loads(fixture_bytes(f"{name}.json"))


# -- hand-built payloads ---------------------------------------------------------


def msg(mid: str = "wamid.A", frm: Any = ANA, type_: str = "text", **extra: Any) -> Any:
    doc: dict[str, Any] = {"id": mid, "timestamp": "1767225600", "type": type_}
    if frm is not None:
        doc["from"] = frm
    if type_ == "text" and "text" not in extra:
        doc["text"] = {"body": f"body of {mid}"}
    return doc | extra


def typed(type_: str, body: Any) -> Any:
    return msg(type_=type_, **{type_: body})


def value(*messages: Any, phone_id: str = PHONE_ID, **extra: Any) -> Any:
    meta = {"display_phone_number": "15550104477", "phone_number_id": phone_id}
    listed = {"messages": list(messages)} if messages else {}
    return {"messaging_product": "whatsapp", "metadata": meta} | listed | extra


def change(val: Any, field: str = "messages") -> Any:
    return {"field": field, "value": val}


def payload(*entries: list[Any]) -> Any:  # one entry per argument, each a list of changes
    return {
        "object": OBJECT,
        "entry": [{"id": f"10000000000000{i}", "changes": chs} for i, chs in enumerate(entries)],
    }


def parse(doc: Any) -> ParsedWebhook:
    return parse_webhook(doc, now_s=NOW)


def one(message: Any, **value_extra: Any) -> tuple[str, Message]:
    parsed = parse(payload([change(value(message, **value_extra))]))
    assert (parsed.rejected, len(parsed.messages)) == ([], 1)
    return parsed.messages[0]


def ids(parsed: ParsedWebhook) -> list[str]:
    return [m.id for _, m in parsed.messages]


def who(m: Message) -> tuple[str | None, ...]:
    assert m.sender is not None
    return (m.sender.id, m.sender.name, m.sender.phone, m.sender.user_id)


def nested(depth: int, leaf: Any = "x") -> Any:
    node = leaf
    for i in range(depth):
        node = [node] if i % 2 else {"k": node}
    return node


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
    doc = fixture_doc("text_single")
    parsed = parse(doc)
    assert (parsed.statuses, parsed.errors, parsed.rejected, parsed.skipped) == (0, [], [], 0)
    [(chat_id, m)] = parsed.messages
    assert (chat_id, m.type, m.source, m.sent_at) == (CHAT + ANA, "text", "whatsapp", 1767225600)
    assert m.id == "wamid.HBgLMTU1NTAxMzY3MjQVAgASGBQzRUIwOTgyMjE2M0FGQTNCN0ZBMAA="
    assert m.text == "good morning, is the shop open today?"
    assert (m.received_at, m.warnings, who(m)) == (None, [], (ANA, "Ana Costa", ANA, None))
    assert m.data == doc["entry"][0]["changes"][0]["value"]["messages"][0]  # no profile_name


def test_signed_unicode_body_parses() -> None:
    [(_, m)] = parse(json.loads(fixture_bytes("signed_unicode.body"))).messages
    assert m.text == "Bom dia! Quero mudar a entrega para s\u00e1bado \U0001f69a \u2014 Bel\u00e9m"


def test_multi_sender_mixed() -> None:
    doc = fixture_doc("multi_sender_mixed")
    # The contacts are listed Bruno first, the messages start with Ana: pairing by
    # index would swap the names.
    assert [c["wa_id"] for c in doc["entry"][0]["changes"][0]["value"]["contacts"]] == [BRUNO, ANA]
    parsed = parse(doc)
    assert (parsed.rejected, parsed.errors) == ([], [])
    assert [(c, m.type, m.text, who(m)[1], m.sent_at) for c, m in parsed.messages] == [
        (CHAT + ANA, "text", "do you deliver on saturdays?", "Ana Costa", 1767225661),
        (CHAT + BRUNO, "image", "is this one still in stock?", "Bruno Lima", 1767225662),
        (CHAT + BRUNO, "interactive", "Reserve it", "Bruno Lima", 1767225663),
    ]


def test_statuses_only() -> None:
    parsed = parse(fixture_doc("statuses_only"))
    # A failed receipt's own errors[] belong to the receipt: not reported in `errors`.
    assert parsed == ParsedWebhook(messages=[], statuses=3, errors=[], rejected=[], skipped=0)


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_fixtures_not_mutated_and_storable(name: str) -> None:
    doc = fixture_doc(name)
    before = copy.deepcopy(doc)
    parsed = parse(doc)
    assert doc == before
    for _, m in parsed.messages:
        assert unpack(json.loads(m.stored_json()))["data"] == m.data  # kept once, whole


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
    parsed = parse(doc)
    assert [(c, m.id) for c, m in parsed.messages] == [
        (CHAT + ANA, "wamid.1"),
        (CHAT + BRUNO, "wamid.2"),
        (f"wa:300:{ANA}", "wamid.3"),
        (CHAT + ANA, "wamid.4"),
        (CHAT + BRUNO, "wamid.5"),
    ]
    assert (parsed.statuses, parsed.errors, parsed.rejected, parsed.skipped) == (1, [], [], 1)


def test_empty_envelope_and_other_fields() -> None:
    for doc in (payload(), payload([]), payload([change(value())])):
        assert parse(doc) == ParsedWebhook()
    other = payload([change("not an object", field="account_alerts"), change(None, field="flows")])
    assert parse(other) == ParsedWebhook(skipped=2)


def test_duplicate_wamids_are_kept_for_the_batcher_to_dedupe() -> None:
    parsed = parse(payload([change(value(msg("wamid.1"), msg("wamid.1")))]))
    assert ids(parsed) == ["wamid.1", "wamid.1"]


CLEO = [{"wa_id": "", "user_id": "US.abc123", "profile": {"name": "Cleo"}}]


@pytest.mark.parametrize(
    ("message", "contacts", "sender"),
    [
        (msg(frm="", from_user_id="US.abc123"), CLEO, ("US.abc123", "Cleo", None, "US.abc123")),
        (msg(from_user_id="US.abc123"), None, (ANA, None, ANA, "US.abc123")),  # from wins
        (msg(frm="+" + ANA), [{"wa_id": ANA, "profile": {"name": "Ana"}}], (ANA, "Ana", ANA, None)),
        # the profile name only when known
        (msg(), [{"wa_id": BRUNO, "profile": {"name": "Bruno"}}], (ANA, None, ANA, None)),
        (msg(), [{"wa_id": ANA}], (ANA, None, ANA, None)),
        (msg(), [{"wa_id": ANA, "profile": {}}], (ANA, None, ANA, None)),
        (msg(), [{"wa_id": ANA, "profile": {"name": ""}}], (ANA, None, ANA, None)),
        # numbers sent for strings are kept as text
        (msg(frm=int(ANA), from_user_id=7), None, (ANA, None, ANA, "7")),
        (msg(), [{"wa_id": int(ANA), "profile": {"name": 5}}], (ANA, "5", ANA, None)),
    ],
)
def test_sender(message: Any, contacts: Any, sender: tuple[str | None, ...]) -> None:
    before = copy.deepcopy(message)
    chat_id, m = one(message, contacts=contacts)
    assert (chat_id, who(m), m.warnings) == (CHAT + str(sender[0]), sender, [])
    assert m.data == before  # the provider's object stays as received ("+", numbers)


def test_errors_of_the_message_and_of_the_value() -> None:
    error = {"code": 131051, "title": "Message type unknown"}
    unsupported = msg(type_="unsupported", unsupported={"type": "poll"}, errors=[error])
    errors = [{"code": 130429}, {}, "not an error", {"code": True, "title": "", "error_data": 1}]
    parsed = parse(payload([change(value(unsupported, errors=errors))]))
    [(_, m)] = parsed.messages
    assert (m.type, m.text, m.errors) == ("unsupported", None, [error])
    # an error without readable fields is still reported; one that is not an object is not
    assert [e.raw for e in parsed.errors] == [errors[0], errors[1], errors[3]]
    assert {(e.title, e.message, e.details) for e in parsed.errors} == {(None, None, None)}
    assert [e.code for e in parsed.errors] == [130429, None, None]


@pytest.mark.parametrize(
    ("message", "text", "warning"),
    [  # what the per-type fixtures (test_whatsapp_types.py) do not show
        (msg(type_="poll_vote", poll_vote={"option": "A"}), None, None),  # delivered, no text
        (typed("text", {"body": ""}), None, None),
        (typed("text", {"body": 5}), "5", None),  # a number sent for a string: kept as text
        (typed("text", {"body": ["hello"]}), None, "text.body"),
        (typed("document", {"filename": "a.pdf", "caption": ""}), "a.pdf", None),
        (typed("location", {"latitude": 38.7223}), None, None),
        (typed("location", {"latitude": "1.5", "longitude": 2}), "1.5,2", None),
        (typed("location", {"latitude": True, "longitude": 2}), None, "location.latitude"),
        (typed("contacts", [{"name": {"first_name": "Bo", "last_name": "S"}}, {}]), "Bo S", None),
        (typed("contacts", ["x", {"name": {"formatted_name": "B"}}]), "B", "contacts[0]"),
        (typed("contacts", {"name": "x"}), None, "contacts"),
        (typed("interactive", {"list_reply": {"title": "Two"}}), "Two", None),
        (typed("interactive", {"type": "call_permission_reply"}), None, None),
        (typed("button", {"payload": "STOP"}), "STOP", None),
        (typed("reaction", {"message_id": "wamid.Z", "emoji": ["x"]}), None, "reaction.emoji"),
        (typed("order", {"product_items": [{"quantity": 2}, "x"]}), "order: 2 x ?", None),
        (typed("system", {"type": "customer_identity_changed"}), "customer_identity_changed", None),
        (typed("edit", {"original_message_id": "wamid.Z", "message": "new"}), None, "edit.message"),
    ],
    ids=lambda v: v["type"] if isinstance(v, dict) else None,
)
def test_content(message: Any, text: str | None, warning: str | None) -> None:
    parsed = parse(payload([change(value(message, msg("wamid.2")))]))
    assert (ids(parsed), parsed.rejected) == ([message["id"], "wamid.2"], [])
    [(_, m), (_, other)] = parsed.messages
    assert (m.type, m.text, m.data, other.warnings) == (message["type"], text, message, [])
    assert [w.split(" ")[0] for w in m.warnings] == ([warning] if warning else [])


# -- odd documents: one part read, warned about, or lost alone ---------------------

DROP = object()
E0, E1 = ("entry", 0), ("entry", 1)
C1 = (*E0, "changes", 1)
V1 = (*C1, "value")
M1 = (*V1, "messages", 0)  # wamid.2, an image with a caption
WHERE = {"wamid.1": (*E0, "changes", 0), "wamid.2": M1, "wamid.3": E1}


BASE = payload(  # three messages: two changes in the first entry, one in the second
    [change(value(msg("wamid.1"))), change(value(typed("image", {"caption": "c"})))],
    [change(value(msg("wamid.3", BRUNO)))],
)
BASE["entry"][0]["changes"][1]["value"]["messages"][0]["id"] = "wamid.2"


def spliced(path: tuple[Any, ...], new: Any) -> Any:
    """The base document with ``path`` set to ``new`` (or dropped)."""
    doc = copy.deepcopy(BASE)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if new is DROP:
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return doc


def at(doc: Any, path: tuple[Any, ...] | str) -> Any:
    """The node at ``path`` (a key tuple or a Rejected.path); a missing key is None."""
    found = re.findall(r"(\w+)|\[(\d+)\]", path) if isinstance(path, str) else ()
    node = doc
    for key in path if isinstance(path, tuple) else [int(i) if i else k for k, i in found]:
        node = node.get(key) if isinstance(node, dict) else node[key]
    return node


BAD_TIMESTAMPS = [DROP, None, "soon", "1.5", " 17", "\u0661\u0662", "9" * 400, "9" * 5000]
BAD_TIMESTAMPS += [True, 1.5, -1, 10**12, [1767225600], {}]
ODD_CONTACTS: list[Any] = [{"wa_id": ANA}, [1, None], [{"wa_id": ANA, "profile": 1}]]
ODD_CONTACTS += [[{"wa_id": ANA, "profile": {"name": ["A"]}}]]
GOOD_TIMESTAMPS = {"1767225600": 1767225600.0, "0": 0.0, "007": 7.0, 999999999999: 999999999999.0}


@pytest.mark.parametrize(
    ("path", "new", "warning", "expect"),
    [
        *(((*M1, "timestamp"), t, "timestamp", {"sent_at": NOW}) for t in BAD_TIMESTAMPS),
        *(((*M1, "timestamp"), t, None, {"sent_at": s}) for t, s in GOOD_TIMESTAMPS.items()),
        ((*M1, "type"), ["image"], "type", {"type": "image", "text": "c"}),
        ((*M1, "type"), DROP, "type", {"type": "image", "text": "c"}),
        ((*M1, "errors"), "x", "errors", {"errors": []}),
        ((*M1, "context"), "wamid.0", "context", {"reply_to": None}),
        ((*M1, "group_id"), ["g"], "group_id", {"chat": CHAT + ANA}),
        ((*M1, "id"), 12, None, {"id": "12"}),
        ((*M1, "context"), nested(MAX_DEPTH - 1), None, {"reply_to": None}),  # deepest kept
        ((*V1, "metadata", "phone_number_id"), 2, None, {"chat": f"wa:2:{ANA}"}),
        ((*V1, "statuses"), "read", None, {"statuses": 0}),
        ((*V1, "statuses"), ["read", {}], None, {"statuses": 2}),
        ((*V1, "errors"), {"code": 1}, None, {"value_errors": []}),
        ((*V1, "errors"), "x", None, {"value_errors": []}),
        # JSON null is an absent key
        *(((*M1, k), None, None, {}) for k in ("context", "referral", "errors", "group_id")),
        *(((*V1, k), None, None, {}) for k in ("contacts", "statuses", "errors")),
        ((*M1, "image", "caption"), None, None, {"text": None}),
        # odd contacts (not the message's own fields): the sender is kept, unnamed
        *(((*V1, "contacts"), c, ..., {}) for c in ODD_CONTACTS),
    ],
)
def test_odd_field_is_read_or_a_warning(
    path: tuple[Any, ...], new: Any, warning: str | EllipsisType | None, expect: dict[str, Any]
) -> None:
    doc = spliced(path, new)
    parsed = parse(doc)
    assert (len(parsed.messages), parsed.rejected) == (3, [])
    assert ids(parsed)[::2] == ["wamid.1", "wamid.3"]  # the others, whatever wamid.2 holds
    chat_id, m = parsed.messages[1]
    assert who(m)[:2] == (ANA, None) and m.data == at(doc, M1)
    if warning is None:
        assert m.warnings == []
    elif isinstance(warning, str):  # ...: not checked
        assert any(w.startswith(warning + " ") for w in m.warnings), m.warnings
    seen = {"chat": chat_id, "statuses": parsed.statuses, "value_errors": parsed.errors}
    assert {k: seen[k] if k in seen else getattr(m, k) for k in expect} == expect


@pytest.mark.parametrize(
    ("path", "new", "gone", "outcome"),
    [
        (("entry",), {}, ("entry",), "rejected"),
        (E0, "x", E0, "rejected"),
        (E1, None, E1, "rejected"),
        ((*E0, "changes"), "x", (*E0, "changes"), "rejected"),
        (C1, [], C1, "rejected"),
        *((V1, v, V1, "rejected") for v in (DROP, "x")),
        ((*V1, "messages"), {}, (*V1, "messages"), "rejected"),
        (M1, "wamid.2", M1, "rejected"),
        *(((*M1, "id"), v, M1, "rejected") for v in (DROP, "", True, [2])),
        *(((*M1, "from"), v, M1, "rejected") for v in (DROP, "", "+", [ANA])),
        *(((*V1, "metadata"), v, M1, "rejected") for v in (DROP, "x")),
        *(((*V1, "metadata", "phone_number_id"), v, M1, "rejected") for v in ("", {"id": 1})),
        *(((*M1, "context"), nested(d), M1, "rejected") for d in (MAX_DEPTH, 10_000)),
        (("object",), DROP, (), "skipped"),  # another product's webhook on the same URL
        (("object",), "page", (), "skipped"),
        ((*C1, "field"), DROP, C1, "skipped"),
        ((*C1, "field"), "statuses", C1, "skipped"),
        *((("entry",), v, ("entry",), "absent") for v in (DROP, None)),
        ((*E0, "changes"), None, E0, "absent"),
    ],
)
def test_odd_part_is_lost_alone(
    path: tuple[Any, ...], new: Any, gone: tuple[Any, ...], outcome: str
) -> None:
    doc = spliced(path, new)
    parsed = parse(doc)
    assert ids(parsed) == [i for i, where in WHERE.items() if where[: len(gone)] != gone]
    assert (parsed.errors, parsed.skipped) == ([], int(outcome == "skipped"))
    if outcome == "rejected":
        [rejected] = parsed.rejected
        dotted = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in gone)
        assert (rejected.path, rejected.raw) == (dotted.lstrip("."), at(doc, gone))
        assert rejected.reason
    else:
        assert parsed.rejected == []


# -- what the parser still gets wrong (the contract, expected to fail for now) ---------


@pytest.mark.parametrize("errors", [5, 1.5, True])
def test_scalar_value_errors_do_not_lose_the_post(errors: Any) -> None:
    parsed = parse(spliced((*V1, "errors"), errors))
    assert (ids(parsed), parsed.errors) == ([*WHERE], [])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (typed("location", {"latitude": 10**400, "longitude": 2}), "location.latitude"),
        (typed("order", {"product_items": [{"quantity": -(10**309)}]}), "quantity"),
    ],
)
def test_out_of_range_numbers_are_warnings(body: Any, field: str) -> None:
    parsed = parse(payload([change(value(body, msg("wamid.2")))]))
    assert ids(parsed) == [body["id"], "wamid.2"]
    assert any(field in w for w in parsed.messages[0][1].warnings)


def test_reaction_without_a_target_is_a_warning() -> None:
    _, m = one(typed("reaction", {"emoji": ["x"]}))
    assert m.reaction is None and any(w.startswith("reaction") for w in m.warnings)


# -- property: any JSON anywhere ----------------------------------------------------

KEYS = sorted(
    {"object", "entry", "changes", "field", "value", "metadata", "phone_number_id", "contacts"}
    | {"profile", "name", "wa_id", "user_id", "messages", "statuses", "errors", "from", "id"}
    | {"from_user_id", "timestamp", "type", "text", "body", "image", "caption", "document"}
    | {"filename", "location", "latitude", "longitude", "address", "interactive", "button_reply"}
    | {"list_reply", "nfm_reply", "title", "button", "reaction", "emoji", "order", "system"}
    | {"group_id", "context", "edit", "message", "message_id", "product_items", "quantity"}
)
TEXT = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=12),
    st.sampled_from([*KEYS, OBJECT, "+", "", "1767225600", "9" * 400]),
)
BIG = st.integers(min_value=-(10**400), max_value=10**400)
# NaN and infinities too: json.loads accepts them
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), BIG, st.floats(), TEXT)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=30,
)
DEEP = st.builds(nested, st.integers(min_value=0, max_value=3_000), JSON)
ANY_JSON = st.one_of(JSON, DEEP)
WEBHOOK = st.builds(
    lambda d, e: d | {"object": OBJECT, "entry": e}, st.dictionaries(TEXT, JSON), ANY_JSON
)


def children(node: Any) -> list[tuple[Any, Any]]:
    if isinstance(node, dict):
        return list(node.items())
    return list(enumerate(node)) if isinstance(node, list) else []


def message_lists(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], list[Any]]]:
    """(path, value, messages) of every value the parser is to read messages from."""
    if doc.get("object") != OBJECT:
        return
    for i, entry in children(doc.get("entry")):
        for j, ch in children(entry.get("changes") if isinstance(entry, dict) else None):
            val = ch.get("value") if isinstance(ch, dict) and ch.get("field") == "messages" else 0
            if isinstance(val, dict):
                ms = val.get("messages")
                yield f"entry[{i}].changes[{j}].value", val, ms if isinstance(ms, list) else []


def check(doc: dict[str, Any]) -> None:
    """parse_webhook does not raise, and every message is stored or rejected, once."""
    parsed = parse(doc)
    for chat_id, m in parsed.messages:
        assert chat_id.startswith("wa:") and m.source == "whatsapp" and m.id and who(m)[0]
        assert (m.text is None or isinstance(m.text, str)) and isinstance(m.sent_at, float)
        m.stored_json()  # whatever is accepted can be stored
    for r in parsed.rejected:
        assert r.reason and r.raw is at(doc, r.path)
    rejected, kept = Counter(r.path for r in parsed.rejected), [m.data for _, m in parsed.messages]
    found = 0
    for path, _, messages in message_lists(doc):
        for i, raw in enumerate(messages):
            stored = sum(d is raw for d in kept)
            assert stored + rejected[f"{path}.messages[{i}]"] == 1, (path, i)
            found += stored
    assert found == len(kept)  # and nothing stored that is not in the payload


def slots(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every position in a document, the root included."""
    return [path, *(p for key, child in children(node) for p in slots(child, (*path, key)))]


BASES = [fixture_doc(n) for n in ALL_FIXTURES]
SPLICE_POINTS = [(b, path) for b, doc in enumerate(BASES) for path in slots(doc)]
PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(st.one_of(st.dictionaries(TEXT, ANY_JSON, max_size=4), WEBHOOK))
def test_any_json_object_at_top_level(doc: dict[str, Any]) -> None:
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
    elif isinstance(new, dict):
        doc = new
    check(doc)
