"""Twilio messaging webhooks: signature and form parsing (service.providers.twilio).

The signature is checked against the worked example of Twilio's "Webhooks
security" page; each fixture of ``tests/fixtures/twilio`` (see its README) is
parsed and its normalised message checked field by field.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.providers.parsed import BadPayload
from service.providers.twilio import (
    expected_signature,
    parse_body,
    parse_webhook,
    read_form,
    signature_valid,
    signed_url,
)
from tests.helpers import FIXTURES as FIXTURES_ROOT

FIXTURES = FIXTURES_ROOT / "twilio"
ALL = sorted(p.name for p in FIXTURES.glob("*.txt"))

# The worked example of Twilio's "Webhooks security" page: auth token 12345,
# a <Gather> POST to this URL with these parameters, and its signature.
DOC_TOKEN = b"12345"
DOC_URL = "https://example.com/myapp.php?foo=1&bar=2"
DOC_PARAMS = [
    ("CallSid", "CA1234567890ABCDE"),
    ("Caller", "+14158675310"),
    ("Digits", "1234"),
    ("From", "+14158675310"),
    ("To", "+18005551212"),
]
DOC_SIGNATURE = "L/OH5YylLD5NRKLltdqwSvS0BnU="
# The same example in Twilio's older revision of the page (URL on mycompany.com).
OLD_DOC_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
OLD_DOC_SIGNATURE = "GvWf1cFY/Q7PnoempGyD5oXAezc="

AC = "ACa1b2c3d4e5f60718293a4b5c6d7e8f90"
BIZ_WA, BIZ = "whatsapp:+15550104477", "+15550104477"
ANA, BRUNO, CARLA = "whatsapp:+15550136724", "whatsapp:+15550158390", "+15550171234"
CHANNEL_WA = {"provider": "twilio", "account_sid": AC, "to": BIZ_WA}
CHANNEL_SMS = {"provider": "twilio", "account_sid": AC, "to": BIZ}
TEMPLATE_SID, EARLIER_SID = (
    "SM9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c01",
    "SM9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c02",
)


def body_of(name: str) -> bytes:
    """A fixture's form body (one line; a trailing newline is not part of it)."""
    return (FIXTURES / name).read_bytes().rstrip(b"\r\n")


def form_of(name: str) -> dict[str, str]:
    return dict(read_form(body_of(name)))


def media_url(message_sid: str, media_sid: str) -> str:
    return (
        f"https://api.twilio.com/2010-04-01/Accounts/{AC}/Messages/{message_sid}/Media/{media_sid}"
    )


# -- the signature ---------------------------------------------------------------


def test_the_documented_example_signs_as_twilio_says() -> None:
    assert expected_signature(DOC_TOKEN, DOC_URL, DOC_PARAMS) == DOC_SIGNATURE
    assert signature_valid(DOC_TOKEN, DOC_URL, DOC_PARAMS, DOC_SIGNATURE)
    assert signature_valid(DOC_TOKEN, DOC_URL, list(reversed(DOC_PARAMS)), DOC_SIGNATURE)
    assert expected_signature(DOC_TOKEN, OLD_DOC_URL, DOC_PARAMS) == OLD_DOC_SIGNATURE


def test_the_documented_example_as_a_posted_form() -> None:
    """Read from the bytes a form POST carries (``+`` percent-encoded), it still signs."""
    pairs = read_form(urlencode(DOC_PARAMS).encode())
    assert pairs == DOC_PARAMS
    assert signature_valid(DOC_TOKEN, DOC_URL, pairs, DOC_SIGNATURE)


