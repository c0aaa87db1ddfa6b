"""The Evolution API v2 webhook: ``POST /webhooks/evolution[/<event>]``.

Evolution puts the instance's API key in the body (``apikey``, when
``AUTHENTICATION_EXPOSE_IN_FETCH_INSTANCES=true``) and sends the webhook's
configured ``headers``: an ``apikey`` header, ``Authorization: Bearer
<key>``, or, when the headers hold ``jwt_key``, ``Authorization: Bearer
<HS256 JWT>`` signed with it (10 minutes of validity). When
``BATCHER_EVOLUTION_API_KEY`` is set, one of them must match (compared with
``hmac.compare_digest``) before the body is parsed; the check decodes the
body only to read ``apikey``. Answered 200 once stored; Evolution retries a
5xx or a timeout, never a 400 or a 401.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from typing import Any

from starlette.requests import Request

from service.providers.evolution import parse_webhook
from service.providers.parsed import ParsedWebhook
from service.web.state import AppState
from service.web.webhook import Refusal, Webhook, json_object

ENDPOINT = "evolution"
JWT_LEEWAY_S = 60  # clock skew allowed past a JWT's ``exp``


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwt_valid(key: bytes, token: str, now_s: float) -> bool:
    """An HS256 JWT signed with ``key`` whose ``exp`` has not passed. A token
    without ``exp``, or with another ``alg`` (``none`` included), never validates."""
    parts = token.split(".")
    if not key or len(parts) != 3:
        return False
    try:
        header, claims = json.loads(_b64url(parts[0])), json.loads(_b64url(parts[1]))
        signature = _b64url(parts[2])
    except (ValueError, binascii.Error):
        return False
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        return False
    signed = f"{parts[0]}.{parts[1]}".encode("ascii", "replace")
    if not hmac.compare_digest(hmac.new(key, signed, hashlib.sha256).digest(), signature):
        return False
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        return False
    return now_s < exp + JWT_LEEWAY_S


def _same(key: bytes, given: str) -> bool:
    return hmac.compare_digest(key, given.encode("utf-8", "replace"))


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _body_apikey(body: bytes) -> str | None:
    try:
        doc = json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None
    value = doc.get("apikey") if isinstance(doc, dict) else None
    return value if isinstance(value, str) and value else None


def credentials_refusal(
    key: str,
    body: bytes,
    apikey_header: str | None,
    authorization: str | None,
    now_s: float | None = None,
) -> str | None:
    """None when one of the credentials presented is right, else why not (never the key)."""
    secret = key.encode("utf-8")
    now = time.time() if now_s is None else now_s
    tried = []
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        bearer = scheme.lower() == "bearer" and bool(token)
        if bearer and (_same(secret, token) or jwt_valid(secret, token, now)):
            return None
        tried.append("Authorization")
    if apikey_header:
        if _same(secret, apikey_header.strip()):
            return None
        tried.append("apikey header")
    given = _body_apikey(body)
    if given is not None:
        if _same(secret, given):
            return None
        tried.append("body apikey")
    if not tried:
        return "no apikey in the body, no apikey header, no Authorization header"
    return f"invalid credentials ({', '.join(tried)})"


def check(state: AppState, request: Request, body: bytes) -> Refusal | None:
    key = state.settings.evolution_api_key
    if key is None:
        return None
    why = credentials_refusal(
        key.get_secret_value(),
        body,
        request.headers.get("apikey"),
        request.headers.get("authorization"),
    )
    return None if why is None else Refusal(401, why)


def parse(state: AppState, request: Request, body: bytes) -> ParsedWebhook:
    doc = json_object(body, "a JSON object")
    return parse_webhook(doc, event_hint=request.path_params.get("event"))


receive = Webhook(ENDPOINT, check, parse).receive
