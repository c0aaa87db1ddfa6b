"""service.packing: the stored form keeps each value once and gives back the
message that came in, for every provider's fixtures and for odd documents."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.models import Message, decode_item
from service.packing import PACKED, pack, unpack
from service.providers import evolution, telegram, waha, whatsapp
from tests.helpers import FIXTURES


def stored_and_back(message: Message) -> tuple[bytes, Message]:
    raw = message.stored_json()
    return raw, decode_item(b"1767225600123\t" + raw)


def same(a: Message, b: Message) -> bool:
    # The channel is stored apart, once per batch (tests/store/test_channels.py).
    keep = {"received_at"}
    return a.model_dump(exclude=keep) == b.model_dump(exclude=keep)


def fixture_messages() -> list[tuple[str, Message]]:
    parsers = {
        "whatsapp": whatsapp.parse_webhook,
        "evolution": evolution.parse_webhook,
        "telegram": telegram.parse_update,
        "waha": waha.parse_event,
    }
    out = []
    for provider, parse in parsers.items():
        for path in sorted((FIXTURES / provider).glob("*.json")):
            doc = json.loads(path.read_text())
            for _, message in parse(doc).messages:  # type: ignore[operator]
                out.append((f"{provider}/{path.name}", message))
    return out


FIXTURE_MESSAGES = fixture_messages()


def test_every_provider_has_fixture_messages() -> None:
    assert {name.split("/")[0] for name, _ in FIXTURE_MESSAGES} == {
        "whatsapp",
        "evolution",
        "telegram",
        "waha",
    }


@pytest.mark.parametrize(("name", "message"), FIXTURE_MESSAGES, ids=lambda v: str(v)[:40])
def test_fixture_messages_come_back_as_they_came_in(name: str, message: Message) -> None:
    _, back = stored_and_back(message)
    assert same(back, message), name
    assert back.data == message.data


def test_a_whatsapp_text_keeps_its_text_id_sender_and_time_once() -> None:
    doc = json.loads((FIXTURES / "whatsapp" / "text_single.json").read_text())
    _, message = whatsapp.parse_webhook(doc).messages[0]
    raw, back = stored_and_back(message)
    text = raw.decode()
    assert message.text and message.sender and message.sender.phone
    assert text.count(json.dumps(message.text)) == 1
    assert text.count(message.id) == 1
    assert text.count(message.sender.id) == 1
    assert '"timestamp"' not in text and '"data"' not in text
    assert back.data == message.data and back.sender == message.sender


def packed(doc: dict[str, Any]) -> dict[str, Any]:
    return pack(json.loads(json.dumps(doc)))


def test_values_that_differ_in_form_are_kept() -> None:
    base = {"id": "w1", "type": "text", "source": "whatsapp", "text": "hi"}
    cases = [
        ({"sent_at": 1767225601.0}, {"timestamp": "01767225601"}),  # not the same digits
        ({"sent_at": 1767225601.5}, {"timestamp": "1767225601"}),  # not a whole second
        ({"sender": {"id": "1"}}, {"from": 1}),  # a number, not the id's text
        ({}, {"id": "w2"}),  # another id
        ({}, {"text": {"body": "hi", "preview_url": False}}),  # more than the body
    ]
    for top, data in cases:
        doc = base | top | {"data": data}
        got = packed(doc)
        assert unpack(got) == doc
    more = packed(base | {"data": {"text": {"body": "hi", "preview_url": False}}})
    assert more["d"] == {"text": {"preview_url": False}}  # "d": data's stored name


def test_other_sources_and_plain_messages_are_stored_as_they_are() -> None:
    doc = {"id": "1", "type": "text", "source": "telegram", "text": "a", "data": {"id": "1"}}
    assert PACKED not in packed(doc) and unpack(packed(doc)) == doc
    plain = packed({"id": "1", "type": "text", "source": "api", "text": "a"})
    assert plain == {"id": "1", "x": "a"}  # short names, defaults left out, id first
    assert next(iter(packed(doc))) == "id"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
small = st.sampled_from(["1", "w1", "hi", 1, 1.0, True, None, "1767225601"])


@given(
    data=st.dictionaries(
        st.sampled_from(["id", "from", "type", "text", "timestamp", "other"]),
        small | st.fixed_dictionaries({"body": small}) | json_values,
    )
    | json_values,
    top=st.fixed_dictionaries(
        {},
        optional={
            "text": small,
            "type": small,
            "sent_at": st.sampled_from([1767225601.0, 1767225601.5, 1, "x"]),
            "sender": st.fixed_dictionaries({"id": small}, optional={"phone": small}),
        },
    ),
)
def test_pack_then_unpack_is_the_document(data: Any, top: dict[str, Any]) -> None:
    doc = {"id": "w1", "source": "whatsapp", **top, "data": data}
    assert unpack(packed(doc)) == {"type": "text"} | json.loads(json.dumps(doc))
