"""Twilio Programmable Messaging webhooks (SMS, MMS, WhatsApp): signature and form parsing.

Pure functions, no I/O. Twilio POSTs ``application/x-www-form-urlencoded``
parameters, one message (or one status callback) per request, and signs them
in ``X-Twilio-Signature``: the base64 HMAC-SHA1, keyed with the account's
auth token, of the URL Twilio called followed by every POST parameter sorted
by name, each name immediately followed by its value.

The form is read from the raw bytes here (``read_form``), never by a web
framework, so that the check sees exactly the pairs that were signed. A
name sent more than once counts in the signature once per pair; in the
message's ``data`` (a dict of str) the last value is kept.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from urllib.parse import parse_qsl

from service.models import Media, Message, Sender
from service.providers.parsed import BadPayload, ParsedWebhook, ProviderError, Rejected
from service.providers.reader import Reader, first

SOURCE = "twilio"
CHAT_PREFIX = "tw"
SIGNATURE_HEADER = "X-Twilio-Signature"
# The statuses of a message Twilio received; any other status is a callback
# about a message the business sent (queued, sent, delivered, read, failed...).
INBOUND_STATUSES = frozenset({"received", "receiving"})
FAILED_STATUSES = frozenset({"failed", "undelivered"})
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'

Pairs = list[tuple[str, str]]
Form = dict[str, str]

_MEDIA_URL = re.compile(r"MediaUrl([0-9]{1,4})")
_MEDIA_SID = re.compile(r"ME[0-9a-fA-F]{32}")
_PHONE = re.compile(r"\+?[0-9]{6,15}")
_MEDIA_TYPES = ("image", "video", "audio")

__all__ = [
    "EMPTY_TWIML",
    "ParsedWebhook",
    "parse_body",
    "parse_webhook",
    "read_form",
    "signature_valid",
    "signed_url",
]


# -- the form and its signature ---------------------------------------------------


def read_form(body: bytes) -> Pairs:
    """Every ``name=value`` pair of a form body, percent-decoded, in order.

    ValueError when the body is not UTF-8 (raw or once percent-decoded).
    A part without ``=`` is a name with an empty value, as browsers send it.
    """
    try:
        text = body.decode("utf-8")
        return parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise ValueError("the body is not UTF-8 form data") from None


def signed_url(public_url: str, path: str, query: str = "") -> str:
    """The URL Twilio signs: the public base URL (no trailing ``/``), the
    request path, and ``?`` with the raw query string when there is one."""
    return public_url.rstrip("/") + path + (f"?{query}" if query else "")


def expected_signature(auth_token: bytes, url: str, pairs: Pairs) -> str:
    """base64(HMAC-SHA1(token, url + each name and value, sorted by name))."""
    signed = url + "".join(k + v for k, v in sorted(pairs, key=lambda kv: kv[0]))
    digest = hmac.new(auth_token, signed.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def signature_valid(auth_token: bytes, url: str, pairs: Pairs, header: str | None) -> bool:
    """True when ``header`` is the signature of ``pairs`` posted to ``url``.

    An empty token or a missing header never validates.
    """
    if not auth_token or not isinstance(header, str) or not header.strip():
        return False
    expected = expected_signature(auth_token, url, pairs).encode("ascii")
    return hmac.compare_digest(expected, header.strip().encode("utf-8", "replace"))


# -- reading one message ----------------------------------------------------------


def _flag(r: Reader, form: Form, key: str) -> bool:
    value = form.get(key)
    if value is None or value == "":
        return False
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    r.warn(key, f"{value[:20]!r} is not true or false; ignored")
    return False


def _sender(form: Form, sender_id: str) -> Sender:
    """``From`` keys the sender; the phone is ``WaId``, else ``From`` without
    its channel prefix (``whatsapp:``) when what is left is a phone number."""
    number = sender_id.rpartition(":")[2]
    return Sender(
        id=sender_id,
        name=form.get("ProfileName") or None,
        phone=first(form.get("WaId"), number if _PHONE.fullmatch(number) else None),
    )


def _media(r: Reader, form: Form, caption: str | None) -> tuple[str, Media] | None:
    """The first attachment (``MediaUrl<N>`` with the lowest N) and its type."""
    indexes = sorted(int(m[1]) for k in form if (m := _MEDIA_URL.fullmatch(k)))
    count = r.number(form, "NumMedia")
    if count is not None and count != len(indexes):
        r.warn("NumMedia", f"says {form['NumMedia']!r}, the form has {len(indexes)} MediaUrl")
    if not indexes:
        return None
    i = indexes[0]
    url = form[f"MediaUrl{i}"] or None
    mime = form.get(f"MediaContentType{i}") or None
    if mime is None:
        r.warn(f"MediaContentType{i}", "is missing; taken as a document")
    kind = (mime or "").partition("/")[0].lower()
    sid = (url or "").rstrip("/").rpartition("/")[2]
    media = Media(
        id=sid if _MEDIA_SID.fullmatch(sid) else None,
        mime_type=mime,
        caption=caption,
        url=url,
    )
    return (kind if kind in _MEDIA_TYPES else "document"), media


def _location(r: Reader, form: Form) -> str | None:
    """``Label``, else ``Address``, else ``"<Latitude>,<Longitude>"`` as sent."""
    named = first(form.get("Label"), form.get("Address"))
    if named is not None:
        return named
    lat, lon = r.number(form, "Latitude"), r.number(form, "Longitude")
    if lat is None or lon is None:
        return None
    return f"{form['Latitude'].strip()},{form['Longitude'].strip()}"


def _content(r: Reader, form: Form) -> tuple[str, str | None, Media | None]:
    """(type, text, media): a quick-reply button, a location, an attachment or text."""
    body = form.get("Body") or None
    if form.get("ButtonText") or form.get("ButtonPayload"):
        return "button", first(form.get("ButtonText"), body, form.get("ButtonPayload")), None
    if "Latitude" in form or "Longitude" in form:
        return "location", _location(r, form), None
    found = _media(r, form, body)
    if found is not None:
        return found[0], body, found[1]
    return "text", body, None


def _channel(form: Form, to: str) -> dict[str, str]:
    channel = {
        "provider": SOURCE,
        "account_sid": form.get("AccountSid") or None,
        "to": to,
        "messaging_service_sid": form.get("MessagingServiceSid") or None,
    }
    return {k: v for k, v in channel.items() if v is not None}


def _message(form: Form, out: ParsedWebhook) -> None:
    message_id = first(form.get("MessageSid"), form.get("SmsMessageSid"), form.get("SmsSid"))
    sender_id, to = form.get("From") or None, form.get("To") or None
    why = (
        "the form has no MessageSid (nor SmsMessageSid)"
        if message_id is None
        else "the message has no From"
        if sender_id is None
        else "the message has no To"
        if to is None
        else None
    )
    if why is not None or message_id is None or sender_id is None or to is None:
        out.rejected.append(Rejected(why or "unreadable", "form", form))
        return
    r = Reader("form")
    mtype, text, media = _content(r, form)
    referral = {k: v for k, v in form.items() if k.startswith("Referral") and v}
    if set(referral) <= {"ReferralNumMedia"}:  # sent ("0") with every WhatsApp message
        referral = {}
    message = Message(
        id=message_id,
        type=mtype,
        text=text,
        sent_at=None,  # Twilio's inbound webhook carries no timestamp
        source=SOURCE,
        sender=_sender(form, sender_id),
        media=media,
        reply_to=form.get("OriginalRepliedMessageSid") or None,
        forwarded=_flag(r, form, "Forwarded") or _flag(r, form, "FrequentlyForwarded"),
        referral=referral or None,
        warnings=r.warnings,
        data=form,
        channel=_channel(form, to),
    )
    out.messages.append((f"{CHAT_PREFIX}:{to}:{sender_id}", message))


def _status(form: Form) -> str | None:
    """The status of a callback about a message the business sent, else None."""
    for key in ("MessageStatus", "SmsStatus"):
        value = (form.get(key) or "").strip().lower()
        if value and value not in INBOUND_STATUSES:
            return value
    return None


def _failure(form: Form, status: str) -> ProviderError | None:
    code = form.get("ErrorCode") or ""
    if status not in FAILED_STATUSES or not code or code == "0":
        return None
    sid = first(form.get("MessageSid"), form.get("SmsSid"))
    return ProviderError(
        int(code) if code.isdigit() and len(code) < 10 else None,
        f"outbound message {status}",
        form.get("ErrorMessage") or form.get("ChannelStatusMessage") or None,
        f"MessageSid {sid}" if sid else None,
        dict(form),
    )


def parse_webhook(pairs: Pairs) -> ParsedWebhook:
    """What one Twilio messaging webhook carried: one message, or one status.

    A status callback (``MessageStatus``/``SmsStatus`` other than
    ``received``) is counted in ``statuses`` (a failed or undelivered one with
    an ``ErrorCode`` is also reported in ``errors``); a voice webhook
    (``CallSid`` without a message id) is ``skipped``; a message without an
    id, ``From`` or ``To`` is rejected.
    """
    out = ParsedWebhook()
    form: Form = dict(pairs)  # a repeated name: its last value
    status = _status(form)
    if status is not None:
        out.statuses += 1
        failure = _failure(form, status)
        if failure is not None:
            out.errors.append(failure)
    elif "CallSid" in form and not (form.get("MessageSid") or form.get("SmsMessageSid")):
        out.skipped += 1  # a call's webhook pointed at the messaging URL
    else:
        _message(form, out)
    return out


def parse_body(body: bytes) -> ParsedWebhook:
    """``parse_webhook`` of a raw body; BadPayload when it is no readable form."""
    try:
        pairs = read_form(body)
    except ValueError as exc:
        raise BadPayload(str(exc)) from None
    if not pairs:
        raise BadPayload("the body holds no form parameters")
    return parse_webhook(pairs)