@pytest.mark.parametrize(
    ("url", "pairs", "header", "token"),
    [
        (DOC_URL, DOC_PARAMS, DOC_SIGNATURE.lower(), DOC_TOKEN),  # case matters in base64
        (DOC_URL, DOC_PARAMS, DOC_SIGNATURE[:-1], DOC_TOKEN),
        (DOC_URL, DOC_PARAMS, "", DOC_TOKEN),
        (DOC_URL, DOC_PARAMS, None, DOC_TOKEN),
        (DOC_URL, DOC_PARAMS, DOC_SIGNATURE, b""),  # an empty token never validates
        (DOC_URL, DOC_PARAMS, DOC_SIGNATURE, b"54321"),
        (DOC_URL + "&baz=3", DOC_PARAMS, DOC_SIGNATURE, DOC_TOKEN),
        ("http://example.com/myapp.php?foo=1&bar=2", DOC_PARAMS, DOC_SIGNATURE, DOC_TOKEN),
        (DOC_URL, [*DOC_PARAMS[:2], ("Digits", "9999"), *DOC_PARAMS[3:]], DOC_SIGNATURE, DOC_TOKEN),
        (DOC_URL, [*DOC_PARAMS, ("Extra", "")], DOC_SIGNATURE, DOC_TOKEN),
        (DOC_URL, DOC_PARAMS[1:], DOC_SIGNATURE, DOC_TOKEN),
    ],
)
def test_anything_else_fails(url: str, pairs: Any, header: str | None, token: bytes) -> None:
    assert not signature_valid(token, url, pairs, header)


def test_surrounding_whitespace_of_the_header_is_ignored() -> None:
    assert signature_valid(DOC_TOKEN, DOC_URL, DOC_PARAMS, f" {DOC_SIGNATURE}\t")


def test_a_repeated_name_counts_once_per_pair_sorted_by_name_then_in_order() -> None:
    pairs = read_form(b"b=2&a=1&b=1&MediaUrl0=x")
    signed = "https://h/p" + "MediaUrl0x" + "a1" + "b2" + "b1"  # code-point order: M < a < b
    want = base64.b64encode(hmac.new(b"t", signed.encode(), hashlib.sha1).digest()).decode()
    assert expected_signature(b"t", "https://h/p", pairs) == want


def test_non_ascii_values_are_signed_as_utf8() -> None:
    pairs = read_form(b"Body=ol%C3%A1+%F0%9F%99%82")
    assert pairs == [("Body", "olá 🙂")]
    signed = "https://h/p" + "Bodyolá 🙂"
    want = base64.b64encode(hmac.new(b"t", signed.encode(), hashlib.sha1).digest()).decode()
    assert signature_valid(b"t", "https://h/p", pairs, want)
    assert read_form("Body=olá 🙂".encode()) == pairs  # sent unescaped: the same text


@pytest.mark.parametrize(
    ("public", "path", "query", "url"),
    [
        (
            "https://bot.example.com",
            "/webhooks/twilio",
            "",
            "https://bot.example.com/webhooks/twilio",
        ),
        (
            "https://bot.example.com/",
            "/webhooks/twilio",
            "",
            "https://bot.example.com/webhooks/twilio",
        ),
        (
            "https://h/batcher/",
            "/webhooks/twilio",
            "a=1&b=%2B",
            "https://h/batcher/webhooks/twilio?a=1&b=%2B",
        ),
    ],
)
def test_signed_url(public: str, path: str, query: str, url: str) -> None:
    assert signed_url(public, path, query) == url


# -- reading the form ------------------------------------------------------------


def test_read_form_keeps_every_pair_blank_values_and_order() -> None:
    assert read_form(b"A=1&B=&C&A=2&D=a+b%2Bc%26d") == [
        ("A", "1"),
        ("B", ""),
        ("C", ""),
        ("A", "2"),
        ("D", "a b+c&d"),
    ]


@pytest.mark.parametrize("body", [b"Body=\xff", b"Body=%FF", b"Body=%C3"])
def test_a_body_that_is_not_utf8_is_unreadable(body: bytes) -> None:
    with pytest.raises(ValueError, match="UTF-8"):
        read_form(body)
    with pytest.raises(BadPayload):
        parse_body(body)


def test_an_empty_body_is_unreadable() -> None:
    with pytest.raises(BadPayload, match="no form parameters"):
        parse_body(b"")


@given(st.lists(st.tuples(st.text(min_size=1), st.text()), max_size=8))
def test_any_encoded_form_reads_back_and_signs_the_same(pairs: list[tuple[str, str]]) -> None:
    clean = [(k, v) for k, v in pairs if not any("\ud800" <= c <= "\udfff" for c in k + v)]
    read = read_form(urlencode(clean).encode())
    assert read == clean
    assert expected_signature(b"t", "https://h/p", read) == expected_signature(
        b"t", "https://h/p", clean
    )


