"""Telegram Bot API webhooks (setWebhook): secret token check and Update parsing (pure, no I/O).

Telegram POSTs one ``Update`` per request: an ``update_id`` and at most one
object, whose key names the kind of update. ``parse_update`` turns

- ``message`` and ``channel_post`` into a message of the chat, its ``id`` the
  ``message_id`` (unique in its chat: a resent update is a duplicate);
- ``edited_message`` and ``edited_channel_post`` into a message of type
  ``edit`` (id ``<message_id>:edit:<edit_date>``, ``target_id`` the original);
- ``callback_query`` (an inline keyboard button tapped under a message the
  bot sent) into a message of type ``button``;
- ``message_reaction`` into a message of type ``reaction``;

and counts everything else as skipped: service messages (members joining,
pins...), inline queries, member updates, polls, business updates. A
message that cannot be given to a chat comes back in ``rejected``, the whole
Update kept with it. JSON ``null`` counts as a missing key.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from typing import Any

from service.models import (
    MAX_DATA_DEPTH,
    NON_FINITE,
    Message,
    Reaction,
    Sender,
    nesting_exceeds,
    non_finite,
)
from service.providers.parsed import ParsedWebhook, Rejected
from service.providers.reader import Reader, first
from service.providers.telegram_content import SERVICE, content, full_name, kind

SOURCE = "telegram"
CHAT_PREFIX = "tg"
HEADER = "X-Telegram-Bot-Api-Secret-Token"
CHANNEL = {"provider": SOURCE}
MAX_DEPTH = MAX_DATA_DEPTH

MESSAGES = ("message", "channel_post")
EDITS = ("edited_message", "edited_channel_post")

Obj = dict[str, Any]

__all__ = ["HEADER", "ParsedWebhook", "Rejected", "parse_update", "secret_token_valid"]


def secret_token_valid(secret: bytes, header: str | bytes | None) -> bool:
    """True when the header carries exactly the ``secret_token`` given to setWebhook.

    Compared in constant time over bytes. An empty secret never validates.
    """
    if not secret or header is None:
        return False
    if isinstance(header, str):
        try:
            header = header.encode("latin-1")  # how HTTP header bytes were decoded
        except UnicodeEncodeError:
            return False
    return hmac.compare_digest(header, secret)


# -- who and where --------------------------------------------------------------


def _of_chat(r: Reader, chat: Obj, where: str) -> Sender | None:
    key = r.text(chat, "id", where)
    if key is None:
        return None
    name = first(r.text(chat, "title", where), full_name(r, chat, where))
    return Sender(id=key, name=name, username=r.text(chat, "username", where))


def _of_user(r: Reader, user: Obj | None, where: str) -> Sender | None:
    key = r.text(user, "id", where)
    if user is None or key is None:
        return None
    return Sender(id=key, name=full_name(r, user, where), username=r.text(user, "username", where))


def _sender(r: Reader, obj: Obj, chat: Obj, user_key: str = "from") -> Sender | None:
    """``sender_chat`` (a channel, or a group's anonymous admin: ``from`` is
    then a placeholder), else the user, else the chat itself."""
    for key in ("sender_chat", "actor_chat"):
        on_behalf = r.obj(obj, key)
        if on_behalf is not None and (found := _of_chat(r, on_behalf, key)) is not None:
            return found
    return _of_user(r, r.obj(obj, user_key), user_key) or _of_chat(r, chat, "chat")


def _topic(r: Reader, msg: Obj) -> str | None:
    """The forum topic (``message_thread_id``) of a message sent to one, else None."""
    thread = r.text(msg, "message_thread_id")
    return thread if r.flag(msg, "is_topic_message") else None


def _chat_id(chat_key: str, topic: str | None) -> str:
    """``tg:<chat.id>``; a forum topic is a chat of its own, ``tg:<chat.id>:t:<thread>``."""
    if topic is not None:
        return f"{CHAT_PREFIX}:{chat_key}:t:{topic}"
    return f"{CHAT_PREFIX}:{chat_key}"


def _reply_to(r: Reader, msg: Obj, topic: str | None) -> str | None:
    """The message answered. In a forum topic every message that answers
    nothing names the topic's first message (its thread id): not a reply."""
    target = r.text(r.obj(msg, "reply_to_message"), "message_id", "reply_to_message")
    return None if topic is not None and target == topic else target


def _forwarded(msg: Obj) -> bool:
    keys = ("forward_origin", "forward_from", "forward_from_chat", "forward_sender_name")
    return any(msg.get(k) is not None for k in (*keys, "forward_date"))


def _seconds(r: Reader, obj: Obj, key: str, now_s: float) -> float:
    """Unix seconds; the receive time, with a warning, when unreadable."""
    value = obj.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 10**12:
        return float(value)
    problem = "is missing" if value is None else f"{str(value)[:40]!r} is not Unix seconds"
    r.warn(key, f"{problem}; the receive time is used")
    return now_s


# -- the kinds of update ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Update:
    doc: Obj
    key: str  # the Update's field holding the object
    now_s: float
    out: ParsedWebhook

    def reject(self, why: str) -> None:
        self.out.rejected.append(Rejected(why, self.key, self.doc))

    @property
    def tag(self) -> str:
        """``u<update_id>``: names an event whose object gives no time."""
        update_id = self.doc.get("update_id")
        return f"u{update_id}" if isinstance(update_id, int) else "u?"

    def add(self, chat_id: str, message: Message) -> None:
        self.out.messages.append((chat_id, message))


