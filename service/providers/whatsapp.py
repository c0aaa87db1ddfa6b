"""Meta WhatsApp Cloud API webhooks: signature check and payload parsing (pure, no I/O).

``parse_webhook`` walks every entry, change and message (Meta may pack many
into one POST) and never gives up on a whole POST for one odd part: a
message with an id and a sender is kept, its unreadable fields listed in its
``warnings``; one that cannot be assigned to a chat comes back in
``rejected`` with the reason and the object as received. JSON ``null``
counts as a missing key wherever a key is optional.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from typing import Any

from service.models import (
    MAX_DATA_DEPTH,
    NON_FINITE,
    Message,
    Sender,
    nesting_exceeds,
    non_finite,
)
from service.providers.parsed import ParsedWebhook, ProviderError, Rejected
from service.providers.reader import Reader, first
from service.providers.whatsapp_content import content, infer_type

OBJECT = "whatsapp_business_account"
SOURCE = "whatsapp"
CHAT_PREFIX = "wa"
MAX_DEPTH = MAX_DATA_DEPTH  # Meta nests ~5 levels

_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")
_DIGITS = re.compile(r"[0-9]{1,12}")

Obj = dict[str, Any]

__all__ = ["ParsedWebhook", "ProviderError", "Rejected", "parse_webhook", "signature_valid"]


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


# -- who sent it -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Contact:
    phone: str | None
    user_id: str | None
    name: str | None
    username: str | None
    country_code: str | None


def _contacts(r: Reader, value: Obj) -> list[_Contact]:
    found = []
    for where, raw in r.objects(value, "contacts"):
        profile = r.obj(raw, "profile", where)
        phone = r.text(raw, "wa_id", where)
        found.append(
            _Contact(
                phone=phone.removeprefix("+") if phone else None,
                user_id=r.text(raw, "user_id", where),
                name=r.text(profile, "name", f"{where}.profile"),
                username=first(
                    r.text(profile, "username", f"{where}.profile"), r.text(raw, "username", where)
                ),
                country_code=first(
                    r.text(raw, "country_code", where),
                    r.text(profile, "country_code", f"{where}.profile"),
                ),
            )
        )
    return found


def _sender(r: Reader, msg: Obj, contacts: list[_Contact]) -> Sender | None:
    """``from``, else ``from_user_id``, else the single contact's ids.

    The phone number keys the chat whenever it is known (from the message
    or from the contact that also carries the business-scoped id), so one
    user's messages share a chat whichever of the two forms each one uses.
    """
    phone = (r.text(msg, "from") or "").removeprefix("+") or None
    user_id = r.text(msg, "from_user_id")
    contact = next(
        (c for c in contacts if (phone and c.phone == phone) or (user_id and c.user_id == user_id)),
        None,
    )
    if contact is None and phone is None and user_id is None and len(contacts) == 1:
        contact = contacts[0]
    if contact is not None:
        phone, user_id = phone or contact.phone, user_id or contact.user_id
    key = phone or user_id
    if key is None:
        return None
    c = contact or _Contact(None, None, None, None, None)
    return Sender(
        id=key,
        name=c.name,
        phone=phone,
        user_id=user_id,
        username=c.username,
        country_code=c.country_code,
    )


def _sent_at(r: Reader, msg: Obj, now_s: float) -> float:
    """Unix seconds; the receive time, with a warning, when unreadable."""
    value = msg.get("timestamp")
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return float(int(value))
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**12:
        return float(value)
    problem = "is missing" if value is None else f"{_show(value)} is not Unix seconds"
    r.warn("timestamp", f"{problem}; the receive time is used")
    return now_s


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# -- parsing ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Value:
    """What the messages of one ``value`` share."""

    path: str
    phone_id: str | None
    channel: dict[str, str]
    contacts: list[_Contact]
    per_member_groups: bool
    now_s: float


def _message(ctx: _Value, i: int, raw: object, out: ParsedWebhook) -> None:
    path = f"{ctx.path}.messages[{i}]"
    if not isinstance(raw, dict):
        out.rejected.append(Rejected("the message is not an object", path, raw))
        return
    r = Reader(path)
    wamid = r.text(raw, "id")
    sender = _sender(r, raw, ctx.contacts)
    why = (
        "the message has no id"
        if wamid is None
        else "the message names no sender (no from, from_user_id or single contact)"
        if sender is None
        else "value.metadata.phone_number_id is missing"
        if ctx.phone_id is None
        else f"the message nests deeper than {MAX_DEPTH} levels"
        if nesting_exceeds(raw, MAX_DEPTH)
        else NON_FINITE
        if non_finite(raw)
        else None
    )
    if why is not None or wamid is None or sender is None:
        out.rejected.append(Rejected(why or "unreadable", path, raw))
        return
    mtype = r.text(raw, "type")
    if mtype is None:
        mtype = infer_type(raw) or "unknown"
        r.warn("type", f"is missing; taken as {mtype!r}")
    body = content(r, raw, mtype)
    ctx_obj = r.obj(raw, "context")
    errors = [e for e in r.items(raw, "errors") if isinstance(e, dict)]
    group = r.text(raw, "group_id")
    chat_key = f"g:{group}" if group is not None and not ctx.per_member_groups else sender.id
    message = Message(
        id=wamid,
        type=mtype,
        text=body.text,
        sent_at=_sent_at(r, raw, ctx.now_s),
        source=SOURCE,
        sender=sender,
        media=body.media,
        reply_to=r.text(ctx_obj, "id", "context"),
        forwarded=bool(
            r.flag(ctx_obj, "forwarded", "context")
            or r.flag(ctx_obj, "frequently_forwarded", "context")
        ),
        referral=r.obj(raw, "referral"),
        reaction=body.reaction,
        target_id=body.target_id,
        errors=errors,
        warnings=r.warnings,
        data=raw,
        channel=ctx.channel,
    )
    out.messages.append((f"{CHAT_PREFIX}:{ctx.phone_id}:{chat_key}", message))


def _value(value: Obj, ctx: _Value, out: ParsedWebhook) -> None:
    out.statuses += (
        len(value.get("statuses") or ()) if isinstance(value.get("statuses"), list) else 0
    )
    errors = value.get("errors")
    for raw in errors if isinstance(errors, list) else ():
        if isinstance(raw, dict):
            out.errors.append(ProviderError.of(raw))
    messages = value.get("messages")
    if messages is None:
        return
    if not isinstance(messages, list):
        out.rejected.append(
            Rejected("value.messages is not a list", f"{ctx.path}.messages", messages)
        )
        return
    for i, raw in enumerate(messages):
        _message(ctx, i, raw, out)


def _objects(node: object, key: str, path: str, out: ParsedWebhook) -> list[tuple[str, Obj]]:
    """The objects of the list ``node[key]`` with their paths; anything else is rejected."""
    items = node.get(key) if isinstance(node, dict) else None
    if items is None:
        return []
    if not isinstance(items, list):
        out.rejected.append(Rejected(f"{key} is not a list", f"{path}{key}", items))
        return []
    found = []
    for i, item in enumerate(items):
        where = f"{path}{key}[{i}]"
        if isinstance(item, dict):
            found.append((where, item))
        else:
            out.rejected.append(Rejected(f"{key}[{i}] is not an object", where, item))
    return found


def parse_webhook(
    doc: Obj, *, per_member_groups: bool = False, now_s: float | None = None
) -> ParsedWebhook:
    """Every message of a decoded WhatsApp Cloud API webhook body, and the rest counted.

    Group messages are batched per group (``wa:<phone_number_id>:g:<group_id>``)
    unless ``per_member_groups``, which puts them in each member's own chat.
    ``now_s`` (default: now) stands in for an unreadable ``timestamp``.
    """
    out = ParsedWebhook()
    if doc.get("object") != OBJECT:
        out.skipped += 1  # another product's webhook on the same URL
        return out
    now = time.time() if now_s is None else now_s
    for ep, entry in _objects(doc, "entry", "", out):
        waba = Reader(ep).text(entry, "id")
        for cp, change in _objects(entry, "changes", f"{ep}.", out):
            value = change.get("value")
            if change.get("field") != "messages":  # account events etc.: acknowledged
                out.skipped += 1
            elif not isinstance(value, dict):
                out.rejected.append(Rejected("value is not an object", f"{cp}.value", value))
            else:
                r = Reader(f"{cp}.value")
                meta = r.obj(value, "metadata")
                phone_id = r.text(meta, "phone_number_id", "metadata")
                channel = {
                    "provider": SOURCE,
                    "phone_number_id": phone_id,
                    "waba_id": waba,
                    "display_phone_number": r.text(meta, "display_phone_number", "metadata"),
                }
                ctx = _Value(
                    f"{cp}.value",
                    phone_id,
                    {k: v for k, v in channel.items() if v is not None},
                    _contacts(r, value),
                    per_member_groups,
                    now,
                )
                _value(value, ctx, out)
    return out
