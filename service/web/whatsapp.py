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

from service.errors import RedisUnavailable
from service.providers.whatsapp import parse_webhook, signature_valid
from service.web.body import (
    MAX_MESSAGES_PER_POST,
    BodyTooLarge,
    error,
    parse_json,
    read_body,
    refused,
    too_large,
    unavailable,
)
from service.web.inbound import store_parsed
from service.web.state import app_state

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


async def receive(request: Request) -> Response:
    state = app_state(request)
    stats = state.stats
    secret = state.settings.whatsapp_app_secret

    def answer(status: int, response: Response) -> Response:
        stats.requests.labels(ENDPOINT, str(status)).inc()
        return response

    try:
        body = await read_body(request)
    except BodyTooLarge:
        return answer(413, too_large())
    if secret is not None and not signature_valid(
        secret.get_secret_value().encode(), body, request.headers.get("x-hub-signature-256")
    ):
        refused(ENDPOINT, 401, "missing or invalid X-Hub-Signature-256")
        return answer(401, error(401, "missing or invalid X-Hub-Signature-256"))
    try:
        doc = parse_json(body)
    except ValueError as exc:
        return answer(400, error(400, str(exc)))
    if not isinstance(doc, dict):
        return answer(400, error(400, "the body must be a JSON object"))
    parsed = parse_webhook(doc, per_member_groups=state.settings.whatsapp_groups == "member")
    if len(parsed.messages) > MAX_MESSAGES_PER_POST:  # Meta sends at most 1000 updates
        stats.messages.labels(ENDPOINT, "too_many").inc(len(parsed.messages))
        return answer(413, error(413, f"more than {MAX_MESSAGES_PER_POST} messages in one request"))
    try:
        await store_parsed(state, ENDPOINT, parsed)
    except RedisUnavailable as exc:
        return answer(503, unavailable(str(exc)))
    if parsed.statuses:  # counted once stored: a retried POST is not counted twice
        stats.messages.labels(ENDPOINT, "status").inc(parsed.statuses)
    if parsed.skipped:
        stats.messages.labels(ENDPOINT, "skipped").inc(parsed.skipped)
    return answer(200, PlainTextResponse("OK"))
