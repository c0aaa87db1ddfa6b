"""The rejected-messages store: what a provider sent that no chat can be named for.

A message without an id or a sender cannot be batched, but it is not thrown
away either: it is kept whole (the raw JSON, the reason, where in the POST it
was) with no TTL, until an operator reads it (``batcher rejected``) and
removes it. Its id is a digest of the source and the raw JSON, so a provider
retrying the same POST keeps one entry per message.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from service.store.keyspace import Keyspace
from service.store.runner import Call, Script

REJECT = Script.load("reject")


@dataclass(frozen=True, slots=True)
class RejectedEntry:
    id: str
    at: float  # when it was first kept (Redis time, Unix seconds)
    source: str
    reason: str
    path: str
    raw: Any

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at,
            "source": self.source,
            "reason": self.reason,
            "path": self.path,
            "raw": self.raw,
        }


def entry_id(source: str, raw: Any) -> str:
    canonical = json.dumps(raw, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    digest = hashlib.sha256(f"{source}\n{canonical}".encode("utf-8", "replace"))
    return digest.hexdigest()[:20]


class RejectedStore:
    """The rejected messages of one deployment (one Redis hash)."""

    def __init__(self, redis: Redis, keyspace: Keyspace) -> None:
        self.redis = redis
        self.key = keyspace.rejected

    def keep_call(self, source: str, reason: str, path: str, raw: Any) -> Call:
        """The script call that keeps one message (idempotent)."""
        doc = {"source": source, "reason": reason, "path": path, "raw": raw}
        body = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
        return REJECT, (self.key,), (entry_id(source, raw), body.encode("utf-8", "replace"))

    async def count(self) -> int:
        return int(await self.redis.hlen(self.key))

    async def get(self, entry: str) -> RejectedEntry | None:
        raw = await self.redis.hget(self.key, entry)
        return (
            None
            if raw is None
            else _decode(entry, bytes(raw, "utf-8") if isinstance(raw, str) else raw)
        )

    async def list(self, limit: int = 100) -> list[RejectedEntry]:
        """The most recent ``limit`` entries, newest first."""
        found = [
            _decode(k.decode(), v) async for k, v in self.redis.hscan_iter(self.key, count=1000)
        ]
        found.sort(key=lambda e: e.at, reverse=True)
        return found[:limit]

    async def drop(self, entry: str) -> bool:
        return bool(await self.redis.hdel(self.key, entry))

    async def drop_all(self) -> int:
        n = await self.count()
        await self.redis.delete(self.key)
        return n


def _decode(entry: str, value: bytes) -> RejectedEntry:
    head, _, body = value.partition(b"\t")
    doc = json.loads(body)
    return RejectedEntry(
        entry, int(head) / 1000, doc["source"], doc["reason"], doc["path"], doc["raw"]
    )
