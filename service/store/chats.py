"""One chat as an operator sees it and acts on it: its open batch, its batch
in flight and its dead batches (``batcher show``, ``GET /v1/chats/{id}``), and
the actions ``flush``, ``hold``, ``release`` and ``drop``, one script each
(``lua/flush.lua`` …), safe against concurrent appends and claims.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.asyncio import Redis

from service.models import Message, order_messages
from service.settings import Settings
from service.store.deadletters import DeadBatch, dead_of_chat
from service.store.keyspace import ChatKeys, Keyspace
from service.store.runner import Arg, Script, run_script

FLUSH = Script.load("flush", prelude=("wake",))
HOLD = Script.load("hold", prelude=("wake",))
RELEASE = Script.load("release", prelude=("wake",))
DROP = Script.load("drop")

DROPPED = "dropped by an operator"
FLIGHT = ["batch", "attempt", "bseq", "bopened", "bclosed", "bdeadline", "breason", "error"]


@dataclass(frozen=True, slots=True)
class OpenBatch:
    messages: list[Message]
    opened_ms: int
    last_ms: int
    deadline_ms: int | None  # when it closes if nothing else happens (its ``due`` score)
    why: str  # what that deadline is: idle, max wait, held, flushed, after the batch in flight


@dataclass(frozen=True, slots=True)
class InFlight:
    batch_id: str
    attempt: int
    seq: int
    reason: str
    opened_ms: int
    closed_ms: int
    lease_until_ms: int | None  # another process redelivers it after this
    size: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class ChatState:
    chat_id: str
    now_ms: int  # Redis TIME
    seq: int  # batches claimed so far
    open: OpenBatch | None
    inflight: InFlight | None
    dead: list[DeadBatch] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        if self.open is not None:
            doc["open"]["messages"] = [m.model_dump(mode="json") for m in self.open.messages]
        return doc


def _int(value: Any) -> int | None:
    return None if value is None else int(float(value))


def _text(value: Any) -> str | None:
    return None if value is None else value.decode("utf-8", "replace")


class Chats:
    """Read and act on single chats of one deployment."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keyspace.of(settings)

    async def read(self, chat_id: str) -> ChatState:
        ck = self.keys.chat(chat_id)
        secs, micros = await self.redis.time()  # apart: a cluster pipeline takes keyed commands
        pipe = self.redis.pipeline(transaction=False)
        pipe.lrange(ck.buf, 0, -1)
        pipe.hmget(ck.meta, ["opened", "last", "seq", "held", "manual", *FLIGHT])
        pipe.zscore(ck.bucket.due, chat_id)
        pipe.zscore(ck.bucket.inflight, chat_id)
        items, meta, due, lease = await pipe.execute()
        now_ms = int(secs) * 1000 + int(micros) // 1000
        opened, last, seq, held, manual = meta[:5]
        flight = dict(zip(FLIGHT, meta[5:], strict=True))
        inflight = None
        if flight["batch"] is not None:
            batch_id = flight["batch"].decode()
            size = await self.redis.llen(self.keys.proc(ck.bucket.bucket, batch_id))
            inflight = InFlight(
                batch_id, _int(flight["attempt"]) or 1, _int(flight["bseq"]) or 0,
                _text(flight["breason"]) or "", _int(flight["bopened"]) or 0,
                _int(flight["bclosed"]) or 0, _int(lease), int(size), _text(flight["error"]),
            )  # fmt: skip
        open_batch = None
        if items:
            opened_ms = _int(opened) or now_ms
            why = self._why(opened_ms, _int(due), bool(held), bool(manual), inflight is not None)
            open_batch = OpenBatch(
                order_messages(items), opened_ms, _int(last) or opened_ms, _int(due), why
            )
        dead = await dead_of_chat(self.redis, self.keys, chat_id)
        return ChatState(chat_id, now_ms, _int(seq) or 0, open_batch, inflight, dead)

    def _why(
        self, opened_ms: int, due_ms: int | None, held: bool, manual: bool, behind: bool
    ) -> str:
        if behind:
            return "after the batch in flight is acknowledged"
        if manual:
            return "flushed by an operator: closing now"
        if held:
            return "held by an operator: closes at its max wait"
        if due_ms is not None and due_ms >= opened_ms + self.settings.max_wait_ms:
            return "max wait"
        return "idle"

    async def flush(self, chat_id: str) -> int | None:
        """Close the open batch now (reason ``manual``); its size, or None if none."""
        ck = self.keys.chat(chat_id)
        got = await run_script(self.redis, FLUSH, self._timed_keys(ck), [chat_id])
        return int(got[1]) if int(got[0]) else None

    async def hold(self, chat_id: str) -> int | None:
        """Pause the idle timer until release or the max wait; the new deadline."""
        ck = self.keys.chat(chat_id)
        args: list[Arg] = [chat_id, self.settings.max_wait_ms]
        got = await run_script(self.redis, HOLD, self._timed_keys(ck), args)
        return int(got[1]) if int(got[0]) else None

    async def release(self, chat_id: str) -> int | None:
        """End a hold (the idle timer runs from now); the new deadline, or None."""
        ck = self.keys.chat(chat_id)
        args: list[Arg] = [chat_id, self.settings.idle_ms, self.settings.max_wait_ms]
        got = await run_script(self.redis, RELEASE, self._timed_keys(ck), args)
        return int(got[1]) if int(got[0]) else None

    async def drop(self, chat_id: str) -> tuple[str, int] | None:
        """Move the open batch to the dead letters: (its dead batch id, size)."""
        ck = self.keys.chat(chat_id)
        n, batch_id = ck.bucket.bucket, secrets.token_hex(12)
        keys = [
            *self._open_keys(ck), ck.bucket.dead,
            self.keys.dead_batch(n, batch_id), self.keys.dead_info(n, batch_id),
        ]  # fmt: skip
        got = await run_script(self.redis, DROP, keys, [chat_id, batch_id, DROPPED])
        return (batch_id, int(got[1])) if int(got[0]) else None

    @staticmethod
    def _open_keys(ck: ChatKeys) -> list[bytes]:
        return [ck.buf, ck.timer, ck.meta, ck.bucket.due]

    @staticmethod
    def _timed_keys(ck: ChatKeys) -> list[bytes]:
        """The open batch's keys and its bucket's wake key (scripts that set a deadline)."""
        return [ck.buf, ck.timer, ck.meta, ck.bucket.due, ck.bucket.wake]
