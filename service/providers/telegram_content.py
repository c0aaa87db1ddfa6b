"""What a Telegram Bot API ``Message`` says, kind by kind (pure, no I/O).

A Telegram message has no ``type`` field: its kind is the content field it
carries (``text``, ``photo``, ``voice``...). ``kind(msg)`` names it,
``SERVICE`` when the message only reports a chat event (a member joined, a
message was pinned...), and ``content(reader, msg, kind)`` reads it into the
normalised ``text`` and ``media``. Unreadable fields become warnings on the
reader, never an exception.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from service.models import Media
from service.providers.reader import Obj, Reader, first

SERVICE = "service"
UNKNOWN = "unknown"

# Media kinds: the file's fields -> Media. ``animation`` comes before
# ``document`` (Telegram sets both for a GIF), ``venue`` before ``location``.
MEDIA_KINDS = ("animation", "photo", "video", "video_note", "voice", "audio", "document", "sticker")
CONTENT_KINDS = (
    "text",
    *MEDIA_KINDS,
    "venue",
    "location",
    "contact",
    "poll",
    "dice",
    "game",
    "story",
    "paid_media",
    "checklist",
    "invoice",
    "giveaway",
    "giveaway_winners",
    "web_app_data",
    "users_shared",
    "chat_shared",
    "successful_payment",
    "passport_data",
)

# Fields of service messages: chat events, not something a user wrote.
SERVICE_FIELDS = frozenset(
    (
        "new_chat_members",
        "left_chat_member",
        "new_chat_title",
        "new_chat_photo",
        "delete_chat_photo",
        "group_chat_created",
        "supergroup_chat_created",
        "channel_chat_created",
        "message_auto_delete_timer_changed",
        "migrate_to_chat_id",
        "migrate_from_chat_id",
        "pinned_message",
        "forum_topic_created",
        "forum_topic_edited",
        "forum_topic_closed",
        "forum_topic_reopened",
        "general_forum_topic_hidden",
        "general_forum_topic_unhidden",
        "video_chat_scheduled",
        "video_chat_started",
        "video_chat_ended",
        "video_chat_participants_invited",
        "write_access_allowed",
        "proximity_alert_triggered",
        "boost_added",
        "chat_background_set",
        "connected_website",
        "giveaway_created",
        "giveaway_completed",
        "refunded_payment",
        "gift",
        "unique_gift",
        "paid_message_price_changed",
        "checklist_tasks_done",
        "checklist_tasks_added",
        "direct_message_price_changed",
    )
)


@dataclass(frozen=True, slots=True)
class Content:
    text: str | None = None
    media: Media | None = None


def kind(msg: Obj) -> str:
    """The message's content kind; ``SERVICE`` for a chat event; else ``UNKNOWN``."""
    found = next((k for k in CONTENT_KINDS if msg.get(k) is not None), None)
    if found is not None:
        return found
    if any(msg.get(k) is not None for k in SERVICE_FIELDS):
        return SERVICE
    return UNKNOWN


def content(r: Reader, msg: Obj, mtype: str) -> Content:
    """``text`` and ``media`` of a message of kind ``mtype``. A kind read
    here for its own text keeps it; any other kind (``paid_media``, types
    Telegram adds later) has its caption, if any, as its text."""
    reader = _READERS.get(mtype)
    if reader is not None:
        return reader(r, msg)
    return Content(text=r.text(msg, "caption"))


def _text(r: Reader, msg: Obj) -> Content:
    return Content(text=r.text(msg, "text"))


def _largest(r: Reader, msg: Obj) -> Obj | None:
    """The largest ``PhotoSize`` (by pixels, then bytes) that names a file."""
    best: tuple[float, float] | None = None
    chosen = None
    for where, size in r.objects(msg, "photo"):
        if r.text(size, "file_id", where) is None:
            continue
        w, h = r.number(size, "width", where), r.number(size, "height", where)
        key = ((w or 0.0) * (h or 0.0), r.number(size, "file_size", where) or 0.0)
        if best is None or key > best:
            best, chosen = key, size
    return chosen


def _media(r: Reader, msg: Obj, key: str) -> Content:
    obj = _largest(r, msg) if key == "photo" else r.obj(msg, key)
    if obj is None:
        return Content(text=r.text(msg, "caption"))
    where = key
    animated = None
    if key == "sticker":
        flags = [r.flag(obj, "is_animated", where), r.flag(obj, "is_video", where)]
        animated = any(flags) if any(f is not None for f in flags) else None
    media = Media(
        id=r.text(obj, "file_id", where),
        mime_type=r.text(obj, "mime_type", where),
        caption=r.text(msg, "caption"),
        filename=r.text(obj, "file_name", where),
        voice=True if key == "voice" else False if key == "audio" else None,
        animated=True if key == "animation" else animated,
    )
    text = None if key == "sticker" else first(media.caption, media.filename)
    return Content(text=text, media=media)


def coordinates(r: Reader, loc: Obj | None, where: str) -> str | None:
    """``"<latitude>,<longitude>"`` with every digit Telegram sent; None without both."""
    lat, lon = r.number(loc, "latitude", where), r.number(loc, "longitude", where)
    if lat is None or lon is None:
        return None
    return f"{_coordinate(lat)},{_coordinate(lon)}"


def _coordinate(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def _venue(r: Reader, msg: Obj) -> Content:
    venue = r.obj(msg, "venue")
    named = first(r.text(venue, "title", "venue"), r.text(venue, "address", "venue"))
    if named is not None:
        return Content(text=named)
    return Content(text=coordinates(r, r.obj(venue, "location", "venue"), "venue.location"))


def _location(r: Reader, msg: Obj) -> Content:
    return Content(text=coordinates(r, r.obj(msg, "location"), "location"))


def full_name(r: Reader, obj: Obj | None, where: str) -> str | None:
    parts = (r.text(obj, "first_name", where), r.text(obj, "last_name", where))
    return " ".join(p for p in parts if p) or None


def _contact(r: Reader, msg: Obj) -> Content:
    contact = r.obj(msg, "contact")
    parts = (full_name(r, contact, "contact"), r.text(contact, "phone_number", "contact"))
    return Content(text=" ".join(p for p in parts if p) or None)


def _poll(r: Reader, msg: Obj) -> Content:
    return Content(text=r.text(r.obj(msg, "poll"), "question", "poll"))


def _dice(r: Reader, msg: Obj) -> Content:
    dice = r.obj(msg, "dice")
    parts = (r.text(dice, "emoji", "dice"), r.text(dice, "value", "dice"))
    return Content(text=" ".join(p for p in parts if p) or None)


def _game(r: Reader, msg: Obj) -> Content:
    return Content(text=r.text(r.obj(msg, "game"), "title", "game"))


def _web_app_data(r: Reader, msg: Obj) -> Content:
    data = r.obj(msg, "web_app_data")
    where = "web_app_data"
    return Content(text=first(r.text(data, "button_text", where), r.text(data, "data", where)))


def _media_reader(key: str) -> Callable[[Reader, Obj], Content]:
    return lambda r, msg: _media(r, msg, key)


_READERS: dict[str, Callable[[Reader, Obj], Content]] = {
    "text": _text,
    **{k: _media_reader(k) for k in MEDIA_KINDS},
    "venue": _venue,
    "location": _location,
    "contact": _contact,
    "poll": _poll,
    "dice": _dice,
    "game": _game,
    "web_app_data": _web_app_data,
}
