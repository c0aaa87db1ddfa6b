"""The data the service hands around: messages, batches, append results."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from service.packing import pack, unpack

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")

# Deeper JSON in a message's ``data`` is refused when the message is made: it
# could be stored, but not serialised again when the batch is delivered.
MAX_DATA_DEPTH = 32


def nesting_exceeds(node: object, limit: int = MAX_DATA_DEPTH) -> bool:
    """Whether lists/objects nest deeper than ``limit`` (no recursion)."""
    stack = [(node, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list) and item:
            if depth >= limit:
                return True
            stack.extend(
                (c, depth + 1) for c in (item.values() if isinstance(item, dict) else item)
            )
    return False


NON_FINITE = "the message holds NaN or an infinite number, which JSON cannot carry"


def non_finite(node: object) -> bool:
    """Whether a float in ``node`` is NaN or infinite (no recursion)."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _shallow_enough(value: Any) -> Any:
    if nesting_exceeds(value):
        raise ValueError(f"nested deeper than {MAX_DATA_DEPTH} levels")
    return value


# A message's ``data``: any JSON value nested at most MAX_DATA_DEPTH levels.
Data = Annotated[Any, AfterValidator(_shallow_enough)]

Reason = Literal["idle", "max_wait", "max_messages", "max_bytes", "recovered", "manual"]


class Sender(BaseModel):
    """Who wrote a message. ``id`` is the key the chat is batched by."""

    id: str
    name: str | None = None  # profile name
    phone: str | None = None
    user_id: str | None = None  # a provider's own user id (WhatsApp: business-scoped)
    username: str | None = None
    country_code: str | None = None


class Media(BaseModel):
    """An attachment, as the provider describes it (fetch it with the provider's API)."""

    id: str | None = None
    mime_type: str | None = None
    sha256: str | None = None
    caption: str | None = None
    filename: str | None = None
    url: str | None = None
    voice: bool | None = None
    animated: bool | None = None


class Reaction(BaseModel):
    """A reaction to an earlier message; ``emoji`` is None when it is removed."""

    message_id: str
    emoji: str | None = None


class Message(BaseModel):
    """One chat message. ``received_at`` is stamped by Redis when it is stored.

    ``data`` is the provider's original object, checked when the message is
    made and when it is assigned. The fields between ``text`` and ``data``
    are the provider's fields, read once so that a bot need not parse them.
    """

    model_config = ConfigDict(validate_assignment=True, allow_inf_nan=False)

    id: str
    type: str = "text"
    text: str | None = None
    sent_at: float | None = None
    received_at: float | None = None
    source: str = "api"
    sender: Sender | None = None
    media: Media | None = None
    reply_to: str | None = None  # the id of the message this one answers
    forwarded: bool = False
    referral: dict[str, Any] | None = None  # the ad or post the user came from
    reaction: Reaction | None = None
    target_id: str | None = None  # the message an edit or a revoke is about
    edited_at: float | None = None  # set when an edit was applied in the open batch
    history: list[Message] = Field(default_factory=list)  # the edits applied, oldest first
    errors: list[dict[str, Any]] = Field(default_factory=list)  # the provider's, as given
    warnings: list[str] = Field(default_factory=list)  # fields that could not be read
    data: Data = Field(default_factory=dict)
    # Where the message came in (provider account, business number): lifted
    # onto the batch, not repeated in each delivered message.
    channel: dict[str, str] | None = Field(default=None, exclude=True)

    def stored_json(self) -> bytes:
        """The JSON kept in Redis (``received_at`` travels beside it), with
        each value once (``service.packing``). The channel is not in it: the
        append script adds it when the chat's open batch does not have it yet
        (``store/lua/items.lua``; ``channel_json``).

        ``id`` comes first: the append script finds a message by that prefix.
        """
        doc = self.model_dump(
            exclude_defaults=True, exclude={"id", "received_at", "channel", "history"}
        )
        if non_finite(doc):  # orjson would write null, json the non-JSON NaN
            raise ValueError(NON_FINITE)
        doc = pack({"id": self.id, "type": self.type, "source": self.source} | doc)
        try:
            return orjson.dumps(doc)
        except TypeError:
            pass  # lone surrogates, integers beyond 64 bits: the standard encoder says
        text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            # Lone surrogates (from "\udXXX" escapes in the input) are not
            # text: they could be stored, but never forwarded as UTF-8 JSON.
            return _LONE_SURROGATE.sub("\ufffd", text).encode("utf-8")

    def with_edit(self, edit: Message) -> Message:
        """This message as the ``edit`` (type "edit") left it: same id and place."""
        update: dict[str, Any] = {
            "edited_at": edit.sent_at if edit.sent_at is not None else edit.received_at,
            "history": [*self.history, edit],
        }
        if edit.text is not None:  # an edit with nothing readable changes no content
            update["text"] = edit.text
        if edit.media is not None:  # a new caption: the rest of the media stays
            old = self.media.model_dump(exclude_none=True) if self.media else {}
            update["media"] = Media(**old | edit.media.model_dump(exclude_none=True))
        return self.model_copy(update=update)


def channel_json(channel: dict[str, str] | None) -> bytes:
    """A message's channel as the append script stores it (b"" for none).

    The scripts find where a stored channel ends by its only ``}``: one
    inside a key or a value is written ``\\u007d``, the same JSON."""
    if not channel:
        return b""
    raw = orjson.dumps(channel)
    return raw[:-1].replace(b"}", b"\\u007d") + b"}"


