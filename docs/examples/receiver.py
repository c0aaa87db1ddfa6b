"""A sample forward receiver: the bot's endpoint for ``BATCHER_FORWARD_URL``.

The service POSTs each batch here as JSON (the body is ``Batch`` serialised),
with ``Idempotency-Key: <batch_id>`` and, when ``BATCHER_FORWARD_SECRET`` is
set, ``X-Batcher-Signature: sha256=<hex HMAC-SHA256 of the raw body>``.
A 2xx answer acknowledges the batch; anything else makes the service retry it.

Run it beside the service (same secret on both sides)::

    BATCHER_FORWARD_SECRET=change-me uv run uvicorn --app-dir docs/examples receiver:app --port 9000
    BATCHER_FORWARD_URL=http://127.0.0.1:9000/batches BATCHER_FORWARD_SECRET=change-me \\
        uv run batcher serve

It needs nothing but Starlette (and uvicorn to serve it): the bot does not
have to install chat-batcher to receive its batches.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Batcher-Signature"
# How many answered batch ids are remembered. The service redelivers a batch
# within minutes (retries, a crashed worker's lease), so a few thousand is
# plenty for one process.
SEEN_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class ForwardedBatch:
    """The fields of the forwarded JSON that a bot usually needs."""

    batch_id: str
    chat_id: str
    seq: int  # 1, 2, 3... per chat: a larger seq is a later batch
    attempt: int  # 1 on the first delivery, more on a retry
    messages: list[dict[str, Any]]  # each {"id", "type", "text", "sent_at", "data", ...}

    @classmethod
    def from_json(cls, raw: bytes) -> ForwardedBatch:
        """Parse the body, or raise ValueError naming what is wrong."""
        doc = json.loads(raw)  # ValueError on bad JSON or bad UTF-8
        if not isinstance(doc, dict):
            raise ValueError("the body is not a JSON object")
        batch_id, chat_id = doc.get("batch_id"), doc.get("chat_id")
        seq, attempt, messages = doc.get("seq"), doc.get("attempt"), doc.get("messages")
        if not isinstance(batch_id, str) or not isinstance(chat_id, str):
            raise ValueError("batch_id and chat_id must be strings")
        if not isinstance(seq, int) or not isinstance(attempt, int):
            raise ValueError("seq and attempt must be integers")
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise ValueError("messages must be a list of objects")
        return cls(batch_id, chat_id, seq, attempt, messages)


Reply = Callable[[ForwardedBatch], Awaitable[None]]


async def reply(batch: ForwardedBatch) -> None:
    """The bot: read the batch, answer the user through the provider's own API
    (for WhatsApp, Meta's Graph API ``POST /<phone_number_id>/messages``, the
    phone number id being the middle part of ``wa:<phone_number_id>:<user>``).
    Raising makes the receiver answer 500, so the service delivers it again.
    This stub only prints the batch."""
    texts = [m.get("text") or f"[{m.get('type')}]" for m in batch.messages]
    print(f"batch {batch.batch_id} of {batch.chat_id} (seq {batch.seq}): {texts}", flush=True)


def signature_ok(secret: bytes, body: bytes, header: str | None) -> bool:
    """Whether ``header`` is the signature of exactly these bytes."""
    if not secret or header is None:
        return False
    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    # compare_digest takes the same time wherever the first difference is, so
    # an attacker cannot guess the signature byte by byte. Bytes, not str: a
    # header may hold non-ASCII characters, which compare_digest refuses in str.
    return hmac.compare_digest(expected.encode(), header.encode("latin-1"))


class SeenIds:
    """The batch ids already answered, the oldest forgotten beyond ``limit``.

    In memory, so lost on restart and not shared between replicas: production
    keeps them in a store (e.g. Redis ``SET <batch_id> 1 NX EX 86400``, or a
    unique column in the bot's database, written with the reply)."""

    def __init__(self, limit: int = SEEN_LIMIT) -> None:
        self.limit = limit
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, batch_id: object) -> bool:
        return batch_id in self._ids

    def add(self, batch_id: str) -> None:
        self._ids[batch_id] = None
        self._ids.move_to_end(batch_id)
        while len(self._ids) > self.limit:
            self._ids.popitem(last=False)

    def __len__(self) -> int:
        return len(self._ids)


def create_app(
    secret: str | bytes, *, reply: Reply = reply, seen_limit: int = SEEN_LIMIT
) -> Starlette:
    """The receiver: ``POST /batches``. An empty secret refuses every request
    (401): batches are only taken signed."""
    key = secret.encode() if isinstance(secret, str) else secret
    seen = SeenIds(seen_limit)
    in_progress: set[str] = set()

    async def receive_batch(request: Request) -> Response:
        raw = await request.body()
        # 1. The signature, over the raw bytes, before anything is parsed.
        if not signature_ok(key, raw, request.headers.get(SIGNATURE_HEADER)):
            return JSONResponse({"error": f"missing or invalid {SIGNATURE_HEADER}"}, 401)
        # 2. The batch. A signed but unreadable body is answered 400: the
        #    service retries it and, in the end, dead-letters it with this error.
        try:
            batch = ForwardedBatch.from_json(raw)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        # 3. Answered already (a redelivery): acknowledge again, do not answer twice.
        if batch.batch_id in seen:
            return JSONResponse({"ok": True, "duplicate": True})
        # The same batch still being answered by another request (a redelivery
        # that overtook a slow reply): not yet; the service retries later.
        if batch.batch_id in in_progress:
            return JSONResponse({"error": "this batch is being answered"}, 409)
        # 4. The bot. Only a reply that returned marks the batch as answered.
        in_progress.add(batch.batch_id)
        try:
            await reply(batch)
        except Exception:
            log.exception("reply failed for batch %s", batch.batch_id)
            return JSONResponse({"error": "reply failed"}, 500)
        finally:
            in_progress.discard(batch.batch_id)
        seen.add(batch.batch_id)
        return JSONResponse({"ok": True, "duplicate": False})

    return Starlette(routes=[Route("/batches", receive_batch, methods=["POST"])])


# ``uvicorn receiver:app``: the secret comes from the environment, as in the service.
app = create_app(os.environ.get("BATCHER_FORWARD_SECRET", ""))
