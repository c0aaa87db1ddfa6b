"""The WhatsApp Cloud API webhook: ``GET`` handshake, ``POST`` events.

``POST`` answers 200 only once everything the request carried is stored in
Redis (its messages in one round trip); Meta retries anything else, and
message ids (wamid) make its retries idempotent. The signature is checked
over the raw bytes before anything is parsed. A body that is not a JSON
object is answered 400; anything in a JSON object is stored as well as it can
be (see ``service.web.inbound``), never refused for one odd message.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from service.providers.parsed import ParsedWebhook
from service.providers.whatsapp import parse_webhook, signature_valid
from service.web.body import refused
from service.web.state import AppState, app_state
from service.web.webhook import Refusal, Webhook, json_object

ENDPOINT = "whatsapp"


async def verify(request: Request) -> Response:
    """Meta's verification handshake: echo ``hub.challenge`` if the token matches."""
    settings = app_state(request).settings
    q = request.query_params
    token = settings.whatsapp_verify_token
    given = q.get("hub.verify_token", "")
    if token is None:
        why = "BATCHER_WHATSAPP_VERIFY_TOKEN is not set"
    elif q.get("hub.mode") != "subscribe":
        why = "hub.mode is not 'subscribe'"
    elif not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
        why = "hub.verify_token does not match BATCHER_WHATSAPP_VERIFY_TOKEN"
    else:
        return PlainTextResponse(q.get("hub.challenge", ""))
    refused("whatsapp verify", 403, why)
    return PlainTextResponse("forbidden", status_code=403)


def check(state: AppState, request: Request, body: bytes) -> Refusal | None:
    secret = state.settings.whatsapp_app_secret
    if secret is not None and not signature_valid(
        secret.get_secret_value().encode(), body, request.headers.get("x-hub-signature-256")
    ):
        return Refusal(401, "missing or invalid X-Hub-Signature-256")
    return None


def parse(state: AppState, request: Request, body: bytes) -> ParsedWebhook:
    doc = json_object(body, "a JSON object")
    return parse_webhook(doc, per_member_groups=state.settings.whatsapp_groups == "member")


receive = Webhook(ENDPOINT, check, parse).receive
