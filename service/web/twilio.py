"""The Twilio messaging webhook (SMS, MMS, WhatsApp): ``POST /webhooks/twilio``.

With ``BATCHER_TWILIO_AUTH_TOKEN`` set, every POST must carry a valid
``X-Twilio-Signature`` over the URL Twilio called, rebuilt from
``BATCHER_PUBLIC_URL`` (the base URL as Twilio sees the service, e.g. behind
a proxy) plus the request path and raw query string, and over the form
parameters read from the raw body; otherwise it is answered 401 before
anything is parsed. The same endpoint takes inbound messages and status
callbacks; both are answered 200 with an empty TwiML ``<Response/>`` once
stored (Twilio then sends no reply of its own).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from service.providers.parsed import BadPayload, ParsedWebhook
from service.providers.twilio import (
    EMPTY_TWIML,
    SIGNATURE_HEADER,
    parse_body,
    read_form,
    signature_valid,
    signed_url,
)
from service.web.state import AppState
from service.web.webhook import Refusal, Webhook

ENDPOINT = "twilio"
FORM = "application/x-www-form-urlencoded"


def request_url(public_url: str, request: Request) -> str:
    """The URL Twilio signed: ``public_url`` + this request's path and raw query."""
    query = request.scope.get("query_string", b"")
    return signed_url(public_url, request.url.path, query.decode("latin-1"))


def check(state: AppState, request: Request, body: bytes) -> Refusal | None:
    token = state.settings.twilio_auth_token
    if token is None:
        return None  # development on loopback (serve refuses other hosts)
    public_url = state.settings.public_url
    if not public_url:
        return Refusal(
            401,
            "BATCHER_PUBLIC_URL is not set: the X-Twilio-Signature cannot be verified "
            "(Twilio signs the public URL it calls)",
        )
    header = request.headers.get(SIGNATURE_HEADER)
    if not header:
        return Refusal(401, f"missing {SIGNATURE_HEADER}")
    try:
        pairs = read_form(body)
    except ValueError:
        return Refusal(401, f"the body is no form: {SIGNATURE_HEADER} cannot be verified")
    url = request_url(public_url, request)
    if not signature_valid(token.get_secret_value().encode(), url, pairs, header):
        return Refusal(401, f"invalid {SIGNATURE_HEADER} (for BATCHER_PUBLIC_URL + path)")
    return None


def parse(state: AppState, request: Request, body: bytes) -> ParsedWebhook:
    declared = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if declared and declared != FORM:
        raise BadPayload(f"the body must be {FORM}, not {declared[:60]}")
    return parse_body(body)


def reply() -> Response:
    """Empty TwiML: acknowledged, and Twilio sends nothing back to the user."""
    return Response(EMPTY_TWIML, media_type="text/xml")


receive = Webhook(ENDPOINT, check, parse, reply).receive