# -- every fixture ----------------------------------------------------------------

IMG, MMS = "MM7f0d1c2b3a495867a1b2c3d4e5f60701", "MM7f0d1c2b3a495867a1b2c3d4e5f60702"
DOC, AUD = "MM7f0d1c2b3a495867a1b2c3d4e5f60703", "MM7f0d1c2b3a495867a1b2c3d4e5f60704"
ME = "ME0a1b2c3d4e5f60718293a4b5c6d7e80"

# fixture -> (chat id, type, text, sender (id, name, phone), media (id, mime, url) or None)
MESSAGES: dict[str, tuple[str, str, str | None, tuple[Any, ...], tuple[str, ...] | None]] = {
    "sms_text.txt": (
        f"tw:{BIZ}:{CARLA}",
        "text",
        "Hi, is my order #4411 ready? Thanks & regards",
        (CARLA, None, CARLA),
        None,
    ),
    "mms_two_media.txt": (
        f"tw:{BIZ}:{CARLA}",
        "image",
        "two photos of the box",
        (CARLA, None, CARLA),
        (f"{ME}2", "image/png", media_url(MMS, f"{ME}2")),
    ),
    "whatsapp_text.txt": (
        f"tw:{BIZ_WA}:{ANA}",
        "text",
        "olá! preciso mudar o pedido 🙂",
        (ANA, "Ana Costa", "15550136724"),
        None,
    ),
    "whatsapp_image.txt": (
        f"tw:{BIZ_WA}:{ANA}",
        "image",
        "this is the wrong colour",
        (ANA, "Ana Costa", "15550136724"),
        (f"{ME}1", "image/jpeg", media_url(IMG, f"{ME}1")),
    ),
    "whatsapp_document.txt": (
        f"tw:{BIZ_WA}:{BRUNO}",
        "document",
        None,
        (BRUNO, "Bruno Lima", "15550158390"),
        (f"{ME}4", "application/pdf", media_url(DOC, f"{ME}4")),
    ),
    "whatsapp_audio.txt": (
        f"tw:{BIZ_WA}:{BRUNO}",
        "audio",
        None,
        (BRUNO, "Bruno Lima", "15550158390"),
        (f"{ME}5", "audio/ogg", media_url(AUD, f"{ME}5")),
    ),
    "whatsapp_location.txt": (
        f"tw:{BIZ_WA}:{ANA}",
        "location",
        "Loja Centro",
        (ANA, "Ana Costa", "15550136724"),
        None,
    ),
    "whatsapp_location_pin.txt": (
        f"tw:{BIZ_WA}:{BRUNO}",
        "location",
        "38.7223,-9.1393",
        (BRUNO, "Bruno Lima", "15550158390"),
        None,
    ),
    "whatsapp_button.txt": (
        f"tw:{BIZ_WA}:{ANA}",
        "button",
        "Yes, change it",
        (ANA, "Ana Costa", "15550136724"),
        None,
    ),
    "whatsapp_reply.txt": (
        f"tw:{BIZ_WA}:{BRUNO}",
        "text",
        "yes, Thursday works for me",
        (BRUNO, "Bruno Lima", "15550158390"),
        None,
    ),
    "whatsapp_forwarded.txt": (
        f"tw:{BIZ_WA}:{BRUNO}",
        "text",
        "see what my neighbour got",
        (BRUNO, "Bruno Lima", "15550158390"),
        None,
    ),
    "whatsapp_referral.txt": (
        f"tw:{BIZ_WA}:{ANA}",
        "text",
        "Can I get more info on this?",
        (ANA, "Ana Costa", "15550136724"),
        None,
    ),
}
STATUSES = [n for n in ALL if n.startswith("status_")]
OTHERS = {"no_from.txt", "voice_call.txt"}


