"""Errors a provider reports beside the messages (WhatsApp: ``value.errors``).

They belong to no chat, so they cannot ride on a batch: each is counted by
source and code, and the latest few are kept (newest first) for
``batcher watch``. Nothing expires; the list is capped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from service.store.keyspace import Keyspace
from service.store.runner import Call, Script

REPORT = Script.load("report")
RECENT = 20  # errors kept for `batcher watch`


@dataclass(frozen=True, slots=True)
class ReportedError:
    at: float  # Redis time, Unix seconds
    source: str
    code: int | None
    title: str | None
    message: str | None
    details: str | None


@dataclass(frozen=True, slots=True)
class ProviderErrorSummary:
    counts: dict[str, int]  # "<source>:<code>" -> errors
    recent: list[ReportedError]  # newest first


class ProviderErrors:
    def __init__(self, redis: Redis, keyspace: Keyspace) -> None:
        self.redis = redis
        self.keys = (keyspace.provider_errors, keyspace.provider_errors_recent)

    def report_call(
        self,
        source: str,
        code: int | None,
        title: str | None,
        message: str | None,
        details: str | None,
    ) -> Call:
        doc = {"source": source, "code": code, "title": title, "message": message}
        doc["details"] = details
        body = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
        field = f"{source}:{'none' if code is None else code}"
        return REPORT, self.keys, (field, body.encode("utf-8", "replace"), RECENT)

    async def summary(self) -> ProviderErrorSummary:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys[0])
            pipe.lrange(self.keys[1], 0, -1)
            counts, recent = await pipe.execute()
        return ProviderErrorSummary(
            {k.decode(): int(v) for k, v in counts.items()}, [decode_reported(v) for v in recent]
        )


def decode_reported(value: bytes) -> ReportedError:
    """One entry of the recent list (``<ms>\\t<json>``)."""
    head, _, body = value.partition(b"\t")
    doc: dict[str, Any] = json.loads(body)
    return ReportedError(
        int(head) / 1000,
        doc["source"],
        doc.get("code"),
        doc.get("title"),
        doc.get("message"),
        doc.get("details"),
    )
