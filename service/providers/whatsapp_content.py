"""What a WhatsApp Cloud API message says, type by type (pure, no I/O).

``content(reader, msg, mtype)`` reads the per-type object (its key is the
message ``type``) into the normalised fields a bot reads: ``text``,
``media``, ``reaction``, ``target_id``. Unreadable fields become warnings on
the reader, never an exception.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from service.models import Media, Reaction
from service.providers.reader import Obj, Reader, first

MEDIA_TYPES = frozenset(("image", "video", "audio", "document", "sticker"))

# Message types Meta documents; a message without a readable ``type`` is
# taken to be the first of these whose object it carries.
KNOWN_TYPES = (
    "text",
    *sorted(MEDIA_TYPES),
    "location",
    "contacts",
    "interactive",
    "button",
    "reaction",
    "order",
    "system",
    "edit",
    "revoke",
    "unsupported",
    "request_welcome",
)


@dataclass(frozen=True, slots=True)
class Content:
    text: str | None = None
    media: Media | None = None
    reaction: Reaction | None = None
    target_id: str | None = None  # edit / revoke: the message they change


def infer_type(msg: Obj) -> str | None:
    return next((t for t in KNOWN_TYPES if isinstance(msg.get(t), dict | list)), None)


def content(r: Reader, msg: Obj, mtype: str) -> Content:
    reader = _READERS.get(mtype)
    if reader is not None:
        return reader(r, msg)
    return Content()  # request_welcome, unsupported and types not known yet


def _text(r: Reader, msg: Obj) -> Content:
    return Content(text=r.text(r.obj(msg, "text"), "body", "text"))


def _media(r: Reader, msg: Obj, key: str) -> Content:
    obj = r.obj(msg, key)
    if obj is None:
        return Content()
    media = Media(
        id=r.text(obj, "id", key),
        mime_type=r.text(obj, "mime_type", key),
        sha256=r.text(obj, "sha256", key),
        caption=r.text(obj, "caption", key),
        filename=r.text(obj, "filename", key),
        url=r.text(obj, "url", key),
        voice=r.flag(obj, "voice", key),
        animated=r.flag(obj, "animated", key),
    )
    return Content(text=first(media.caption, media.filename), media=media)


def _location(r: Reader, msg: Obj) -> Content:
    loc = r.obj(msg, "location")
    named = first(r.text(loc, "name", "location"), r.text(loc, "address", "location"))
    if named is not None:
        return Content(text=named)
    lat, long = r.number(loc, "latitude", "location"), r.number(loc, "longitude", "location")
    if lat is None or long is None:
        return Content()
    return Content(text=f"{_coordinate(lat)},{_coordinate(long)}")


def _coordinate(value: float) -> str:
    """As given: every digit kept (``:g`` would round to about 100 m)."""
    return str(int(value)) if value.is_integer() else repr(value)


def _contacts(r: Reader, msg: Obj) -> Content:
    names = []
    for where, card in r.objects(msg, "contacts"):
        name = r.obj(card, "name", where)
        full = first(
            r.text(name, "formatted_name", f"{where}.name"),
            " ".join(
                filter(
                    None, (r.text(name, k, f"{where}.name") for k in ("first_name", "last_name"))
                )
            ),
        )
        if full:
            names.append(full)
    return Content(text=", ".join(names) or None)


_INTERACTIVE = {"button_reply": "title", "list_reply": "title", "nfm_reply": "body"}


def _interactive(r: Reader, msg: Obj) -> Content:
    inter = r.obj(msg, "interactive")
    if inter is None:
        return Content()
    kind = r.text(inter, "type", "interactive")
    if kind not in _INTERACTIVE:  # missing or unknown type: use the reply object present
        kind = next((k for k in _INTERACTIVE if k in inter), None)
    if kind is None:
        return Content()
    reply = r.obj(inter, kind, "interactive")
    where = f"interactive.{kind}"
    return Content(
        text=first(r.text(reply, _INTERACTIVE[kind], where), r.text(reply, "name", where))
    )


def _button(r: Reader, msg: Obj) -> Content:
    button = r.obj(msg, "button")
    return Content(
        text=first(r.text(button, "text", "button"), r.text(button, "payload", "button"))
    )


def _reaction(r: Reader, msg: Obj) -> Content:
    obj = r.obj(msg, "reaction")
    target = r.text(obj, "message_id", "reaction")
    emoji = r.text(obj, "emoji", "reaction")
    if target is None:
        if obj is not None:
            r.warn("reaction.message_id", "is missing; the reaction is kept as its emoji")
        return Content(text=emoji)
    return Content(text=emoji, reaction=Reaction(message_id=target, emoji=emoji))


def _order(r: Reader, msg: Obj) -> Content:
    order = r.obj(msg, "order")
    text = r.text(order, "text", "order")
    if text is not None:
        return Content(text=text)
    items = []
    for i, item in enumerate(r.items(order, "product_items", "order")):
        if isinstance(item, dict):
            where = f"order.product_items[{i}]"
            qty = r.number(item, "quantity", where)
            product = r.text(item, "product_retailer_id", where) or "?"
            items.append(f"{qty:g} x {product}" if qty is not None else product)
    return Content(text=f"order: {', '.join(items)}" if items else None)


def _system(r: Reader, msg: Obj) -> Content:
    system = r.obj(msg, "system")
    return Content(text=first(r.text(system, "body", "system"), r.text(system, "type", "system")))


def _edit(r: Reader, msg: Obj) -> Content:
    edit = r.obj(msg, "edit")
    target = r.text(edit, "original_message_id", "edit")
    inner = r.obj(edit, "message", "edit")
    if inner is None:
        return Content(target_id=target)
    inner_type = r.text(inner, "type", "edit.message") or infer_type(inner)
    new = content(r, inner, inner_type) if inner_type not in (None, "edit") else Content()
    return Content(text=new.text, media=new.media, target_id=target)


def _revoke(r: Reader, msg: Obj) -> Content:
    return Content(target_id=r.text(r.obj(msg, "revoke"), "original_message_id", "revoke"))


def _media_reader(key: str) -> Callable[[Reader, Obj], Content]:
    return lambda r, msg: _media(r, msg, key)


_READERS: dict[str, Callable[[Reader, Obj], Content]] = {
    "text": _text,
    **{t: _media_reader(t) for t in MEDIA_TYPES},
    "location": _location,
    "contacts": _contacts,
    "interactive": _interactive,
    "button": _button,
    "reaction": _reaction,
    "order": _order,
    "system": _system,
    "edit": _edit,
    "revoke": _revoke,
}
