"""``POST /v1/messages`` and ``POST /v1/typing``: the generic adapter (web
chat, custom bridges, tests).

``/v1/messages`` body: one message object, or ``{"messages": [...]}``. Each
message: ``{"chat_id": str, "id": str?, "text": str?, "sent_at": float?,
"data": any?}``. Answers 202 ``{"accepted": n, "duplicates": m}`` once every
message is stored; 422 naming the bad field; 503 when Redis cannot take them
(retry: ids make retries idempotent).

``/v1/typing`` body: ``{"chat_id": str, "typing": bool = true}``: the user is
typing (or stopped). Answers 200 ``{"outcome": …, "flush_in_ms": n}`` (see
``Batcher.typing``); 422, 503 as above.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service.errors import InvalidMessage, MessageTooLarge, RedisUnavailable
from service.models import Data, Message
from service.web.body import (
    MAX_MESSAGES_PER_POST,
    BodyTooLarge,
    error,
    parse_json,
    read_body,
    too_large,
    unavailable,
)
from service.web.state import app_state

MAX_TEXT_CHARS = 64 * 1024


class InMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chat_id: str = Field(min_length=1, max_length=1024)
    id: str | None = Field(default=None, min_length=1, max_length=256)
    type: str = Field(default="text", min_length=1, max_length=64)
    text: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    sent_at: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    data: Data = None


class InTyping(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chat_id: str = Field(min_length=1, max_length=1024)
    typing: bool = True


class InMessages(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[InMessage] = Field(min_length=1, max_length=MAX_MESSAGES_PER_POST)


def _field_errors(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {"field": ".".join(str(p) for p in e["loc"]) or "(body)", "error": e["msg"]}
        for e in exc.errors(include_url=False, include_input=False)
    ]


async def post_messages(request: Request) -> Response:
    state = app_state(request)
    stats = state.stats
    try:
        doc = parse_json(await read_body(request))
    except BodyTooLarge:
        stats.requests.labels("generic", "413").inc()
        return too_large()
    except ValueError as exc:
        stats.requests.labels("generic", "400").inc()
        return error(400, str(exc))
    try:
        if isinstance(doc, dict) and "messages" in doc:
            incoming = InMessages.model_validate(doc).messages
        else:
            incoming = [InMessage.model_validate(doc)]
    except ValidationError as exc:
        stats.requests.labels("generic", "422").inc()
        return JSONResponse({"error": "invalid message", "fields": _field_errors(exc)}, 422)
    items = [
        (
            m.chat_id,
            Message(
                id=m.id or "",
                type=m.type,
                text=m.text,
                sent_at=m.sent_at,
                source="api",
                data=m.data if m.data is not None else {},
            ),
        )
        for m in incoming
    ]
    try:
        results = await state.batcher.add_many(items)
    except MessageTooLarge as exc:
        stats.requests.labels("generic", "413").inc()
        stats.messages.labels("api", "rejected").inc(len(items))
        return error(413, str(exc))
    except InvalidMessage as exc:
        stats.requests.labels("generic", "422").inc()
        return JSONResponse(
            {"error": "invalid message", "fields": [{"field": "chat_id", "error": str(exc)}]}, 422
        )
    except RedisUnavailable as exc:
        stats.requests.labels("generic", "503").inc()
        return unavailable(str(exc))
    accepted = sum(r.accepted for r in results)
    stats.messages.labels("api", "accepted").inc(accepted)
    stats.messages.labels("api", "duplicate").inc(len(results) - accepted)
    stats.requests.labels("generic", "202").inc()
    return JSONResponse({"accepted": accepted, "duplicates": len(results) - accepted}, 202)


async def post_typing(request: Request) -> Response:
    state = app_state(request)
    stats = state.stats

    def answer(status: int, response: Response) -> Response:
        stats.requests.labels("typing", str(status)).inc()
        return response

    try:
        doc = parse_json(await read_body(request))
    except BodyTooLarge:
        return answer(413, too_large())
    except ValueError as exc:
        return answer(400, error(400, str(exc)))
    try:
        event = InTyping.model_validate(doc)
    except ValidationError as exc:
        body = {"error": "invalid typing event", "fields": _field_errors(exc)}
        return answer(422, JSONResponse(body, 422))
    try:
        result = await state.batcher.typing(event.chat_id, typing=event.typing)
    except InvalidMessage as exc:
        body = {
            "error": "invalid typing event",
            "fields": [{"field": "chat_id", "error": str(exc)}],
        }
        return answer(422, JSONResponse(body, 422))
    except RedisUnavailable as exc:
        return answer(503, unavailable(str(exc)))
    stats.messages.labels("api", "typing").inc()
    return answer(200, JSONResponse({"outcome": result.outcome, "flush_in_ms": result.flush_in_ms}))
