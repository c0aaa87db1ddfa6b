"""One request path for every provider's webhook POST.

    read the body (413 over the limit) → check the provider's authentication
    over the raw bytes (401/403, nothing parsed) → parse (400 only when the
    request as a whole is unreadable) → store everything it carried (503
    when Redis cannot take it: the provider retries) → the provider's 2xx.

A provider module supplies the three parts that differ: ``check``,
``parse`` and ``reply``. A provider left out of ``BATCHER_PROVIDERS``
answers 404.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from service.errors import RedisUnavailable
from service.providers.parsed import BadPayload, ParsedWebhook
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
from service.web.state import AppState, app_state


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int  # 401 (no or bad credentials) or 403 (credentials not accepted)
    why: str  # logged and answered; never the secret or what was sent instead


# check(state, request, raw body) -> None when authentic
Check = Callable[[AppState, Request, bytes], Refusal | None]
# parse(state, request, raw body) -> what it carried; BadPayload -> 400
Parse = Callable[[AppState, Request, bytes], ParsedWebhook]


def json_object(body: bytes, what: str = "a JSON object") -> dict[str, Any]:
    """The body as a JSON object, else BadPayload (400) saying what it must be."""
    try:
        doc = parse_json(body)
    except ValueError as exc:
        raise BadPayload(str(exc)) from None
    if not isinstance(doc, dict):
        raise BadPayload(f"the body must be {what}")
    return doc


def ok() -> Response:
    return PlainTextResponse("OK")


@dataclass(frozen=True, slots=True)
class Webhook:
    """A provider's ``POST`` endpoint (``endpoint`` names it in metrics and logs)."""

    endpoint: str
    check: Check
    parse: Parse
    reply: Callable[[], Response] = ok
    source: str | None = None  # the messages' ``source`` label; default: ``endpoint``

    async def receive(self, request: Request) -> Response:
        state = app_state(request)
        stats = state.stats

        def answer(status: int, response: Response) -> Response:
            stats.requests.labels(self.endpoint, str(status)).inc()
            return response

        if self.endpoint not in state.settings.enabled_providers:
            return answer(404, error(404, f"{self.endpoint} is not in BATCHER_PROVIDERS"))
        try:
            body = await read_body(request)
        except BodyTooLarge:
            return answer(413, too_large())
        refusal = self.check(state, request, body)
        if refusal is not None:
            refused(self.endpoint, refusal.status, refusal.why)
            return answer(refusal.status, error(refusal.status, refusal.why))
        try:
            parsed = self.parse(state, request, body)
        except BadPayload as exc:
            return answer(400, error(400, str(exc)))
        source = self.source or self.endpoint
        if len(parsed.messages) > MAX_MESSAGES_PER_POST:
            stats.messages.labels(source, "too_many").inc(len(parsed.messages))
            msg = f"more than {MAX_MESSAGES_PER_POST} messages in one request"
            return answer(413, error(413, msg))
        try:
            await store_parsed(state, source, parsed)
        except RedisUnavailable as exc:
            return answer(503, unavailable(str(exc)))
        if parsed.statuses:  # counted once stored: a retried POST is not counted twice
            stats.messages.labels(source, "status").inc(parsed.statuses)
        if parsed.skipped:
            stats.messages.labels(source, "skipped").inc(parsed.skipped)
        return answer(200, self.reply())