def message_prefix(message_id: str) -> bytes:
    """How the stored JSON of message ``message_id`` begins (see ``stored_json``)."""
    return b'{"id":' + json.dumps(message_id, ensure_ascii=False).encode("utf-8", "replace") + b","


# 19 digits in a row (every digit made a "0", then one substring search: a
# tenth of the cost of a regular expression): perhaps an integer that orjson
# would read as a float.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGITS = b"0" * 19


def read_json(
    body: bytes,
    parse_constant: Callable[[str], Any] | None = None,
    parse_float: Callable[[str], Any] | None = None,
) -> Any:
    """``json.loads``, done by orjson where the two read alike: orjson refuses
    lone surrogate escapes, UTF-16 and numbers beyond a double, which the
    standard parser then reads, and would read an integer of 20 digits as a
    float, so a document with a run of 19 digits goes to the standard parser
    at once."""
    if _LONG_DIGITS not in body.translate(_DIGITS_TO_ZERO):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    return json.loads(body, parse_constant=parse_constant, parse_float=parse_float)


def decode_item(raw: bytes) -> Message:
    """Inverse of the append script's ``"<received_ms>\t<json>"``.

    An item may go on with ``"\t<received_ms>\t<json>"`` pairs: the edits the
    append script applied to the message while its batch was open.
    """
    parts = raw.split(b"\t")
    message = _decode(parts[0], parts[1])
    for i in range(2, len(parts) - 1, 2):
        message = message.with_edit(_decode(parts[i], parts[i + 1]))
    return message


def _decode(received_ms: bytes, body: bytes) -> Message:
    doc = unpack(read_json(body))
    doc["received_at"] = int(received_ms) / 1000
    if doc.keys() <= _PLAIN_KEYS:
        # Written by this service from a validated Message: no need to validate
        # again. Every defaulted collection is passed in: model_construct would
        # otherwise inspect each default factory's signature, per message.
        return Message.model_construct(
            **{"data": {}, "history": [], "errors": [], "warnings": []} | doc
        )
    return Message.model_validate(doc)


_PLAIN_KEYS = frozenset(("id", "type", "text", "sent_at", "received_at", "source", "data"))


def order_messages(items: list[bytes]) -> list[Message]:
    """Messages by ``sent_at`` (when the sender gave one), then arrival; each
    with its channel (stored only where it changes, see ``channel_json``)."""
    messages = [decode_item(raw) for raw in items]
    current: dict[str, str] | None = None
    for m in messages:  # an item without a channel has the one stored before it
        if m.channel:
            current = m.channel
        elif current:
            m.channel = current
    keyed = sorted(
        enumerate(messages),
        key=lambda im: (
            im[1].sent_at if im[1].sent_at is not None else im[1].received_at or 0.0,
            im[0],
        ),
    )
    return [m for _, m in keyed]


def channel_of(messages: list[Message]) -> dict[str, str] | None:
    """The channel a batch came in through: its latest message's."""
    return next((m.channel for m in reversed(messages) if m.channel), None)


class Batch(BaseModel):
    """A closed batch, as delivered to a handler or forwarded over HTTP."""

    batch_id: str
    chat_id: str
    seq: int
    attempt: int
    reason: Reason
    opened_at: float
    closed_at: float
    messages: list[Message]
    # The provider account the chat is with (WhatsApp: phone_number_id,
    # display_phone_number, waba_id); None for the generic endpoint.
    channel: dict[str, str] | None = None
    # When the batch became due (the idle or max-wait deadline): flush lag is
    # measured from here. Not part of the JSON contract.
    deadline_at: float = Field(default=0.0, exclude=True)


@dataclass(frozen=True, slots=True)
class AddResult:
    """What ``Batcher.add`` did with one message."""

    chat_id: str
    message_id: str
    accepted: bool
    deadline_ms: int  # when the chat's batch closes if nothing else arrives
    count: int  # messages in the open batch
    now_ms: int  # Redis time of the append
    max_wait_left_ms: int = 0  # until the batch closes even if the chat never pauses
    # "appended", "duplicate"; or, for an edit or a revoke whose original was
    # still in the open batch, "edited", "revoked", or "emptied" (the revoke
    # took the batch's last message: that batch is gone, never delivered).
    outcome: str = "appended"

    @property
    def duplicate(self) -> bool:
        return not self.accepted

    @property
    def flush_in_ms(self) -> int:
        return max(self.deadline_ms - self.now_ms, 0)


@dataclass(frozen=True, slots=True)
class TypingResult:
    """What ``Batcher.typing`` did with one typing (or paused) event."""

    chat_id: str
    # "no_batch": nothing open, nothing done (typing never opens a batch);
    # "held": the open batch now waits until ``deadline_ms``; "released": a
    # pause brought a typing hold back to the idle timer; "unchanged": the
    # batch already waits longer, or is full, held by an operator or flushed.
    outcome: str
    deadline_ms: int  # the open batch's deadline (0 without one)
    now_ms: int  # Redis time of the event

    @property
    def flush_in_ms(self) -> int:
        return max(self.deadline_ms - self.now_ms, 0) if self.deadline_ms else 0
