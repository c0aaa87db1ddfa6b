"""Evolution API v2 webhooks (WhatsApp Web through Baileys): payload parsing.

Pure, no I/O. A POST is one event ``{"event", "instance", "data", "sender",
"apikey", ...}``; ``parse_webhook`` reads it into a ``ParsedWebhook``:
``messages.upsert`` -> messages (one chat per instance and remote jid:
``evo:<instance>:<remoteJid>``); ``messages.edited`` / ``messages.delete``
(and a ``protocolMessage`` inside an upsert) -> edits and revokes;
``messages.update`` -> statuses; ``presence.update`` -> typing; anything
else, our own messages (``fromMe``) and stories (``status@broadcast``) ->
skipped. One odd message never costs the others: it is rejected alone.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass

from service.models import (
    MAX_DATA_DEPTH,
    NON_FINITE,
    Message,
    Sender,
    nesting_exceeds,
    non_finite,
)
from service.providers.evolution_content import (
    Content,
    content,
    first_obj,
    integer,
    person,
    protocol_kind,
    unwrap,
    user_of,
)
from service.providers.parsed import ParsedWebhook, Rejected
from service.providers.reader import Obj, Reader, first

SOURCE = "evolution"
CHAT_PREFIX = "evo"
TYPING = frozenset(("composing", "recording"))
_TOO_DEEP = f"the object nests deeper than {MAX_DATA_DEPTH} levels"


def _unstorable(raw: object) -> str:
    return _TOO_DEEP if nesting_exceeds(raw, MAX_DATA_DEPTH) else NON_FINITE


__all__ = ["ParsedWebhook", "canonical_event", "parse_webhook"]


def canonical_event(name: str) -> str:
    """``messages.upsert``, ``MESSAGES_UPSERT`` and ``messages-upsert`` -> ``MESSAGES_UPSERT``."""
    return re.sub(r"[.\-]", "_", name.strip()).upper()


# -- who and where ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Envelope:
    instance: str | None
    own: str | None  # the instance's own jid (``sender``)
    channel: dict[str, str]
    now_s: float


def _sender(r: Reader, key: Obj, raw: Obj, jid: str) -> Sender | None:
    name = r.text(raw, "pushName")
    if not jid.endswith("@g.us"):
        return person(jid, r.text(key, "remoteJidAlt", "key"), name)
    member = first(r.text(key, "participant", "key"), r.text(raw, "participant"))
    if member is None:
        r.warn("key.participant", "is missing in a group message; no sender")
        return None
    return person(member, r.text(key, "participantAlt", "key"), name)


def _sent_at(r: Reader, raw: Obj, now_s: float) -> float:
    value = raw.get("messageTimestamp")
    seconds = integer(value)
    if seconds is None or seconds >= 10**12:
        problem = "is missing" if value is None else "is not Unix seconds"
        r.warn("messageTimestamp", f"{problem}; the receive time is used")
        return now_s
    return float(seconds)


def _skipped_jid(jid: str) -> bool:
    return jid.endswith("@broadcast")  # stories (status@broadcast)


# -- messages ---------------------------------------------------------------------


def _change(
    env: _Envelope,
    r: Reader,
    protocol: Obj,
    where: str,
    chat_jid: str,
    sender: Sender | None,
    fallback_s: float | None = None,
) -> tuple[str, Message] | None:
    """An edit or revoke from a ``protocolMessage`` (None: another protocol message).

    Its own id is derived from the original's (``<id>:revoke``,
    ``<id>:edit:<timestampMs>``) so that the same change reported twice (an
    upsert and ``messages.edited``, or ``messages.delete``) is stored once.
    """
    edited = r.obj(protocol, "editedMessage", where)
    kind = protocol_kind(protocol.get("type"), edited is not None)
    target = r.text(r.obj(protocol, "key", where), "id", f"{where}.key")
    if kind is None or target is None:
        return None
    stamp_ms = integer(protocol.get("timestampMs"))
    body = content(r, edited, None, None) if edited is not None else Content("unknown")
    if kind == "revoke":
        mid = f"{target}:revoke"
    else:
        mark = str(stamp_ms) if stamp_ms is not None else _digest(edited)
        mid = f"{target}:edit:{mark}"
    message = Message(
        id=mid,
        type=kind,
        text=body.text if kind == "edit" else None,
        sent_at=stamp_ms / 1000 if stamp_ms is not None else fallback_s,
        source=SOURCE,
        sender=sender,
        media=body.media if kind == "edit" else None,
        target_id=target,
        warnings=r.warnings,
        data=protocol,
        channel=env.channel,
    )
    return _chat(env, chat_jid), message


def _digest(value: object) -> str:
    raw = json.dumps(value, sort_keys=True, ensure_ascii=False).encode("utf-8", "replace")
    return hashlib.sha256(raw).hexdigest()[:16]


def _chat(env: _Envelope, jid: str) -> str:
    return f"{CHAT_PREFIX}:{env.instance}:{jid}"


def _upsert(env: _Envelope, path: str, raw: object, out: ParsedWebhook) -> None:
    if not isinstance(raw, dict):
        out.rejected.append(Rejected("the message is not an object", path, raw))
        return
    r = Reader(path)
    key = r.obj(raw, "key") or {}
    mid, jid = r.text(key, "id", "key"), r.text(key, "remoteJid", "key")
    why = (
        "the message has no key.id"
        if mid is None
        else "the message has no key.remoteJid"
        if jid is None
        else _TOO_DEEP
        if nesting_exceeds(raw, MAX_DATA_DEPTH)
        else NON_FINITE
        if non_finite(raw)
        else None
    )
    if why is not None or mid is None or jid is None:
        out.rejected.append(Rejected(why or "unreadable", path, raw))
        return
    if r.flag(key, "fromMe", "key") is True or _skipped_jid(jid):
        out.skipped += 1  # our own messages (sent from the phone or the API), stories
        return
    sender = _sender(r, key, raw, jid)
    message = r.obj(raw, "message")
    if message is None:
        r.warn("message", "is missing; nothing to read")
    inner = unwrap(message or {})
    nested = r.obj(r.obj(inner, "editedMessage", "message"), "message", "message.editedMessage")
    protocol = first_obj(r.obj(inner, "protocolMessage", "message"), nested, "protocolMessage")
    if protocol is not None:
        stamp = integer(raw.get("messageTimestamp"))
        when = float(stamp) if stamp is not None and stamp < 10**12 else None
        changed = _change(env, r, protocol, "message.protocolMessage", jid, sender, when)
        if changed is None:
            out.skipped += 1  # ephemeral settings, history sync notices...
        else:
            out.messages.append(changed)
        return
    body = content(r, inner, r.text(raw, "messageType"), mid)
    context = first_obj(r.obj(raw, "contextInfo"), body.inner, "contextInfo")
    where = "contextInfo" if isinstance(raw.get("contextInfo"), dict) else f"message.{body.key}"
    score = r.number(context, "forwardingScore", where)
    out.messages.append(
        (
            _chat(env, jid),
            Message(
                id=mid,
                type=body.type,
                text=body.text,
                sent_at=_sent_at(r, raw, env.now_s),
                source=SOURCE,
                sender=sender,
                media=body.media,
                reply_to=r.text(context, "stanzaId", where),
                forwarded=bool(r.flag(context, "isForwarded", where) or (score or 0) > 0),
                reaction=body.reaction,
                warnings=r.warnings,
                data=raw,
                channel=env.channel,
            ),
        )
    )


def _edited(env: _Envelope, path: str, raw: object, out: ParsedWebhook) -> None:
    """``messages.edited``: ``data`` is the ``protocolMessage`` itself.

    Its ``key`` is the original message's key as the editor sent it: in a
    1:1 chat a contact's edit names the instance's own jid, which names no
    chat (rejected; a revoke is skipped, ``messages.delete`` carries it).
    """
    if not isinstance(raw, dict) or nesting_exceeds(raw, MAX_DATA_DEPTH) or non_finite(raw):
        why = "the edit is not an object" if not isinstance(raw, dict) else _unstorable(raw)
        out.rejected.append(Rejected(why, path, raw))
        return
    r = Reader(path)
    key = r.obj(raw, "key") or {}
    jid = r.text(key, "remoteJid", "key")
    kind = protocol_kind(raw.get("type"), isinstance(raw.get("editedMessage"), dict))
    member = r.text(key, "participant", "key")
    own = user_of(env.own)
    from_me = r.flag(key, "fromMe", "key") is True
    if kind is None or (jid is not None and _skipped_jid(jid)):
        out.skipped += 1
    elif jid is None or (own is not None and user_of(jid) == own):
        if kind == "revoke":
            out.skipped += 1
        else:
            why = "messages.edited names no chat (key.remoteJid is missing or the instance's own)"
            out.rejected.append(Rejected(why, path, raw))
    elif (jid.endswith("@g.us") and own is not None and user_of(member) == own) or (
        from_me and not jid.endswith("@g.us")
    ):
        out.skipped += 1  # an edit of our own message
    else:
        who = member if jid.endswith("@g.us") else jid
        sender = person(who, None, None) if who else None
        changed = _change(env, r, raw, "data", jid, sender)
        if changed is None:
            out.rejected.append(Rejected("the edit names no original (key.id)", path, raw))
        else:
            out.messages.append(changed)


def _deleted(env: _Envelope, path: str, raw: object, out: ParsedWebhook) -> None:
    """``messages.delete``: ``data`` is the revoked message's key (or holds it as ``key``)."""
    if not isinstance(raw, dict) or nesting_exceeds(raw, MAX_DATA_DEPTH) or non_finite(raw):
        why = "the deletion is not an object" if not isinstance(raw, dict) else _unstorable(raw)
        out.rejected.append(Rejected(why, path, raw))
        return
    r = Reader(path)
    key = raw["key"] if isinstance(raw.get("key"), dict) else raw
    mid, jid = r.text(key, "id"), r.text(key, "remoteJid")
    if mid is None or jid is None:
        why = "the deletion has no id" if mid is None else "the deletion has no remoteJid"
        out.rejected.append(Rejected(why, path, raw))
        return
    if r.flag(key, "fromMe") is True or _skipped_jid(jid):
        out.skipped += 1
        return
    member = first(r.text(key, "participant"), r.text(raw, "participant"))
    who = member if jid.endswith("@g.us") else jid
    sender = person(who, None, None) if who else None
    message = Message(
        id=f"{mid}:revoke",
        type="revoke",
        source=SOURCE,
        sender=sender,
        target_id=mid,
        warnings=r.warnings,
        data=raw,
        channel=env.channel,
    )
    out.messages.append((_chat(env, jid), message))