def _where(u: _Update, obj: Obj, r: Reader) -> tuple[Obj, str] | None:
    """The object's chat and its id, or None (rejected: no chat to give it to)."""
    chat = r.obj(obj, "chat")
    key = r.text(chat, "id", "chat")
    if chat is None or key is None:
        u.reject(f"the {u.key} names no chat (chat.id)")
        return None
    if nesting_exceeds(obj, MAX_DEPTH):
        u.reject(f"the {u.key} nests deeper than {MAX_DEPTH} levels")
        return None
    if non_finite(obj):
        u.reject(NON_FINITE)
        return None
    return chat, key


def _message(u: _Update, msg: Obj, *, edit: bool) -> None:
    r = Reader(u.key)
    mid = r.text(msg, "message_id")
    if mid is None:
        u.reject(f"the {u.key} has no message_id")
        return
    where = _where(u, msg, r)
    if where is None:
        return
    chat, chat_key = where
    mtype = kind(msg)
    if mtype == SERVICE and not edit:
        u.out.skipped += 1  # a chat event: nobody wrote it
        return
    body = content(r, msg, mtype)
    topic = _topic(r, msg)
    fields: dict[str, Any] = {"id": mid, "type": mtype}
    if edit:
        stamp = r.text(msg, "edit_date")
        if stamp is None:  # (warned about below, as the edit's sent_at)
            stamp = u.tag
        fields = {"id": f"{mid}:edit:{stamp}", "type": "edit", "target_id": mid}
    message = Message(
        **fields,
        text=body.text,
        sent_at=_seconds(r, msg, "edit_date" if edit else "date", u.now_s),
        source=SOURCE,
        sender=_sender(r, msg, chat),
        media=body.media,
        reply_to=_reply_to(r, msg, topic),
        forwarded=_forwarded(msg),
        warnings=r.warnings,
        data=msg,
        channel=CHANNEL,
    )
    u.add(_chat_id(chat_key, topic), message)


def _button_label(r: Reader, msg: Obj, data: str | None) -> str | None:
    """The text of the inline keyboard button whose ``callback_data`` is ``data``."""
    markup = r.obj(msg, "reply_markup", "message")
    rows = markup.get("inline_keyboard") if markup is not None else None
    for row in rows if isinstance(rows, list) else ():
        for button in row if isinstance(row, list) else ():
            if isinstance(button, dict) and data and button.get("callback_data") == data:
                label = button.get("text")
                return label if isinstance(label, str) and label else None
    return None


def _callback(u: _Update, query: Obj) -> None:
    r = Reader(u.key)
    qid = r.text(query, "id")
    msg = r.obj(query, "message")
    if msg is None:
        u.out.skipped += 1  # a button under an inline-mode message: no chat
        return
    if qid is None:
        u.reject("the callback_query has no id")
        return
    where = _where(u, msg, Reader(f"{u.key}.message"))
    if where is None:
        return
    chat, chat_key = where
    data = r.text(query, "data")
    message = Message(
        id=f"cb:{qid}",
        type="button",
        text=first(_button_label(r, msg, data), data, r.text(query, "game_short_name")),
        source=SOURCE,
        sender=_sender(r, query, chat),
        reply_to=r.text(msg, "message_id", "message"),
        warnings=r.warnings,
        data=query,
        channel=CHANNEL,
    )
    u.add(_chat_id(chat_key, _topic(Reader(""), msg)), message)


def _reactions(r: Reader, obj: Obj, key: str) -> list[str]:
    """A list of ``ReactionType`` as text: the emoji, or for a custom emoji
    or a paid reaction (which have none) the reaction's type."""
    found = []
    for where, item in r.objects(obj, key):
        label = r.text(item, "emoji", where) if item.get("type") in (None, "emoji") else None
        label = label or r.text(item, "type", where)
        if label is not None:
            found.append(label)
    return found


def _reaction(u: _Update, obj: Obj) -> None:
    r = Reader(u.key)
    mid = r.text(obj, "message_id")
    if mid is None:
        u.reject("the message_reaction has no message_id")
        return
    where = _where(u, obj, r)
    if where is None:
        return
    chat, chat_key = where
    sender = _sender(r, obj, chat, user_key="user")
    new = _reactions(r, obj, "new_reaction")
    old = set(_reactions(r, obj, "old_reaction"))
    emoji = next((e for e in new if e not in old), new[0] if new else None)
    stamp = r.text(obj, "date") or u.tag
    message = Message(
        id=f"{mid}:reaction:{sender.id if sender else '?'}:{stamp}",
        type="reaction",
        text=emoji,
        sent_at=_seconds(r, obj, "date", u.now_s),
        source=SOURCE,
        sender=sender,
        reaction=Reaction(message_id=mid, emoji=emoji),
        warnings=r.warnings,
        data=obj,
        channel=CHANNEL,
    )
    u.add(_chat_id(chat_key, None), message)


def parse_update(doc: Obj, *, now_s: float | None = None) -> ParsedWebhook:
    """What one decoded Update carries. ``now_s`` (default: now) stands in
    for an unreadable ``date``."""
    out = ParsedWebhook()
    now = time.time() if now_s is None else now_s
    handled = (*MESSAGES, *EDITS, "callback_query", "message_reaction")
    key = next((k for k in handled if doc.get(k) is not None), None)
    if key is None:
        out.skipped += 1  # inline queries, member updates, polls, business updates...
        return out
    u = _Update(doc, key, now, out)
    obj = doc[key]
    if not isinstance(obj, dict):
        u.reject(f"{key} is not an object")
    elif key in MESSAGES:
        _message(u, obj, edit=False)
    elif key in EDITS:
        _message(u, obj, edit=True)
    elif key == "callback_query":
        _callback(u, obj)
    else:
        _reaction(u, obj)
    return out
