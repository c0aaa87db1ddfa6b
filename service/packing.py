"""The stored form of a message keeps each value once.

A provider's message is kept with its original object (``data``), and the
fields the service read from it (``id``, ``text``, ``sender``...) repeat
parts of it: a WhatsApp text would hold its id, text, sender and time twice.
Before a message is stored, ``pack`` drops every value of a ``Copy`` rule
that the rest of the document gives back exactly, and notes which in the
``"~"`` member (a bit per rule); ``unpack`` puts them back before the
message is read. A value is dropped only when rebuilding it gives an equal
value of the same type, so the delivered message is the one that came in
(only the order of the keys of ``data`` can differ).

The members every message has are stored under one-letter names (``SHORT``,
and the sender's ``SHORT_SENDER``), ``type`` and ``source`` not at all when
they are the defaults ("text", "api"), and a ``sent_at`` of whole seconds as
an integer. ``id`` stays first and whole: the append script finds a message
by the prefix ``{"id":<id>,``.

The rules are data, here, so that every process reads what any other wrote,
whatever providers it has loaded. Rules are only ever appended to a source's
tuple: the bits of stored messages name them by position.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PACKED = "~"
_MISSING: Any = object()

Path = tuple[str, ...]


def _same(value: Any) -> Any:
    return value


def _unix_string(value: Any) -> Any:
    """WhatsApp's ``timestamp`` ("1767225601") from ``sent_at`` (1767225601.0)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return _MISSING


@dataclass(frozen=True, slots=True)
class Copy:
    """The value at ``at`` repeats the one at ``of`` (as ``form`` turns it)."""

    at: Path
    of: Path
    form: Callable[[Any], Any] = _same


_COMMON = (Copy(("sender", "phone"), ("sender", "id")),)

RULES: dict[str, tuple[Copy, ...]] = {
    "whatsapp": (
        *_COMMON,
        Copy(("data", "id"), ("id",)),
        Copy(("data", "from"), ("sender", "id")),
        Copy(("data", "type"), ("type",)),
        Copy(("data", "text", "body"), ("text",)),
        Copy(("data", "timestamp"), ("sent_at",), _unix_string),
    ),
}


# Stored names of the members every message has; none is a Message field.
SHORT = {"type": "t", "source": "s", "text": "x", "sent_at": "a", "sender": "u", "data": "d"}
_LONG = {short: name for name, short in SHORT.items()}
SHORT_SENDER = {"name": "n", "phone": "p", "user_id": "b", "username": "h", "country_code": "c"}
_LONG_SENDER = {short: name for name, short in SHORT_SENDER.items()}
_DEFAULTS = {"type": "text", "source": "api"}


def _get(doc: Any, path: Path) -> Any:
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return _MISSING
        doc = doc[key]
    return doc


def _expected(doc: dict[str, Any], rule: Copy) -> Any:
    source = _get(doc, rule.of)
    return _MISSING if source is _MISSING else rule.form(source)


def _drop(doc: dict[str, Any], path: Path) -> None:
    """Delete ``path`` and the objects it leaves empty (never ``doc`` itself)."""
    parents = [doc]
    for key in path[:-1]:
        parents.append(parents[-1][key])
    del parents[-1][path[-1]]
    for depth in range(len(path) - 1, 0, -1):
        if parents[depth]:
            break
        del parents[depth - 1][path[depth - 1]]


def _put(doc: dict[str, Any], path: Path, value: Any) -> None:
    for key in path[:-1]:
        doc = doc.setdefault(key, {})
    doc[path[-1]] = value


def _whole(value: float) -> bool:
    """Written as an integer and read back the same: whole, exact, not -0.0."""
    negative_zero = value == 0 and math.copysign(1.0, value) < 0
    return value.is_integer() and abs(value) < 2**53 and not negative_zero


def pack(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` without the values its rules can give back, under its stored
    names (``doc`` itself is changed too)."""
    rules = RULES.get(doc.get("source", ""), ())
    mask = 0
    for bit, rule in enumerate(rules):
        value = _get(doc, rule.at)
        if value is _MISSING:
            continue
        expected = _expected(doc, rule)
        if type(expected) is type(value) and expected == value:
            _drop(doc, rule.at)
            mask |= 1 << bit
    if mask:
        doc[PACKED] = mask
    for name, default in _DEFAULTS.items():
        if doc.get(name) == default:
            del doc[name]
    sent_at = doc.get("sent_at")
    if isinstance(sent_at, float) and _whole(sent_at):
        doc["sent_at"] = int(sent_at)
    sender = doc.get("sender")
    if isinstance(sender, dict):
        doc["sender"] = {SHORT_SENDER.get(k, k): v for k, v in sender.items()}
    return {SHORT.get(k, k): v for k, v in doc.items()}


def unpack(doc: dict[str, Any]) -> dict[str, Any]:
    """Inverse of ``pack``; a document stored before packing comes back as it is."""
    doc = {_LONG.get(k, k): v for k, v in doc.items()}
    for name, default in _DEFAULTS.items():
        doc.setdefault(name, default)
    sent_at = doc.get("sent_at")
    if isinstance(sent_at, int) and not isinstance(sent_at, bool):
        doc["sent_at"] = float(sent_at)
    sender = doc.get("sender")
    if isinstance(sender, dict):
        doc["sender"] = {_LONG_SENDER.get(k, k): v for k, v in sender.items()}
    mask = doc.pop(PACKED, 0)
    if not mask:
        return doc
    rules = RULES.get(doc.get("source", ""), ())
    # Put back in reverse: a rule may read a value that a later rule dropped.
    for bit in range(len(rules) - 1, -1, -1):
        if mask >> bit & 1:
            _put(doc, rules[bit].at, _expected(doc, rules[bit]))
    return doc
