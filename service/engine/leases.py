"""A claimed batch's lease, as the worker that holds it knows it.

Redis keeps the lease (the chat's score in ``inflight``); once it runs out the
sweeper hands the batch to another worker, which then owns the chat. So the
worker must not still be running the handler by then, or the bot would see two
batches of one chat at once. ``Lease`` tracks, in event-loop time, how long
the lease is surely held (from the moment the call that set it was *sent*:
Redis set it later than that, so it lasts at least as long) and bounds the
handler by it: the heartbeat renews the lease every ``lease/3`` and moves the
handler's deadline along; a renewal that Redis refuses (the batch was taken
over) or that cannot reach Redis in time ends the handler ``lease/6`` before
the lease can run out. Most handlers return well within ``lease/3``: for
them the heartbeat is only a timer that never fires (no task, no call).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.exceptions import RedisError

from service.engine.coalescer import Coalescer
from service.logs import emit
from service.models import Batch
from service.store.keyspace import ChatKeys

log = logging.getLogger(__name__)


class Lease:
    def __init__(
        self,
        calls: Coalescer,
        ck: ChatKeys,
        batch: Batch,
        token: str,
        *,
        lease_ms: int,
        sent_at: float,
    ) -> None:
        self.calls = calls
        self.ck = ck
        self.batch = batch
        self.token = token
        self.lease_ms = lease_ms
        self.lease_s = lease_ms / 1000
        self.margin_s = self.lease_s / 6
        self.held_until = sent_at + self.lease_s
        self.lost = False
        self._stopped = False
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def safe_until(self) -> float:
        """Loop time by which the handler must have let go of the batch."""
        return self.held_until - self.margin_s

    def broken(self, now: float) -> bool:
        """True when the lease was lost or could not be renewed in time."""
        return self.lost or now >= self.safe_until

    def start(self, bound: asyncio.Timeout, handler_deadline: float) -> None:
        """Renew every ``lease/3`` from now on, keeping ``bound`` (the handler's
        timeout) at the earlier of ``handler_deadline`` and the lease."""
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.lease_s / 3, self._spawn, bound, handler_deadline)

    async def stop(self) -> None:
        """Stop renewing; returns once no renewal can still be under way."""
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                await self._task

    def _spawn(self, bound: asyncio.Timeout, handler_deadline: float) -> None:
        self._timer = None
        if not self._stopped:
            self._task = asyncio.create_task(self.keep(bound, handler_deadline))

    async def keep(self, bound: asyncio.Timeout, handler_deadline: float) -> None:
        # ``_stopped`` is checked around every renewal: a cancel() that lands
        # inside a redis-py call can be lost.
        loop = asyncio.get_running_loop()
        call = self.calls.scripts.lease_call(
            self.ck, self.batch.batch_id, self.token, lease_ms=self.lease_ms, next_attempt=False
        )
        while not self._stopped:
            sent = loop.time()
            try:
                renewed = int(await self.calls.one(call))
            except (RedisError, OSError) as exc:
                # The bound stays where it was: it fires unless a later renewal lands.
                emit(log, "redis_retry", chat=self.batch.chat_id, error=str(exc))
                renewed = -1
            if self._stopped or bound.expired():
                # Stopped, or the bound fired while the renewal was under way
                # (the handler is being cancelled): nothing left to move.
                return
            if renewed == 0:
                self.lost = True
                emit(log, "lease_lost", chat=self.batch.chat_id, batch=self.batch.batch_id)
                bound.reschedule(loop.time())
                return
            if renewed > 0:
                self.held_until = sent + self.lease_s
                bound.reschedule(min(handler_deadline, self.safe_until))
            await asyncio.sleep(self.lease_s / 3)
