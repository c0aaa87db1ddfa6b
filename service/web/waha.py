"""The WAHA webhook: ``POST`` one event per request.

``POST`` answers 200 only once what the event carried is stored in Redis
(503 when Redis cannot take it: WAHA retries); message ids make its retries
idempotent. With ``BATCHER_WAHA_HMAC_KEY`` set, ``X-Webhook-Hmac`` (hex
HMAC-SHA512 of the raw body) is checked before the body is parsed. A body
that is not a JSON object is answered 400.
"""

from __future__ import annotations

from starlette.requests import Request

from service.providers.parsed import ParsedWebhook
from service.providers.waha import ALGORITHM_HEADER, HMAC_HEADER, parse_event, signature_valid
from service.web.state import AppState
from service.web.webhook import Refusal, Webhook, json_object

ENDPOINT = "waha"


def check(state: AppState, request: Request, body: bytes) -> Refusal | None:
    key = state.settings.waha_hmac_key
    if key is not None and not signature_valid(
        key.get_secret_value().encode(),
        body,
        request.headers.get(HMAC_HEADER),
        request.headers.get(ALGORITHM_HEADER),
    ):
        return Refusal(401, "missing or invalid X-Webhook-Hmac (HMAC-SHA512 of the body)")
    return None


def parse(state: AppState, request: Request, body: bytes) -> ParsedWebhook:
    doc = json_object(body, "a JSON object (one WAHA event)")
    return parse_event(doc)


receive = Webhook(ENDPOINT, check, parse).receive
