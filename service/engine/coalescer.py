"""Coalescing: concurrent callers share pipelines, sent once per event-loop tick.

Under load many webhooks are in flight at once; each would pay for its own
round trip and its own redis-py pipeline. A caller here queues its script
calls and awaits a future; the first caller of a tick schedules a flush
with ``call_soon``, which sends everything queued by then in one pipeline
and hands each caller its own slice of the replies. An idle service pays
nothing extra: a lone call is flushed on the very next loop iteration.

Appends use a ``durable`` coalescer (its pipelines end with ``WAIT`` when
``BATCHER_ACK_REPLICAS`` is set); claims, acks and lease renewals share
another one, so a wave of expiry events costs a few round trips, not three
per batch.
"""

from __future__ import annotations

import asyncio
from typing import Any

from service.store.runner import Call
from service.store.scripts import Scripts

# A tick's calls go out in pipelines of at most this many (a caller's own
# calls are never split). Under load that keeps two or more pipelines in
# flight: Redis runs one while Python packs the next and parses the last.
# `batcher bench ingest`, 64 producers: one pipeline per tick (2000) gave
# 44 % of redis-benchmark's pipelined rate, 32 gave 72 %.
MAX_CALLS_PER_PIPELINE = 32


class Coalescer:
    def __init__(self, scripts: Scripts, *, durable: bool = True) -> None:
        self.scripts = scripts
        self.durable = durable
        self._pending: list[tuple[list[Call], asyncio.Future[list[Any]]]] = []
        self._queued_calls = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, calls: list[Call]) -> list[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._pending.append((calls, future))
        self._queued_calls += len(calls)
        if self._queued_calls >= MAX_CALLS_PER_PIPELINE:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    async def one(self, call: Call) -> Any:
        """Run one call with the others of this tick; its error is raised."""
        (result,) = await self.run([call])
        if isinstance(result, Exception):
            raise result
        return result

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending, self._queued_calls = self._pending, [], 0
        if batch:
            task = asyncio.create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[list[Call], asyncio.Future[list[Any]]]]) -> None:
        calls = [c for group, _ in batch for c in group]
        try:
            results = await self.scripts.run_many(calls, durable=self.durable)
        except BaseException as exc:  # every caller learns of the failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        start = 0
        for group, future in batch:
            if not future.done():
                future.set_result(results[start : start + len(group)])
            start += len(group)
