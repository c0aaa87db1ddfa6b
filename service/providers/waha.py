"""WAHA (WhatsApp HTTP API) webhooks: the HMAC check and the events, read into messages.

WAHA posts one event per request: ``{"id", "timestamp", "session", "event",
"me", "payload", "engine", "environment"}``. With an HMAC key configured on
the webhook it signs the raw body: ``X-Webhook-Hmac`` = hex HMAC-SHA512,
``X-Webhook-Hmac-Algorithm: sha512``.

- ``message``: a message (``fromMe`` ones are the bot's own: skipped);
  ``message.any`` (every message, ours too) is skipped, so that a webhook
  subscribed to both delivers each message once;
- ``message.reaction``: a reaction (type ``reaction``);
- ``message.edited`` / ``message.revoked``: an edit / a revoke of an earlier
  message, applied to it while its batch is open;
- ``message.ack``: a receipt (counted); ``presence.update``: typing;
- anything else (session, call, group, label, poll events): skipped.

Chat ids: ``waha:<session>:<chat id>``; a group (``…@g.us``) is one chat, its
members the senders.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from service.models import Media, Message, Reaction, Sender
from service.providers.parsed import ParsedWebhook, Rejected
from service.providers.reader import Obj, Reader, first

HMAC_HEADER = "x-webhook-hmac"
ALGORITHM_HEADER = "x-webhook-hmac-algorithm"
SOURCE = "waha"

TYPING = frozenset(("typing", "recording", "composing"))
SKIPPED_MESSAGE_EVENTS = frozenset(("message.any",))


def signature_valid(key: bytes, body: bytes, header: str | None, algorithm: str | None) -> bool:
    """Whether ``header`` is the hex HMAC-SHA512 of ``body`` under ``key``."""
    if not key or not header:
        return False
    if algorithm is not None and algorithm.strip().lower() != "sha512":
        return False
    expected = hmac.new(key, body, hashlib.sha512).hexdigest()
    return hmac.compare_digest(expected.encode(), header.strip().lower().encode())


def chat_id(session: str, jid: str) -> str:
    return f"waha:{session}:{jid}"


def _phone(jid: str | None) -> str | None:
    if not jid or not jid.endswith("@c.us"):
        return None
    digits = jid.split("@", 1)[0]
    return digits if digits.isdigit() else None


def _name(r: Reader, payload: Obj) -> str | None:
    raw = r.obj(payload, "_data", "payload") or {}
    info = raw.get("Info") if isinstance(raw.get("Info"), dict) else {}
    return first(
        r.text(raw, "notifyName", "_data"),
        r.text(raw, "pushName", "_data"),
        r.text(info, "PushName", "_data.Info"),
    )


def _media(r: Reader, payload: Obj) -> tuple[str, Media] | None:
    if not r.flag(payload, "hasMedia", "payload"):
        return None
    media = r.obj(payload, "media", "payload") or {}
    mime = r.text(media, "mimetype", "media")
    raw = r.obj(payload, "_data", "payload") or {}
    voice = raw.get("type") == "ptt" or None
    kind = "document"
    if mime:
        top = mime.split("/", 1)[0]
        kind = {"image": "image", "video": "video", "audio": "audio"}.get(top, "document")
    if raw.get("type") == "sticker":
        kind = "sticker"
    caption = r.text(payload, "body", "payload")
    return kind, Media(
        url=r.text(media, "url", "media"),
        mime_type=mime,
        filename=r.text(media, "filename", "media"),
        caption=caption,
        voice=voice if kind == "audio" else None,
    )


def _reply_to(r: Reader, payload: Obj) -> str | None:
    reply = payload.get("replyTo")
    if isinstance(reply, str):
        return reply or None
    return r.text(r.obj(payload, "replyTo", "payload"), "id", "payload.replyTo")


def _content(r: Reader, payload: Obj) -> tuple[str, str | None, Media | None]:
    """(type, text, media) of a message payload."""
    body = r.text(payload, "body", "payload")
    media = _media(r, payload)
    if media is not None:
        return media[0], body, media[1]
    location = r.obj(payload, "location", "payload")
    if location is not None:
        lat, lon = (
            r.number(location, "latitude", "location"),
            r.number(location, "longitude", "location"),
        )
        where = f"{lat:g},{lon:g}" if lat is not None and lon is not None else None
        return "location", first(r.text(location, "description", "location"), where), None
    cards = r.items(payload, "vCards", "payload")
    if cards:
        return "contacts", body or "\n".join(c for c in cards if isinstance(c, str)) or None, None
    return "text", body, None


class _Event:
    def __init__(self, doc: Obj, out: ParsedWebhook) -> None:
        self.doc, self.out = doc, out
        session, me = doc.get("session"), doc.get("me")
        self.session: str = session if isinstance(session, str) else ""
        self.channel: dict[str, str] = {"provider": SOURCE, "session": self.session}
        if isinstance(me, dict) and isinstance(me.get("id"), str):
            self.channel["me"] = me["id"]

    def reject(self, reason: str, raw: Any) -> None:
        self.out.rejected.append(Rejected(reason, "payload", raw))

    def chat_of(self, r: Reader, payload: Obj) -> tuple[str, Sender] | None:
        """The chat and sender of a payload sent by somebody else, else None."""
        jid = r.text(payload, "from", "payload")
        if not self.session or not jid:
            return None
        participant = r.text(payload, "participant", "payload")
        who = participant if jid.endswith("@g.us") and participant else jid
        sender = Sender(id=who, name=_name(r, payload), phone=_phone(who))
        return chat_id(self.session, jid), sender

    def message(self, payload: Obj, **fields: Any) -> None:
        r = Reader("payload")
        found = self.chat_of(r, payload)
        if found is None:
            self.reject("no session or no 'from' chat id: no chat to assign it to", payload)
            return
        mid = fields.pop("id", None) or r.text(payload, "id", "payload")
        if not mid:
            self.reject("no message id", payload)
            return
        chat, sender = found
        if "type" not in fields:
            kind, text, media = _content(r, payload)
            fields |= {"type": kind, "text": text, "media": media}
        try:
            message = Message(
                id=mid,
                sent_at=r.number(payload, "timestamp", "payload"),
                source=SOURCE,
                sender=sender,
                reply_to=_reply_to(r, payload),
                data=payload,
                channel=self.channel,
                **fields,
            )
        except ValueError as exc:
            self.reject(f"unreadable message: {str(exc)[:200]}", payload)
            return
        if r.warnings:
            message = message.model_copy(update={"warnings": r.warnings})
        self.out.messages.append((chat, message))


def parse_event(doc: Obj) -> ParsedWebhook:
    """Everything one WAHA webhook POST (one event) carried."""
    out = ParsedWebhook()
    event = doc.get("event")
    payload = doc.get("payload")
    ev = _Event(doc, out)
    if not isinstance(payload, dict) or not isinstance(event, str):
        out.skipped += 1
        return out
    if event == "message.ack":
        out.statuses += 1  # receipts of the bot's own messages
    elif payload.get("fromMe") is True and event.startswith("message"):
        out.skipped += 1  # the bot's own messages (and reactions, edits) are no input
    elif event == "message":
        ev.message(payload)
    elif event == "message.reaction":
        r = Reader("payload")
        reaction = r.obj(payload, "reaction", "payload") or {}
        target = r.text(reaction, "messageId", "reaction")
        emoji = r.text(reaction, "text", "reaction")
        if target is None:
            ev.reject("a reaction that names no message", payload)
        else:
            rid = (
                r.text(payload, "id", "payload") or f"{target}:reaction:{payload.get('timestamp')}"
            )
            ev.message(payload, id=rid, type="reaction", text=emoji,
                       reaction=Reaction(message_id=target, emoji=emoji))  # fmt: skip
    elif event == "message.edited":
        r = Reader("payload")
        target = r.text(payload, "editedMessageId", "payload")
        if target is None:
            out.skipped += 1
        else:
            eid = f"{target}:edit:{r.text(payload, 'timestamp') or r.text(payload, 'id')}"
            ev.message(payload, id=eid, type="edit", text=r.text(payload, "body"), target_id=target)
    elif event == "message.revoked":
        r = Reader("payload")
        before = r.obj(payload, "before", "payload") or {}
        after = r.obj(payload, "after", "payload") or {}
        target = first(r.text(payload, "revokedMessageId"), r.text(before, "id", "before"))
        source = after or before
        if target is None or not source:
            out.skipped += 1
        else:
            ev.message(source | {"id": f"{target}:revoke"}, type="revoke", target_id=target)
    elif event == "presence.update":
        r = Reader("payload")
        jid = r.text(payload, "id", "payload")
        presences = r.objects(payload, "presences")
        if ev.session and jid and presences:
            state = r.text(presences[-1][1], "lastKnownPresence", "presences")
            out.typing.append((chat_id(ev.session, jid), (state or "").lower() in TYPING))
        else:
            out.skipped += 1
    else:
        out.skipped += 1  # message.any, session.status, call.*, group.*, poll.*, ...
    return out
