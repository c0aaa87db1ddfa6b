"""Claim, deliver, acknowledge: one batch from "due" to "done".

A worker claims a chat's closed batch (exactly one caller wins), calls the
handler while renewing its lease, and then acks it, or nacks it so that the
next attempt follows after a backoff, or the batch is dead-lettered after
``max_attempts``. Messages that arrive meanwhile form the chat's next batch,
claimed right after the ack: one batch in flight per chat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.exceptions import RedisError

from service.engine.batcher import new_id
from service.engine.coalescer import Coalescer
from service.engine.handlers import Handler
from service.engine.leases import Lease
from service.engine.loops import sleep_or_stop
from service.logs import emit
from service.models import Batch, channel_of, order_messages
from service.settings import Settings
from service.stats import Stats
from service.store.keyspace import ChatKeys
from service.store.runner import Call
from service.store.scripts import Claimed, ClaimOutcome, Nacked, Scripts, Skipped

log = logging.getLogger(__name__)
T = TypeVar("T")


class Delivery:
    def __init__(
        self,
        scripts: Scripts,
        settings: Settings,
        handler: Handler,
        stats: Stats,
        stop: asyncio.Event,
    ) -> None:
        self.scripts = scripts
        self.keys = scripts.keys
        self.settings = settings
        self.handler = handler
        self.stats = stats
        self.stop = stop
        self.calls = Coalescer(scripts, durable=False)

    # --- entry points -------------------------------------------------------

    async def process(self, chat_id: str, *, recovered: bool = False) -> None:
        """Claim the chat's due batch, if any, and deliver it; then its next."""
        ck = self.keys.chat(chat_id)
        while True:
            batch_id, token = new_id(), new_id()
            call = self.scripts.claim_call(ck, batch_id, token, recovered=recovered)
            got, sent_at = await self._claim(ck, call, batch_id, token)
            if isinstance(got, Skipped):
                self.stats.claims_skipped += 1
                return
            if recovered:
                self.stats.recovered += 1
            batch = _batch(batch_id, chat_id, got)
            self.stats.record_claim(batch.reason, len(batch.messages))
            emit(
                log,
                "claimed",
                chat=chat_id,
                batch=batch_id,
                size=len(batch.messages),
                reason=batch.reason,
                open_ms=got.closed_ms - got.opened_ms,
                lag_ms=max(0, got.closed_ms - got.deadline_ms),
            )
            if not await self.deliver(ck, batch, token, sent_at):
                return
            recovered = False

    async def _claim(
        self, ck: ChatKeys, call: Call, batch_id: str, token: str
    ) -> tuple[Claimed | Skipped, float]:
        """Run the claim; if its reply is lost, find out whether it happened.

        A claim that ran but whose reply never came back would hold the batch
        for a whole lease. Once Redis answers again: if the chat's in-flight
        batch is ours, hand its lease back (the next sweep redelivers it, same
        batch id); otherwise the claim did not run, so run it again. Also
        returns when the claim that counts was sent (its lease starts later).
        """
        loop = asyncio.get_running_loop()
        sent_at = loop.time()
        try:
            return Scripts.parse_claim(await self.calls.one(call)), sent_at
        except (RedisError, OSError):
            if self.stop.is_set():
                raise

        async def settle() -> tuple[Claimed | Skipped, float]:
            held = await self.scripts.redis.hmget(ck.meta, ["batch", "token"])
            if held == [batch_id.encode(), token.encode()]:
                release = self.scripts.lease_call(
                    ck, batch_id, token, lease_ms=0, next_attempt=False
                )
                await self.calls.one(release)
                return Skipped(ClaimOutcome.NOT_DUE), sent_at
            again = loop.time()
            return Scripts.parse_claim(await self.calls.one(call)), again

        return await retry_redis(settle, self.stop)

    async def redeliver(self, chat_id: str, batch_id: str) -> None:
        """Take over a batch whose lease ran out, then deliver it."""
        ck = self.keys.chat(chat_id)
        token = new_id()
        sent_at = asyncio.get_running_loop().time()
        raw = await self.calls.one(self.scripts.redeliver_call(ck, batch_id, token))
        got = Scripts.parse_claim(raw)
        if isinstance(got, Skipped):
            return
        self.stats.redelivered += 1
        batch = _batch(batch_id, chat_id, got)
        emit(
            log,
            "redelivering",
            chat=chat_id,
            batch=batch_id,
            attempt=batch.attempt,
            why="lease expired",
        )
        if await self.deliver(ck, batch, token, sent_at):
            await self.process(chat_id)

    # --- one batch ----------------------------------------------------------

    async def deliver(self, ck: ChatKeys, batch: Batch, token: str, sent_at: float) -> bool:
        """Run the handler until the batch is acked, dead or lost.

        ``sent_at``: loop time at which the call that leased the batch was
        sent. Returns True when the chat's next batch is due now. If anything
        unexpected breaks off the delivery, the lease is handed back at once
        so that the sweeper redelivers the batch instead of waiting it out.
        """
        try:
            return await self._deliver(ck, batch, token, sent_at)
        except Exception:
            await self._release(ck, batch, token)
            raise

    async def _deliver(self, ck: ChatKeys, batch: Batch, token: str, sent_at: float) -> bool:
        """Attempt after attempt until the batch is acked, dead-lettered or lost."""
        loop = asyncio.get_running_loop()
        while True:
            started = time.time()
            lag_ms = (started - batch.deadline_at) * 1000
            self.stats.record_lag(lag_ms)
            error = await self._attempt(ck, batch, token, sent_at)
            took_ms = (time.time() - started) * 1000
            self.stats.handler_seconds.observe(took_ms / 1000)
            if error is None:
                return await self._ack(ck, batch, token, took_ms=took_ms, lag_ms=lag_ms)
            backoff_ms = self.backoff_ms(batch.attempt)
            res = await self._nack(ck, batch, token, error, backoff_ms)
            if res.lost or res.dead:
                return res.next_due
            if await sleep_or_stop(self.stop, backoff_ms / 1000):
                await self._release(ck, batch, token)
                return False
            renew = self.scripts.lease_call(
                ck, batch.batch_id, token, lease_ms=self.settings.lease_ms, next_attempt=True
            )
            sent_at = loop.time()
            attempt = int(await self._call(renew))
            if attempt == 0:
                return False
            batch = batch.model_copy(update={"attempt": attempt})

    async def _attempt(self, ck: ChatKeys, batch: Batch, token: str, sent_at: float) -> str | None:
        """One handler call under the lease; the error that ended it, if any."""
        s = self.settings
        loop = asyncio.get_running_loop()
        lease = Lease(self.calls, ck, batch, token, lease_ms=s.lease_ms, sent_at=sent_at)
        handler_deadline = loop.time() + s.handler_timeout_ms / 1000
        bound = asyncio.timeout_at(min(handler_deadline, lease.safe_until))
        lease.start(bound, handler_deadline)
        try:
            try:
                async with bound:
                    await self.handler(batch)
            finally:
                await lease.stop()
        except asyncio.CancelledError:
            await self._release(ck, batch, token)
            raise
        except Exception as exc:
            if not (isinstance(exc, TimeoutError) and bound.expired()):
                return f"{type(exc).__name__}: {exc}"[:2000]
            if lease.broken(loop.time()):
                return "LeaseLost: handler stopped, its lease was lost or not renewed"
            return f"TimeoutError: handler still running after {s.handler_timeout_ms} ms"
        return None

    async def _ack(
        self, ck: ChatKeys, batch: Batch, token: str, *, took_ms: float, lag_ms: float
    ) -> bool:
        """Acknowledge the batch; whether the chat's next batch is due now.

        An ack under a lease that ran out is refused when the batch was
        redelivered meanwhile: that attempt may still be at the handler, and
        the chat's next batch must not start beside it. It delivers again.
        """
        raw = await self._call(self.scripts.ack_call(ck, batch.batch_id, token))
        fields: dict[str, Any] = {"chat": batch.chat_id, "batch": batch.batch_id}
        if not int(raw[0]):
            emit(log, "lease_lost", **fields)
            return bool(int(raw[1]))
        self.stats.delivered += 1
        emit(
            log,
            "delivered",
            **fields,
            size=len(batch.messages),
            duration_ms=round(took_ms, 1),
            lag_ms=round(lag_ms, 1),
        )
        return bool(int(raw[1]))

    async def _nack(
        self, ck: ChatKeys, batch: Batch, token: str, error: str, backoff_ms: int
    ) -> Nacked:
        """Record the failure: a retry after ``backoff_ms``, or the dead letters."""
        self.stats.failures += 1
        call = self.scripts.nack_call(ck, batch.batch_id, token, error, backoff_ms=backoff_ms)
        res = Scripts.parse_nack(await self._call(call))
        fields: dict[str, Any] = {"chat": batch.chat_id, "batch": batch.batch_id}
        if res.lost:
            emit(log, "lease_lost", **fields)
        elif res.dead:
            self.stats.dead += 1
            emit(log, "dead", **fields, attempts=batch.attempt, error=error)
        else:
            emit(
                log,
                "failed",
                **fields,
                attempt=batch.attempt,
                max_attempts=self.settings.max_attempts,
                retry_in_ms=backoff_ms,
                error=error,
            )
        return res

    def backoff_ms(self, attempt: int) -> int:
        """Exponential backoff with jitter: half fixed, half random."""
        s = self.settings
        ceiling = min(s.retry_max_ms, s.retry_base_ms * 2 ** min(attempt - 1, 30))
        return int(ceiling / 2 + random.uniform(0, ceiling / 2))

    async def _release(self, ck: ChatKeys, batch: Batch, token: str) -> None:
        """Hand the batch back at shutdown: the next sweep redelivers it."""
        call = self.scripts.lease_call(ck, batch.batch_id, token, lease_ms=0, next_attempt=False)
        # If Redis is away the lease simply runs out.
        with contextlib.suppress(RedisError, OSError, asyncio.CancelledError):
            await asyncio.shield(self.calls.one(call))

    async def _call(self, call: Call) -> Any:
        """Run a script that must happen (ack, nack): retry while Redis is away."""
        return await retry_redis(lambda: self.calls.one(call), self.stop)


async def retry_redis(fn: Callable[[], Awaitable[T]], stop: asyncio.Event) -> T:
    delay = 0.05
    while True:
        try:
            return await fn()
        except (RedisError, OSError) as exc:
            if stop.is_set():
                raise
            emit(log, "redis_retry", retry_in_ms=int(delay * 1000), error=str(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


def _batch(batch_id: str, chat_id: str, got: Claimed) -> Batch:
    messages = order_messages(got.items)
    return Batch(
        batch_id=batch_id,
        chat_id=chat_id,
        seq=got.seq,
        attempt=got.attempt,
        reason=got.reason,  # type: ignore[arg-type]
        opened_at=got.opened_ms / 1000,
        closed_at=got.closed_ms / 1000,
        messages=messages,
        channel=channel_of(messages),
        deadline_at=got.deadline_ms / 1000,
    )
