"""The data the service hands around: messages, batches, append results."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

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


def _shallow_enough(value: Any) -> Any:
    if nesting_exceeds(value):
        raise ValueError(f"nested deeper than {MAX_DATA_DEPTH} levels")
    return value


# A message's ``data``: any JSON value nested at most MAX_DATA_DEPTH levels.
Data = Annotated[Any, AfterValidator(_shallow_enough)]

Reason = Literal["idle", "max_wait", "max_messages", "max_bytes", "recovered", "manual"]


class Message(BaseModel):
    """One chat message. ``received_at`` is stamped by Redis when it is stored.

    ``data`` is checked when the message is made and when it is assigned.
    """

    model_config = ConfigDict(validate_assignment=True)

    id: str
    type: str = "text"
    text: str | None = None
    sent_at: float | None = None
    received_at: float | None = None
    source: str = "api"
    data: Data = Field(default_factory=dict)

    def stored_json(self) -> bytes:
        """The JSON kept in Redis (``received_at`` travels beside it)."""
        doc: dict[str, Any] = {"id": self.id, "type": self.type, "source": self.source}
        if self.text is not None:
            doc["text"] = self.text
        if self.sent_at is not None:
            doc["sent_at"] = self.sent_at
        if self.data is not None and self.data != {}:
            doc["data"] = self.data
        text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            # Lone surrogates (from "\udXXX" escapes in the input) are not
            # text: they could be stored, but never forwarded as UTF-8 JSON.
            return _LONE_SURROGATE.sub("\ufffd", text).encode("utf-8")


def decode_item(raw: bytes) -> Message:
    """Inverse of the append script's ``"<received_ms>\\t<json>"``."""
    head, _, body = raw.partition(b"\t")
    doc = json.loads(body)
    doc["received_at"] = int(head) / 1000
    # Written by this service from a validated Message: no need to validate again.
    return Message.model_construct(**doc)


def order_messages(items: list[bytes]) -> list[Message]:
    """Messages by ``sent_at`` (when the sender gave one), then arrival."""
    messages = [decode_item(raw) for raw in items]
    keyed = sorted(
        enumerate(messages),
        key=lambda im: (
            im[1].sent_at if im[1].sent_at is not None else im[1].received_at or 0.0,
            im[0],
        ),
    )
    return [m for _, m in keyed]


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

    @property
    def duplicate(self) -> bool:
        return not self.accepted

    @property
    def flush_in_ms(self) -> int:
        return max(self.deadline_ms - self.now_ms, 0)
