"""Admin endpoints: one chat, seen and acted on over HTTP.

    GET  /v1/chats/{chat_id}           what `batcher show --json` prints
    POST /v1/chats/{chat_id}/flush     close the open batch now (reason manual)
    POST /v1/chats/{chat_id}/hold      pause its idle timer (until release or max wait)
    POST /v1/chats/{chat_id}/release   end the hold
    POST /v1/chats/{chat_id}/drop      move the open batch to the dead letters

Guarded by ``Authorization: Bearer <BATCHER_ADMIN_TOKEN>`` (compared in
constant time); while the token is unset the endpoints answer 404, as if they
did not exist. The chat id is percent-encoded in the path (``wa%3A1%3A2``).
An action with nothing to act on answers 409; Redis unavailable, 503.
"""

from __future__ import annotations

import hmac
import logging

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.logs import emit
from service.store.chats import Chats
from service.web.body import error, refused, unavailable
from service.web.state import app_state

log = logging.getLogger(__name__)

ACTIONS = ("flush", "hold", "release", "drop")


def _denied(request: Request) -> Response | None:
    token = app_state(request).settings.admin_token
    if token is None:
        return error(404, "not found")
    given = request.headers.get("authorization", "")
    expected = f"Bearer {token.get_secret_value()}"
    if not hmac.compare_digest(given.encode(), expected.encode()):
        refused("admin", 401, "missing or wrong bearer token")
        return JSONResponse({"error": "admin token required"}, 401,
                            headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
    return None


def _chats(request: Request) -> Chats:
    state = app_state(request)
    return Chats(state.engine.redis, state.settings)


async def get_chat(request: Request) -> Response:
    if (denied := _denied(request)) is not None:
        return denied
    try:
        chat_state = await _chats(request).read(request.path_params["chat_id"])
    except (RedisError, OSError) as exc:
        return unavailable(str(exc))
    return JSONResponse(chat_state.to_json())


async def act(request: Request) -> Response:
    if (denied := _denied(request)) is not None:
        return denied
    chat_id, action = request.path_params["chat_id"], request.path_params["action"]
    if action not in ACTIONS:
        return error(404, "not found")
    chats = _chats(request)
    try:
        if action == "drop":
            dropped = await chats.drop(chat_id)
            result = None if dropped is None else {"dead_batch_id": dropped[0],
                                                   "messages": dropped[1]}  # fmt: skip
        elif action == "flush":
            flushed = await chats.flush(chat_id)
            result = None if flushed is None else {"messages": flushed}
        else:
            deadline = await (chats.hold if action == "hold" else chats.release)(chat_id)
            result = None if deadline is None else {"deadline_ms": deadline}
    except (RedisError, OSError) as exc:
        return unavailable(str(exc))
    if result is None:
        why = "is not held" if action == "release" else "has no open batch"
        return error(409, f"chat {why}", chat_id=chat_id)
    emit(log, "admin", chat=chat_id, action=action)
    return JSONResponse({"chat_id": chat_id, "action": action, **result})


ROUTES = [
    Route("/v1/chats/{chat_id:path}/{action:str}", act, methods=["POST"]),
    Route("/v1/chats/{chat_id:path}", get_chat, methods=["GET"]),
]
