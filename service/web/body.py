"""Reading request bodies with a size limit, and the shared error replies."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from service.logs import emit
from service.models import read_json

log = logging.getLogger(__name__)
REFUSED_EVERY_S = 10.0  # at most one "refused" line per endpoint and reason this often
_last_refused: dict[tuple[str, str], tuple[float, int]] = {}

MAX_BODY_BYTES = 4 * 1024 * 1024
# Meta documents up to 1000 updates per webhook POST.
MAX_MESSAGES_PER_POST = 1000
RETRY_AFTER_S = "5"


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is beyond the range of a number")
    return value


def parse_json(body: bytes) -> Any:
    """Strict JSON or ValueError (bad UTF-8, bad JSON, NaN/Infinity, absurd nesting)."""
    try:
        return read_json(body, parse_constant=_no_constants, parse_float=_finite)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"body is not valid JSON: {str(exc)[:200]}") from None


def refused(endpoint: str, status: int, why: str) -> None:
    """Log a refused request, at most once per ``REFUSED_EVERY_S`` for the same
    endpoint and reason (a flood of bad signatures must not flood the log);
    the line counts the refusals it stands for."""
    now = time.monotonic()
    since, count = _last_refused.get((endpoint, why), (0.0, 0))
    if now - since < REFUSED_EVERY_S and since:
        _last_refused[(endpoint, why)] = (since, count + 1)
        return
    _last_refused[(endpoint, why)] = (now, 0)
    emit(log, "refused", endpoint=endpoint, status=status, why=why, more=count)


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    headers = {"Retry-After": RETRY_AFTER_S} if status == 503 else None
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def too_large() -> JSONResponse:
    return error(413, f"body larger than {MAX_BODY_BYTES} bytes")


def unavailable(detail: str) -> JSONResponse:
    return error(503, "storage unavailable, retry later", detail=detail)