def _presence(env: _Envelope, raw: object, out: ParsedWebhook) -> None:
    jid = raw.get("id") if isinstance(raw, dict) else None
    presences = raw.get("presences") if isinstance(raw, dict) else None
    if not isinstance(jid, str) or not jid or not isinstance(presences, dict) or _skipped_jid(jid):
        out.skipped += 1
        return
    states = [p.get("lastKnownPresence") for p in presences.values() if isinstance(p, dict)]
    out.typing.append((_chat(env, jid), any(s in TYPING for s in states)))


# -- the event --------------------------------------------------------------------


def _items(data: object) -> list[tuple[str, object]]:
    """``data`` as one item, a list of them, or ``{"messages": [...]}``."""
    if isinstance(data, list):
        return [(f"data[{i}]", item) for i, item in enumerate(data)]
    if isinstance(data, dict) and "key" not in data and isinstance(data.get("messages"), list):
        return [(f"data.messages[{i}]", m) for i, m in enumerate(data["messages"])]
    return [("data", data)]


def parse_webhook(
    doc: Obj, *, event_hint: str | None = None, now_s: float | None = None
) -> ParsedWebhook:
    """Everything one decoded Evolution webhook body carried.

    ``event_hint`` (the event named by the URL, webhook-by-events) is used
    only when the body has no ``event``; ``now_s`` stands in for an
    unreadable ``messageTimestamp``.
    """
    out = ParsedWebhook()
    name = doc.get("event") if isinstance(doc.get("event"), str) else event_hint
    event = canonical_event(name) if name else ""
    instance = doc.get("instance")
    instance = instance if isinstance(instance, str) and instance else None
    own = doc.get("sender") if isinstance(doc.get("sender"), str) else None
    channel = {"provider": SOURCE} | ({"instance": instance} if instance else {})
    channel |= {"sender": own} if own else {}
    env = _Envelope(instance, own or None, channel, time.time() if now_s is None else now_s)
    data = doc.get("data")
    readers = {"MESSAGES_UPSERT": _upsert, "MESSAGES_EDITED": _edited, "MESSAGES_DELETE": _deleted}
    if event == "MESSAGES_UPDATE":
        out.statuses += sum(1 for _, item in _items(data) if isinstance(item, dict))
    elif event == "PRESENCE_UPDATE" and instance is not None:
        _presence(env, data, out)
    elif event in readers and instance is None:
        out.rejected.append(Rejected("the body names no instance", "data", data))
    elif event in readers:
        for path, item in _items(data):
            readers[event](env, path, item, out)
    else:
        out.skipped += 1  # connection.update, qrcode.updated, send.message (our echoes)...
    return out