def test_every_fixture_is_checked_here() -> None:
    assert set(ALL) == set(MESSAGES) | set(STATUSES) | OTHERS


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_message_fixture(name: str) -> None:
    chat, mtype, text, (sid, sname, phone), media = MESSAGES[name]
    out = parse_body(body_of(name))
    assert (out.statuses, out.skipped, out.rejected, out.errors) == (0, 0, [], [])
    [(got_chat, m)] = out.messages
    form = form_of(name)
    assert got_chat == chat
    assert (m.id, m.type, m.text, m.source) == (form["MessageSid"], mtype, text, "twilio")
    assert m.sender is not None
    assert (m.sender.id, m.sender.name, m.sender.phone) == (sid, sname, phone)
    assert (m.sender.user_id, m.sender.username, m.sender.country_code) == (None, None, None)
    if media is None:
        assert m.media is None
    else:
        assert m.media is not None
        assert (m.media.id, m.media.mime_type, m.media.url) == media
        assert m.media.caption == (form["Body"] or None)
    assert m.sent_at is None  # Twilio's inbound webhook carries no timestamp
    assert m.data == form  # the whole form, as received
    assert m.channel == (CHANNEL_WA if chat.startswith("tw:whatsapp:") else CHANNEL_SMS)
    assert (m.warnings, m.errors, m.reaction, m.target_id) == ([], [], None, None)
    expected_reply = {"whatsapp_button.txt": TEMPLATE_SID, "whatsapp_reply.txt": EARLIER_SID}
    assert m.reply_to == expected_reply.get(name)
    assert m.forwarded is (name == "whatsapp_forwarded.txt")
    assert (m.referral is not None) is (name == "whatsapp_referral.txt")


def test_referral_keeps_the_referral_parameters_as_sent() -> None:
    [(_, m)] = parse_body(body_of("whatsapp_referral.txt")).messages
    form = form_of("whatsapp_referral.txt")
    assert m.referral == {k: v for k, v in form.items() if k.startswith("Referral")}
    assert m.referral["ReferralSourceType"] == "ad"


def test_every_media_of_an_mms_stays_in_data() -> None:
    [(_, m)] = parse_body(body_of("mms_two_media.txt")).messages
    assert m.data["NumMedia"] == "2"
    assert m.data["MediaContentType1"] == "video/mp4"
    assert m.data["MediaUrl1"] == media_url(MMS, f"{ME}3")


def test_channel_metadata_passes_through_untouched() -> None:
    [(_, m)] = parse_body(body_of("whatsapp_text.txt")).messages
    assert m.data["ChannelMetadata"].startswith('{"type":"whatsapp"')


@pytest.mark.parametrize("name", STATUSES)
def test_status_callbacks_are_counted_not_batched(name: str) -> None:
    out = parse_body(body_of(name))
    assert (out.statuses, out.messages, out.rejected, out.skipped) == (1, [], [], 0)
    if name == "status_whatsapp_undelivered.txt":
        [error] = out.errors
        assert (error.code, error.title) == (63016, "outbound message undelivered")
        assert error.details == f"MessageSid {TEMPLATE_SID}" and error.raw == form_of(name)
    else:
        assert out.errors == []


def test_a_voice_webhook_is_skipped() -> None:
    out = parse_body(body_of("voice_call.txt"))
    assert (out.skipped, out.messages, out.rejected, out.statuses) == (1, [], [], 0)


def test_a_message_without_from_is_rejected_whole() -> None:
    out = parse_body(body_of("no_from.txt"))
    [rejected] = out.rejected
    assert out.messages == [] and rejected.reason == "the message has no From"
    assert (rejected.path, rejected.raw) == ("form", form_of("no_from.txt"))


# -- edge cases ---------------------------------------------------------------------


def inbound(**extra: str) -> list[tuple[str, str]]:
    base = {"MessageSid": "SM1", "From": ANA, "To": BIZ_WA, "Body": "hi", "SmsStatus": "received"}
    return [(k, v) for k, v in (base | extra).items() if v != "-"]


