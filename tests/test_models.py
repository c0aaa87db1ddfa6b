"""service.models: the message model keeps its own rules (nesting depth)
wherever a message is made, not only at the HTTP door."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError
from redis.asyncio import Redis

from service import Batch, Message
from service.errors import InvalidMessage
from service.models import MAX_DATA_DEPTH, decode_item, read_json
from service.web.body import parse_json
from tests.helpers import running_engine, wait_until


def nested(depth: int) -> Any:
    node: Any = "leaf"
    for _ in range(depth):
        node = {"k": node}
    return node


def test_deep_data_is_refused_when_the_message_is_made() -> None:
    with pytest.raises(ValidationError, match="nested deeper than 32 levels") as info:
        Message(id="m1", data=nested(300))
    assert info.value.errors()[0]["loc"] == ("data",)


def test_deep_data_is_refused_when_assigned() -> None:
    message = Message(id="m1", data={"ok": True})
    with pytest.raises(ValidationError, match="nested deeper"):
        message.data = nested(MAX_DATA_DEPTH + 1)
    assert message.data == {"ok": True}


async def test_the_deepest_allowed_data_goes_through_engine_add(
    redis_url: str, redis_client: Redis
) -> None:
    """Engine.add with data nested MAX_DATA_DEPTH deep: stored, delivered, and the
    batch serialises for a forward. One level more cannot even be made."""
    bodies: list[str] = []

    async def handler(batch: Batch) -> None:
        bodies.append(batch.model_dump_json())

    deepest = nested(MAX_DATA_DEPTH)
    async with running_engine(redis_url, handler) as engine:
        with pytest.raises(ValidationError):
            await engine.add("deep", Message(id="too-deep", data=nested(MAX_DATA_DEPTH + 1)))
        assert await redis_client.keys("*deep*") == []  # nothing of it was stored
        result = await engine.add("deep", Message(id="deepest", data=deepest))
        assert result.accepted
        await wait_until(lambda: len(bodies) == 1, 5.0)
    (body,) = bodies
    [message] = json.loads(body)["messages"]
    assert message["id"] == "deepest" and message["data"] == deepest


def test_an_edit_changes_what_it_carries_and_keeps_the_rest() -> None:
    from service.models import Media

    photo = Message(
        id="m1",
        type="image",
        text="old caption",
        media=Media(id="media-1", mime_type="image/jpeg", caption="old caption"),
    )
    recaptioned = photo.with_edit(
        Message(
            id="e1",
            type="edit",
            text="new caption",
            sent_at=5.0,
            media=Media(caption="new caption"),
        )
    )
    assert recaptioned.text == "new caption" and recaptioned.edited_at == 5.0
    assert recaptioned.media == Media(id="media-1", mime_type="image/jpeg", caption="new caption")
    unreadable = recaptioned.with_edit(Message(id="e2", type="edit", sent_at=6.0))
    assert unreadable.text == "new caption" and unreadable.edited_at == 6.0
    assert [h.id for h in unreadable.history] == ["e1", "e2"]


@pytest.mark.parametrize(
    "body",
    [
        b'{"n": 12345678901234567890123, "m": 9223372036854775807}',  # integers stay integers
        b'{"s": "\\ud800 lone", "e": "\\u00e9"}',  # a lone surrogate escape
        '{"t": "utf-16"}'.encode("utf-16"),
        b'{"f": 1e400, "g": -0.0, "h": 1e-7}',
        b'[1, 2.5, "x", null, true, {"a": [{}]}]',
    ],
)
def test_read_json_reads_as_the_standard_parser(body: bytes) -> None:
    got, want = read_json(body), json.loads(body)
    assert repr(got) == repr(want)  # same values and the same types (int stays int)


def test_stored_json_round_trips_what_orjson_cannot_write() -> None:
    message = Message(id="m1", text="a", data={"big": 2**70, "odd": "\ud800"})
    back = decode_item(b"1\t" + message.stored_json())
    assert back.data == {"big": 2**70, "odd": "\ufffd"}


def test_numbers_json_cannot_carry_are_refused() -> None:
    # orjson would write them as null, json as the non-JSON Infinity/NaN.
    for bad in (float("inf"), float("-inf"), float("nan")):
        with pytest.raises(ValueError, match="NaN or an infinite"):
            Message(id="m1", data={"x": [1, {"y": bad}]}).stored_json()
        with pytest.raises(ValidationError):
            Message(id="m1", sent_at=bad)
    with pytest.raises(ValueError, match="beyond the range"):
        parse_json(b'{"x": 1e400}')
    assert parse_json(b'{"x": 1.5e300, "y": -0.0}') == {"x": 1.5e300, "y": -0.0}


async def test_a_message_json_cannot_carry_is_refused_alone(
    redis_url: str, redis_client: Redis
) -> None:
    async with running_engine(redis_url, lambda b: None) as engine:
        got = await engine.batcher.add_each(
            [("c", Message(id="bad", data={"x": float("inf")})), ("c", Message(id="ok", text="a"))]
        )
    assert isinstance(got[0], InvalidMessage) and "infinite" in str(got[0])
    assert not isinstance(got[1], Exception) and got[1].accepted


def test_a_negative_zero_time_stays_a_float() -> None:
    message = Message(id="m1", text="a", sent_at=-0.0)
    back = decode_item(b"1\t" + message.stored_json())
    assert repr(back.sent_at) == "-0.0"
    assert repr(decode_item(b"1\t" + Message(id="m", sent_at=5.0).stored_json()).sent_at) == "5.0"
