"""Lua scripts (``lua/*.lua`` beside this module) and one typed wrapper each.

Every state change of the service is one of these scripts: each runs
atomically, takes every key it touches in KEYS (all in one bucket, so one
hash slot) and reads the clock with ``TIME`` so that all replicas share one
clock. ``service.store.runner`` runs them (EVALSHA, reloading a lost script
cache, WAIT for replicas).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from service.settings import Settings
from service.store.keyspace import BucketKeys, ChatKeys, Keyspace, SeenEntry, seen_slot_ms
from service.store.runner import Call, Script, run_script, run_scripts

APPEND = Script.load("append", prelude=("wake", "items"))
CLAIM = Script.load("claim", prelude=("wake", "items"))
ACK = Script.load("ack")
NACK = Script.load("nack")
LEASE = Script.load("lease")
REDELIVER = Script.load("redeliver")
NUDGE = Script.load("nudge")
SCAN = Script.load("scan")
TYPING = Script.load("typing", prelude=("wake",))

# --- typed results ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Appended:
    status: int  # see append.lua: 1 appended, 0 duplicate, 2 edited, 3 revoked, 4 emptied
    deadline_ms: int
    count: int
    now_ms: int
    opened_ms: int


@dataclass(frozen=True, slots=True)
class Typed:
    status: int  # see typing.lua: 0 no open batch, 1 later, 2 earlier, 3 unchanged
    deadline_ms: int
    now_ms: int


@dataclass(frozen=True, slots=True)
class Nudged:
    touched: int
    next_ms: int | None  # the bucket's next deadline (None: nothing due)
    now_ms: int


@dataclass(frozen=True, slots=True)
class Claimed:
    seq: int
    opened_ms: int
    closed_ms: int
    deadline_ms: int
    reason: str
    attempt: int
    items: list[bytes]


class ClaimOutcome:
    """Codes of the claim script other than a claimed batch."""

    TIMER_RUNNING = 2
    NOT_DUE = 3
    BUSY = 4
    EMPTY = 5


@dataclass(frozen=True, slots=True)
class Skipped:
    code: int


@dataclass(frozen=True, slots=True)
class Nacked:
    lost: bool = False
    retry_at_ms: int | None = None
    dead: bool = False
    next_due: bool = False


# --- calls (keys and arguments in one place) -------------------------------


class Scripts:
    """The service's scripts bound to one client, keyspace and settings.

    ``*_call`` builds a call (for one round trip with ``run_many``),
    ``parse_*`` turns a script's reply into a typed value.
    """

    def __init__(self, redis: Redis, keyspace: Keyspace, settings: Settings) -> None:
        self.redis = redis
        self.keys = keyspace
        self.settings = settings

    async def run(self, call: Call) -> Any:
        return await run_script(self.redis, *call)

    async def run_many(self, calls: Sequence[Call], *, durable: bool = False) -> list[Any]:
        """``durable``: wait for BATCHER_ACK_REPLICAS replicas (acknowledged writes)."""
        if durable and self.settings.ack_replicas:
            return await run_scripts(
                self.redis,
                calls,
                replicas=self.settings.ack_replicas,
                wait_ms=self.settings.ack_timeout_ms,
            )
        return await run_scripts(self.redis, calls)

    def append_call(
        self,
        ck: ChatKeys,
        seen: SeenEntry | None,
        payload: bytes,
        target: tuple[str, bytes] | None = None,
        channel: bytes = b"",
    ) -> Call:
        """``seen``: the message's dedupe entry (None: no dedupe);
        ``target``: ("edit" | "revoke", the stored prefix of the message it changes);
        ``channel``: its channel's JSON (``models.channel_json``), stored once per batch."""
        b, s = ck.bucket, self.settings
        return (
            APPEND,
            (ck.buf, ck.timer, ck.meta, b.due, b.wake, *b.seen_ring(seen.shard if seen else 0)),
            (
                ck.chat_id,
                str(seen.digest) if seen else b"",
                payload,
                s.idle_ms,
                s.max_wait_ms,
                s.max_messages,
                seen_slot_ms(s.dedupe_window_ms),
                s.max_batch_bytes,
                target[1] if target else b"",
                target[0] if target else b"",
                channel,
                hashlib.blake2b(channel, digest_size=8).digest() if channel else b"",
            ),
        )

    @staticmethod
    def parse_append(raw: Any) -> Appended:
        return Appended(int(raw[0]), int(raw[1]), int(raw[2]), int(raw[3]), int(raw[4]))

    def typing_call(self, ck: ChatKeys, *, typing: bool) -> Call:
        b, s = ck.bucket, self.settings
        return (
            TYPING,
            (ck.buf, ck.timer, ck.meta, b.due, b.wake),
            (
                ck.chat_id,
                "typing" if typing else "paused",
                s.typing_ms,
                s.idle_ms,
                s.max_wait_ms,
                s.max_messages,
                s.max_batch_bytes,
            ),
        )

    @staticmethod
    def parse_typing(raw: Any) -> Typed:
        return Typed(int(raw[0]), int(raw[1]), int(raw[2]))

    def claim_call(
        self,
        ck: ChatKeys,
        batch_id: str,
        token: str,
        *,
        recovered: bool,
    ) -> Call:
        b, s = ck.bucket, self.settings
        return (
            CLAIM,
            (
                ck.buf,
                ck.timer,
                ck.meta,
                b.due,
                b.inflight,
                self.keys.proc(b.bucket, batch_id),
                b.wake,
            ),
            (
                ck.chat_id,
                batch_id,
                s.lease_ms,
                s.max_messages,
                s.idle_ms,
                s.max_wait_ms,
                token,
                "1" if recovered else "0",
                s.max_batch_bytes,
            ),
        )

    @staticmethod
    def parse_claim(raw: Any) -> Claimed | Skipped:
        """The reply of ``claim`` and of ``redeliver`` (same shape)."""
        if int(raw[0]) != 1:
            return Skipped(int(raw[0]))
        return Claimed(
            seq=int(raw[1]),
            opened_ms=int(raw[2]),
            closed_ms=int(raw[3]),
            deadline_ms=int(raw[4]),
            reason=_text(raw[5]),
            attempt=int(raw[6]),
            items=list(raw[7]),
        )

    def ack_call(self, ck: ChatKeys, batch_id: str, token: str) -> Call:
        b = ck.bucket
        return (
            ACK,
            (ck.meta, b.inflight, self.keys.proc(b.bucket, batch_id), ck.buf, ck.timer, b.due),
            (ck.chat_id, batch_id, token),
        )

    def nack_call(
        self,
        ck: ChatKeys,
        batch_id: str,
        token: str,
        error: str,
        *,
        backoff_ms: int,
    ) -> Call:
        b, s = ck.bucket, self.settings
        n = b.bucket
        return (
            NACK,
            (
                ck.meta,
                b.inflight,
                self.keys.proc(n, batch_id),
                ck.buf,
                ck.timer,
                b.due,
                b.dead,
                self.keys.dead_batch(n, batch_id),
                self.keys.dead_info(n, batch_id),
            ),
            (ck.chat_id, batch_id, token, error, s.max_attempts, backoff_ms, s.lease_ms),
        )

    @staticmethod
    def parse_nack(raw: Any) -> Nacked:
        code = int(raw[0])
        if code == 0:
            return Nacked(lost=True)
        if code == 1:
            return Nacked(retry_at_ms=int(raw[1]))
        return Nacked(dead=True, next_due=bool(int(raw[1])))

    def lease_call(
        self, ck: ChatKeys, batch_id: str, token: str, *, lease_ms: int, next_attempt: bool
    ) -> Call:
        return (
            LEASE,
            (ck.meta, ck.bucket.inflight),
            (ck.chat_id, batch_id, token, lease_ms, "1" if next_attempt else "0"),
        )

    def redeliver_call(self, ck: ChatKeys, batch_id: str, token: str) -> Call:
        b = ck.bucket
        return (
            REDELIVER,
            (ck.meta, b.inflight, self.keys.proc(b.bucket, batch_id)),
            (ck.chat_id, batch_id, token, self.settings.lease_ms),
        )

    def nudge_call(self, bk: BucketKeys, *, limit: int) -> Call:
        # Deadlines older than the sweeper's grace are the sweeper's business.
        window_ms = max(self.settings.sweep_grace_ms, 1)
        return (NUDGE, (bk.due, bk.wake), (bk.timer_prefix, window_ms, limit))

    @staticmethod
    def parse_nudge(raw: Any) -> Nudged:
        nxt = int(raw[1])
        return Nudged(int(raw[0]), None if nxt < 0 else nxt, int(raw[2]))

    def scan_call(self, bk: BucketKeys, *, limit: int) -> Call:
        return (SCAN, (bk.due, bk.inflight), (self.settings.sweep_grace_ms, limit))

    @staticmethod
    def replay_call(keys: Keyspace, ck: ChatKeys, batch_ids: Sequence[str]) -> Call:
        """Dead batches of one chat (oldest first) back into its open batch."""
        b = ck.bucket
        dead_keys: list[bytes] = []
        for batch_id in batch_ids:
            dead_keys += [keys.dead_batch(b.bucket, batch_id), keys.dead_info(b.bucket, batch_id)]
        return (
            REPLAY,
            (ck.buf, ck.timer, ck.meta, b.due, b.dead, b.wake, *dead_keys),
            (ck.chat_id, *batch_ids),
        )

    @staticmethod
    def parse_replay(raw: Any) -> Replayed:
        return Replayed(batches=int(raw[0]), messages=int(raw[1]))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


REPLAY = Script.load("replay", prelude=("wake", "items"))


@dataclass(frozen=True, slots=True)
class Replayed:
    batches: int  # dead batches put back (0: none was dead-lettered any more)
    messages: int