def only(pairs: list[tuple[str, str]]) -> Any:
    [(_, m)] = parse_webhook(pairs).messages
    return m


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"To": "-"}, "the message has no To"),
        ({"To": ""}, "the message has no To"),
        ({"From": ""}, "the message has no From"),
        ({"MessageSid": "-"}, "the form has no MessageSid (nor SmsMessageSid)"),
    ],
)
def test_unassignable_messages_are_rejected(extra: dict[str, str], reason: str) -> None:
    out = parse_webhook(inbound(**extra))
    assert out.messages == [] and [r.reason for r in out.rejected] == [reason]


def test_the_id_falls_back_to_sms_message_sid() -> None:
    assert only(inbound(MessageSid="-", SmsMessageSid="SM2")).id == "SM2"


def test_a_repeated_name_keeps_its_last_value_in_data() -> None:
    m = only([*inbound(), ("Body", "second")])
    assert (m.text, m.data["Body"]) == ("second", "second")


@pytest.mark.parametrize("status", ["received", "receiving", "RECEIVED"])
def test_inbound_statuses_are_messages(status: str) -> None:
    assert only(inbound(SmsStatus=status, MessageStatus=status)).text == "hi"


@pytest.mark.parametrize("status", ["queued", "sent", "delivered", "read", "failed", "accepted"])
def test_other_statuses_are_status_callbacks(status: str) -> None:
    out = parse_webhook(inbound(SmsStatus="-", MessageStatus=status))
    assert (out.statuses, out.messages) == (1, [])


def test_a_failed_status_without_error_code_reports_nothing() -> None:
    out = parse_webhook(inbound(MessageStatus="failed", SmsStatus="failed", ErrorCode=""))
    assert (out.statuses, out.errors) == (1, [])


def test_an_odd_error_code_is_kept_without_a_number() -> None:
    out = parse_webhook(inbound(MessageStatus="failed", ErrorCode="E42", ErrorMessage="x"))
    [error] = out.errors
    assert (error.code, error.message) == (None, "x")


def test_sender_phone_is_the_from_number_when_there_is_no_wa_id() -> None:
    assert only(inbound()).sender.phone == "+15550136724"
    assert only(inbound(WaId="15550136724")).sender.phone == "15550136724"
    assert only(inbound(From="messenger:1234567890123456789")).sender.phone is None


def test_media_odd_parts_are_warned_about() -> None:
    m = only(inbound(NumMedia="2", MediaUrl0="https://h/Media/x"))
    assert m.type == "document" and m.media.mime_type is None and m.media.id is None
    assert m.warnings == [
        "NumMedia says '2', the form has 1 MediaUrl",
        "MediaContentType0 is missing; taken as a document",
    ]
    assert only(inbound(NumMedia="two")).warnings == ["NumMedia is not a number; ignored"]


def test_the_lowest_media_index_is_the_first() -> None:
    m = only(
        inbound(
            NumMedia="2",
            MediaUrl1="https://h/b",
            MediaContentType1="video/mp4",
            MediaUrl0="https://h/a",
            MediaContentType0="audio/amr",
        )
    )
    assert (m.type, m.media.url) == ("audio", "https://h/a")


def test_location_odd_parts() -> None:
    m = only(inbound(Body="", Latitude="north", Longitude="-8.6"))
    assert (m.type, m.text, m.warnings) == ("location", None, ["Latitude is not a number; ignored"])
    assert only(inbound(Latitude="1", Longitude="2", Address="Rua 1")).text == "Rua 1"


def test_button_text_falls_back_to_body_then_payload() -> None:
    assert only(inbound(ButtonPayload="p1")).text == "hi"
    assert only(inbound(Body="", ButtonPayload="p1")).text == "p1"


def test_forwarded_flags() -> None:
    assert only(inbound(FrequentlyForwarded="true")).forwarded is True
    assert only(inbound(Forwarded="false")).forwarded is False
    m = only(inbound(Forwarded="yes"))
    assert (m.forwarded, m.warnings) == (False, ["Forwarded 'yes' is not true or false; ignored"])


def test_channel_names_the_messaging_service_when_there_is_one() -> None:
    m = only(inbound(AccountSid=AC, MessagingServiceSid="MG1"))
    assert m.channel == CHANNEL_WA | {"messaging_service_sid": "MG1"}
    assert only(inbound()).channel == {"provider": "twilio", "to": BIZ_WA}
