"""Delivery over HTTP: POST each batch to ``BATCHER_FORWARD_URL``.

httpx is the client: one pooled ``AsyncClient`` (keep-alive connections,
bounded by the engine's concurrency), explicit connect/read timeouts, and a
typed API; raw speed is not the bottleneck of a once-per-batch POST.
A 2xx response acknowledges the batch; anything else, a timeout or a
connection error raises, so the engine retries with backoff and, after
``max_attempts``, dead-letters the batch with this error.
"""

from __future__ import annotations

import hashlib
import hmac

import httpx

from service.models import Batch
from service.settings import mask_url

USER_AGENT = "chat-batcher/0.1"


class ForwardError(Exception):
    pass


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-Batcher-Signature`` header value for a body."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class HttpForwarder:
    def __init__(
        self,
        url: str,
        secret: bytes | None = None,
        *,
        timeout_s: float = 10.0,
        max_connections: int = 32,
    ) -> None:
        self.url = url
        self.secret = secret
        self.display_url = mask_url(url)
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            headers={"User-Agent": USER_AGENT},
        )

    async def __call__(self, batch: Batch) -> None:
        body = batch.model_dump_json().encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": batch.batch_id}
        if self.secret is not None:
            headers["X-Batcher-Signature"] = sign(self.secret, body)
        try:
            response = await self.client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise ForwardError(f"POST {self.display_url}: {type(exc).__name__} {exc}") from None
        if not 200 <= response.status_code < 300:
            raise ForwardError(
                f"POST {self.display_url}: HTTP {response.status_code} {response.text[:200]!r}"
            )

    async def aclose(self) -> None:
        await self.client.aclose()
