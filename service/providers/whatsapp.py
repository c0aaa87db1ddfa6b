"""Meta WhatsApp Cloud API webhooks: signature check and payload parsing (pure, no I/O).

``parse_webhook`` walks every entry, change and message (Meta may pack many
into one POST) and raises ``MalformedPayload`` naming the path of anything out
of shape. JSON ``null`` counts as a missing key wherever a key is optional.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from service.models import MAX_DATA_DEPTH, Message, nesting_exceeds

OBJECT = "whatsapp_business_account"
SOURCE = "whatsapp"
CHAT_PREFIX = "wa"
MAX_DEPTH = MAX_DATA_DEPTH  # Meta nests ~5 levels

_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")
_DIGITS = re.compile(r"[0-9]+")

Obj = dict[str, Any]


class MalformedPayload(ValueError):
    """The webhook body is not a WhatsApp payload we can read (answer 400)."""


@dataclass(frozen=True, slots=True)
class ParsedWebhook:
    """What one webhook POST carried."""

    messages: list[tuple[str, Message]]  # (chat_id, message) in payload order
    statuses: int  # delivery receipts, counted and skipped
    errors: int  # value.errors[] entries plus messages[].errors entries
    skipped: int  # messages not fed to the batcher (type "system"), other fields


def signature_valid(app_secret: bytes, body: bytes, header: str | None) -> bool:
    """True when ``header`` is ``sha256=<hex HMAC-SHA256 of body>`` keyed with the secret.

    ``body`` must be the exact bytes received. Hex digits may be upper case;
    the ``sha256=`` prefix may not. An empty secret never validates.
    """
    if not app_secret or not isinstance(header, str):
        return False
    match = _SIGNATURE.fullmatch(header.strip())
    if match is None:
        return False
    expected = hmac.new(app_secret, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, match.group(1).lower())


def _obj(value: object, path: str) -> Obj:
    if not isinstance(value, dict):
        raise MalformedPayload(f"{path} must be an object")
    return value


def _list(value: object, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise MalformedPayload(f"{path} must be a list")
    return value


def _opt_obj(parent: Obj, key: str, path: str) -> Obj | None:
    value = parent.get(key)
    return None if value is None else _obj(value, f"{path}.{key}")


def _opt_list(parent: Obj, key: str, path: str) -> list[Any]:
    value = parent.get(key)
    return [] if value is None else _list(value, f"{path}.{key}")


def _opt_str(parent: Obj | None, key: str, path: str) -> str | None:
    if parent is None:
        return None
    value = parent.get(key)
    if value is None or isinstance(value, str):
        return value
    raise MalformedPayload(f"{path}.{key} must be a string")


def _req_str(parent: Obj, key: str, path: str) -> str:
    value = parent.get(key)
    if not isinstance(value, str) or not value:
        raise MalformedPayload(f"{path}.{key} must be a non-empty string")
    return value


def _opt_number(parent: Obj, key: str, path: str) -> int | float | None:
    value = parent.get(key)
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return value
    raise MalformedPayload(f"{path}.{key} must be a number")


def _count_objects(parent: Obj, key: str, path: str) -> int:
    """How many items the optional list ``parent[key]`` holds (each must be an object)."""
    items = _opt_list(parent, key, path)
    for i, item in enumerate(items):
        _obj(item, f"{path}.{key}[{i}]")
    return len(items)


def _check_depth(node: object, path: str) -> None:
    """MalformedPayload if ``node`` nests lists/objects deeper than MAX_DEPTH."""
    if nesting_exceeds(node, MAX_DEPTH):
        raise MalformedPayload(f"{path} is nested deeper than {MAX_DEPTH} levels")


def _first(*values: str | None) -> str | None:
    """The first non-empty string, else None."""
    return next((v for v in values if v), None)


# -- text per message type ------------------------------------------------------


def _field_text(key: str, *fields: str) -> Callable[[Obj, str], str | None]:
    """Text from ``message[key]`` (an object): its first non-empty field of ``fields``."""

    def text(msg: Obj, path: str) -> str | None:
        inner = _opt_obj(msg, key, path)
        return _first(*(_opt_str(inner, f, f"{path}.{key}") for f in fields))

    return text


def _no_text(msg: Obj, path: str) -> str | None:
    return None


def _location_text(msg: Obj, path: str) -> str | None:
    loc = _opt_obj(msg, "location", path)
    if loc is None:
        return None
    p = f"{path}.location"
    named = _first(_opt_str(loc, "name", p), _opt_str(loc, "address", p))
    lat, long = _opt_number(loc, "latitude", p), _opt_number(loc, "longitude", p)
    if named is None and lat is not None and long is not None:
        return f"{lat},{long}"
    return named


def _contacts_text(msg: Obj, path: str) -> str | None:
    names: list[str] = []
    for i, card in enumerate(_opt_list(msg, "contacts", path)):
        p = f"{path}.contacts[{i}]"
        name = _opt_str(_opt_obj(_obj(card, p), "name", p), "formatted_name", f"{p}.name")
        if name:
            names.append(name)
    return ", ".join(names) or None


_INTERACTIVE = {"button_reply": "title", "list_reply": "title", "nfm_reply": "body"}


def _interactive_text(msg: Obj, path: str) -> str | None:
    inter = _opt_obj(msg, "interactive", path)
    if inter is None:
        return None
    p = f"{path}.interactive"
    kind = _opt_str(inter, "type", p)
    if kind not in _INTERACTIVE:  # missing or unknown type: use the reply object present
        kind = next((k for k in _INTERACTIVE if k in inter), None)
    if kind is None:
        return None
    return _first(_opt_str(_opt_obj(inter, kind, p), _INTERACTIVE[kind], f"{p}.{kind}"))


_TEXT: dict[str, Callable[[Obj, str], str | None]] = {
    "text": _field_text("text", "body"),
    "image": _field_text("image", "caption"),
    "video": _field_text("video", "caption"),
    "document": _field_text("document", "caption", "filename"),
    "audio": _no_text,
    "sticker": _no_text,
    "location": _location_text,
    "contacts": _contacts_text,
    "interactive": _interactive_text,
    "button": _field_text("button", "text"),
    "reaction": _field_text("reaction", "emoji"),
    "order": _field_text("order", "text"),
    "unsupported": _no_text,
    "request_welcome": _no_text,
}


# -- parsing ----------------------------------------------------------------------


def _sent_at(msg: Obj, path: str) -> float | None:
    value = msg.get("timestamp")
    if value is None:
        return None
    try:
        if isinstance(value, str) and _DIGITS.fullmatch(value):
            return float(int(value))
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
    except (ValueError, OverflowError):  # over 4300 digits, or beyond a float
        pass
    raise MalformedPayload(f"{path}.timestamp must be Unix seconds as a string of digits")


def _profile_names(value: Obj, path: str) -> tuple[dict[str, str], dict[str, str]]:
    """Profile names from ``value.contacts``, by ``wa_id`` and by ``user_id`` (BSUID)."""
    by_wa_id: dict[str, str] = {}
    by_user_id: dict[str, str] = {}
    for i, raw in enumerate(_opt_list(value, "contacts", path)):
        p = f"{path}.contacts[{i}]"
        contact = _obj(raw, p)
        name = _opt_str(_opt_obj(contact, "profile", p), "name", f"{p}.profile")
        wa_id = (_opt_str(contact, "wa_id", p) or "").removeprefix("+")
        user_id = _opt_str(contact, "user_id", p) or ""
        if name and wa_id:
            by_wa_id.setdefault(wa_id, name)
        if name and user_id:
            by_user_id.setdefault(user_id, name)
    return by_wa_id, by_user_id


@dataclass(slots=True)
class _Tally:
    messages: list[tuple[str, Message]] = field(default_factory=list)
    statuses: int = 0
    errors: int = 0
    skipped: int = 0


def _messages_value(value: Obj, path: str, tally: _Tally) -> None:
    """Add one ``field == "messages"`` value's messages and counts to ``tally``."""
    tally.statuses += _count_objects(value, "statuses", path)
    tally.errors += _count_objects(value, "errors", path)
    by_wa_id, by_user_id = _profile_names(value, path)
    metadata = _opt_obj(value, "metadata", path)
    for i, raw in enumerate(_opt_list(value, "messages", path)):
        p = f"{path}.messages[{i}]"
        msg = _obj(raw, p)
        wamid = _req_str(msg, "id", p)
        mtype = _req_str(msg, "type", p)
        tally.errors += _count_objects(msg, "errors", p)
        if mtype == "system":  # number changes and identity notices: not chat content
            tally.skipped += 1
            continue
        sender = (_opt_str(msg, "from", p) or "").removeprefix("+")
        user_id = _opt_str(msg, "from_user_id", p) or ""
        if not sender and not user_id:
            raise MalformedPayload(f"{p} has neither 'from' nor 'from_user_id'")
        if metadata is None:
            raise MalformedPayload(f"{path}.metadata must be an object")
        phone_id = _req_str(metadata, "phone_number_id", f"{path}.metadata")
        data = dict(msg)
        name = by_wa_id.get(sender) or by_user_id.get(user_id)  # neither holds ""
        if name is not None:
            data["profile_name"] = name
        _check_depth(msg, p)
        text, sent_at = _TEXT.get(mtype, _no_text)(msg, p), _sent_at(msg, p)
        message = Message(
            id=wamid, type=mtype, text=text, sent_at=sent_at, source=SOURCE, data=data
        )
        tally.messages.append((f"{CHAT_PREFIX}:{phone_id}:{sender or user_id}", message))


def parse_webhook(doc: object) -> ParsedWebhook:
    """Every message in a decoded WhatsApp Cloud API webhook body, with counts of the rest."""
    top = _obj(doc, "payload")
    if top.get("object") != OBJECT:
        raise MalformedPayload(f"object must be {OBJECT!r}")
    tally = _Tally()
    for e, raw_entry in enumerate(_list(top.get("entry"), "entry")):
        ep = f"entry[{e}]"
        entry = _obj(raw_entry, ep)
        for c, raw_change in enumerate(_list(entry.get("changes"), f"{ep}.changes")):
            cp = f"{ep}.changes[{c}]"
            change = _obj(raw_change, cp)
            kind = change.get("field")
            if not isinstance(kind, str):
                raise MalformedPayload(f"{cp}.field must be a string")
            if kind == "messages":
                _messages_value(_obj(change.get("value"), f"{cp}.value"), f"{cp}.value", tally)
            else:  # account events etc.: acknowledged, not batched
                tally.skipped += 1
    return ParsedWebhook(tally.messages, tally.statuses, tally.errors, tally.skipped)
