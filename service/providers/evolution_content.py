"""What a Baileys message object (Evolution API's ``data.message``) says, type by type.

Pure, no I/O. ``content(reader, message, message_type, message_id)`` finds the
content key (``conversation``, ``imageMessage``, ...; through the wrappers
``ephemeralMessage``, ``viewOnceMessage*``, ``documentWithCaptionMessage``,
``deviceSentMessage``) and reads it into the normalised fields a bot reads:
``type`` (WhatsApp's vocabulary: ``text``, ``image``, ...), ``text``,
``media``, ``reaction``, and the content object itself (where a
``contextInfo`` may be). Unreadable fields become warnings on the reader.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.models import Media, Reaction, Sender
from service.providers.reader import Obj, Reader, first

# Content key -> the message ``type`` delivered (the Cloud API's names where they overlap).
TYPES = {
    "conversation": "text",
    "extendedTextMessage": "text",
    "imageMessage": "image",
    "videoMessage": "video",
    "ptvMessage": "video",
    "audioMessage": "audio",
    "documentMessage": "document",
    "stickerMessage": "sticker",
    "locationMessage": "location",
    "liveLocationMessage": "location",
    "contactMessage": "contacts",
    "contactsArrayMessage": "contacts",
    "reactionMessage": "reaction",
    "buttonsResponseMessage": "button",
    "templateButtonReplyMessage": "button",
    "listResponseMessage": "interactive",
    "interactiveResponseMessage": "interactive",
    "pollCreationMessage": "poll",
    "pollCreationMessageV2": "poll",
    "pollCreationMessageV3": "poll",
    "protocolMessage": "protocol",
}
WRAPPERS = (
    "ephemeralMessage",
    "viewOnceMessage",
    "viewOnceMessageV2",
    "viewOnceMessageV2Extension",
    "documentWithCaptionMessage",
    "deviceSentMessage",
)
_NOT_CONTENT = frozenset(("messageContextInfo", "senderKeyDistributionMessage"))


@dataclass(frozen=True, slots=True)
class Content:
    type: str
    text: str | None = None
    media: Media | None = None
    reaction: Reaction | None = None
    inner: Obj | None = None  # the content object (``imageMessage``...), None for ``conversation``
    key: str | None = None  # the content key found, None when there is none


def unwrap(message: Obj) -> Obj:
    """The message inside the wrappers (at most a few levels)."""
    for _ in range(4):
        inner = next(
            (
                w["message"]
                for k in WRAPPERS
                if isinstance(w := message.get(k), dict) and isinstance(w.get("message"), dict)
            ),
            None,
        )
        if inner is None:
            return message
        message = inner
    return message


def content_key(message: Obj, message_type: str | None) -> str | None:
    """``messageType`` when the message carries it, else the first content key."""
    if message_type and message_type in message:
        return message_type
    return next(
        (
            k
            for k, v in message.items()
            if (k == "conversation" or k.endswith("Message"))
            and k not in _NOT_CONTENT
            and v not in (None, "", {})
        ),
        None,
    )


def type_of(key: str) -> str:
    """``imageMessage`` -> ``image``; a key not listed loses its ``Message`` suffix."""
    return TYPES.get(key) or key.removesuffix("Message") or key


def content(r: Reader, message: Obj, message_type: str | None, message_id: str | None) -> Content:
    message = unwrap(message)
    key = content_key(message, message_type)
    if key is None:
        return Content(type="unknown")
    where = f"message.{key}"
    if key == "conversation":
        return Content(type="text", text=r.text(message, key, "message"), key=key)
    inner = r.obj(message, key, "message")
    reader = _READERS.get(key)
    got = reader(r, inner, where, message, message_id) if reader and inner is not None else None
    text, media, reaction = got or (None, None, None)
    return Content(type_of(key), text, media, reaction, inner, key)


_Read = tuple[str | None, Media | None, Reaction | None]


def _text(r: Reader, obj: Obj, where: str, _m: Obj, _id: str | None) -> _Read:
    return r.text(obj, "text", where), None, None


def _media(r: Reader, obj: Obj, where: str, message: Obj, message_id: str | None) -> _Read:
    kind = where.removeprefix("message.")
    media = Media(
        id=message_id,  # Evolution fetches the file by the message's key.id
        mime_type=r.text(obj, "mimetype", where),
        sha256=sha256_of(r, obj, where),
        caption=r.text(obj, "caption", where),
        filename=r.text(obj, "fileName", where),
        url=first(r.text(message, "mediaUrl", "message"), r.text(obj, "url", where)),
        voice=r.flag(obj, "ptt", where) if kind == "audioMessage" else None,
        animated=r.flag(obj, "isAnimated", where) if kind == "stickerMessage" else None,
    )
    return first(media.caption, media.filename, r.text(obj, "title", where)), media, None


def sha256_of(r: Reader, obj: Obj, where: str) -> str | None:
    """``fileSha256`` as base64: sent as a base64 string, a ``{"0": 12, ...}``
    object (a serialised byte array) or a ``{"type": "Buffer", "data": [...]}``."""
    value: Any = obj.get("fileSha256")
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and value.get("type") == "Buffer":
        value = value.get("data")
    elif isinstance(value, dict) and all(k.isdigit() for k in value):
        value = [value[k] for k in sorted(value, key=int)]
    if isinstance(value, list) and all(
        isinstance(b, int) and not isinstance(b, bool) and 0 <= b < 256 for b in value
    ):
        return base64.b64encode(bytes(value)).decode("ascii")
    r.warn(f"{where}.fileSha256", "is not bytes; ignored")
    return None


def _location(r: Reader, obj: Obj, where: str, _m: Obj, _id: str | None) -> _Read:
    named = first(
        r.text(obj, "name", where), r.text(obj, "address", where), r.text(obj, "caption", where)
    )
    if named is not None:
        return named, None, None
    lat = r.number(obj, "degreesLatitude", where)
    long = r.number(obj, "degreesLongitude", where)
    if lat is None or long is None:
        return None, None, None
    return f"{_coordinate(lat)},{_coordinate(long)}", None, None


def _coordinate(value: float) -> str:
    """As given: every digit kept."""
    return str(int(value)) if value.is_integer() else repr(value)


def _contact(r: Reader, obj: Obj, where: str, _m: Obj, _id: str | None) -> _Read:
    return r.text(obj, "displayName", where), None, None


def _contacts(r: Reader, obj: Obj, where: str, _m: Obj, _id: str | None) -> _Read:
    names = [n for _, card in r.objects(obj, "contacts") if (n := r.text(card, "displayName"))]
    return first(r.text(obj, "displayName", where), ", ".join(names)), None, None


def _reaction(r: Reader, obj: Obj, where: str, _m: Obj, _id: str | None) -> _Read:
    target = r.text(r.obj(obj, "key", where), "id", f"{where}.key")
    emoji = r.text(obj, "text", where)  # empty: the reaction was taken back
    if target is None:
        r.warn(f"{where}.key.id", "is missing; the reaction is kept as its emoji")
        return emoji, None, None
    return emoji, None, Reaction(message_id=target, emoji=emoji)


def _buttons(r: Reader, obj: Obj, where: str, _m: Obj, _id: str | None) -> _Read:
    text = first(
        r.text(obj, "selectedDisplayText", where),
        r.text(obj, "selectedButtonId", where),
        r.text(obj, "selectedId", where),
    )
    return text, None, None


def _list(r: Reader, obj: Obj, where: str, _m: Obj, _id: str | None) -> _Read:
    single = r.obj(obj, "singleSelectReply", where)
    row = r.text(single, "selectedRowId", f"{where}.singleSelectReply")
    return first(r.text(obj, "title", where), row), None, None


def _interactive(r: Reader, obj: Obj, where: str, _m: Obj, _id: str | None) -> _Read:
    body = r.text(r.obj(obj, "body", where), "text", f"{where}.body")
    flow = r.obj(obj, "nativeFlowResponseMessage", where)
    return first(body, r.text(flow, "name", f"{where}.nativeFlowResponseMessage")), None, None


def _poll(r: Reader, obj: Obj, where: str, _m: Obj, _id: str | None) -> _Read:
    return r.text(obj, "name", where), None, None


_READERS: dict[str, Callable[[Reader, Obj, str, Obj, str | None], _Read]] = {
    "extendedTextMessage": _text,
    **{k: _media for k, t in TYPES.items() if t in ("image", "video", "audio", "document")},
    "stickerMessage": _media,
    "locationMessage": _location,
    "liveLocationMessage": _location,
    "contactMessage": _contact,
    "contactsArrayMessage": _contacts,
    "reactionMessage": _reaction,
    "buttonsResponseMessage": _buttons,
    "templateButtonReplyMessage": _buttons,
    "listResponseMessage": _list,
    "interactiveResponseMessage": _interactive,
    **{k: _poll for k, t in TYPES.items() if t == "poll"},
}


# -- jids, numbers, protocol messages (shared with service.providers.evolution) ---------------

_EDIT, _REVOKE = ("14", "MESSAGE_EDIT"), ("0", "REVOKE")  # protocolMessage.type


def user_of(jid: str | None) -> str | None:
    """``15550136724:12@s.whatsapp.net`` -> ``15550136724``."""
    return jid.partition("@")[0].partition(":")[0] if jid else None


def phone_of(jid: str | None) -> str | None:
    """The phone number of a phone-number jid; None for ``@lid``, groups..."""
    if jid and jid.partition("@")[2] in ("s.whatsapp.net", "c.us"):
        user = user_of(jid)
        return user if user and user.isdigit() else None
    return None


def person(jid: str, alt: str | None, name: str | None) -> Sender:
    """``id`` is the jid as sent; ``user_id`` the ``@lid`` jid when one is known."""
    lid = jid if jid.endswith("@lid") else alt if alt and alt.endswith("@lid") else None
    return Sender(id=jid, name=name, phone=phone_of(jid) or phone_of(alt), user_id=lid)


def integer(value: Any) -> int | None:
    """A non-negative int from an int, a string of digits or a Long ``{low, high}``."""
    if isinstance(value, dict) and isinstance(value.get("low"), int):
        high = value.get("high")
        value = (high if isinstance(high, int) else 0) * 2**32 + (value["low"] % 2**32)
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def protocol_kind(value: object, edited: bool) -> str | None:
    """protocolMessage.type -> "edit" / "revoke" / None (other protocol messages)."""
    text = str(value) if isinstance(value, int | str) and not isinstance(value, bool) else None
    if text in _EDIT or (text is None and edited):
        return "edit"
    return "revoke" if text in _REVOKE else None


def first_obj(a: Obj | None, b: Obj | None, key: str) -> Obj | None:
    """``a`` itself, else ``b[key]`` when it is an object."""
    if a is not None:
        return a
    value = b.get(key) if b is not None else None
    return value if isinstance(value, dict) else None
