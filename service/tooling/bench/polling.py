"""The polling baseline of ``batcher bench lag``: the seed's checker, by hand.

A minimal client that uses none of the service's code or scripts and no
keyspace events: append = ``RPUSH poll:data:<chat>`` + ``ZADD poll:due
<deadline> <chat>`` (no TTL anywhere); a loop wakes once a second (on a fixed
schedule), takes every chat whose deadline has passed from the zset and
claims it (``ZREM`` + ``RENAME data -> proc``, read, delete).
"""

from __future__ import annotations

import asyncio
import time
from typing import cast

from redis.asyncio import Redis
from redis.exceptions import ResponseError
from rich.progress import Progress, TaskID

from service.models import Message
from service.store.connections import create_redis
from service.tooling.bench.common import LagResult, lag_result, paced, script_calls, wait_until
from service.tooling.bench.lag_setup import Run, prepare

DUE = b"poll:due"
DATA = b"poll:data:"
PROC = b"poll:proc:"
PAGE = 500  # chats claimed per round trip: small pages claim the first ones sooner


class PollingClient:
    def __init__(self, redis: Redis, idle_ms: int, interval_s: float = 1.0) -> None:
        self.redis = redis
        self.idle_ms = idle_ms
        self.interval_s = interval_s
        self.deadline_ms: dict[bytes, float] = {}
        self.lags: list[float] = []
        self.polls = 0
        self.poll_times: list[float] = []  # monotonic time of each poll (evidence)
        self.lost = 0

    async def add_many(self, items: list[tuple[bytes, bytes]]) -> None:
        deadline = time.time() * 1000 + self.idle_ms
        pipe = self.redis.pipeline(transaction=False)
        for chat, payload in items:
            pipe.rpush(DATA + chat, payload)
            pipe.zadd(DUE, {chat: deadline})
            self.deadline_ms[chat] = deadline
        await pipe.execute()

    async def run(self) -> None:
        """Poll on a fixed 1 s schedule (a slow poll does not shift the next)."""
        start = time.monotonic()
        tick = 0
        while True:
            self.polls += 1
            self.poll_times.append(time.monotonic())
            await self.poll()
            tick += 1
            while start + tick * self.interval_s <= time.monotonic():
                tick += 1  # the poll overran a tick: skip it, as a cron would
            await asyncio.sleep(start + tick * self.interval_s - time.monotonic())

    async def poll(self) -> None:
        while True:
            now = time.time() * 1000
            got = await self.redis.zrangebyscore(DUE, "-inf", now, start=0, num=PAGE)
            chats = cast("list[bytes]", got)
            if not chats:
                return
            pipe = self.redis.pipeline(transaction=False)
            for chat in chats:
                pipe.zrem(DUE, chat)
                pipe.rename(DATA + chat, PROC + chat)
                pipe.lrange(PROC + chat, 0, -1)
                pipe.delete(PROC + chat)
            replies = await pipe.execute(raise_on_error=False)
            done = time.time() * 1000
            for i, chat in enumerate(chats):
                renamed, items = replies[4 * i + 1], replies[4 * i + 2]
                if isinstance(renamed, ResponseError) or not items:
                    self.lost += 1
                else:
                    self.lags.append(done - self.deadline_ms[chat])
            if len(chats) < PAGE:
                return


async def run_polling(run: Run, progress: Progress, task: TaskID) -> LagResult:
    client = create_redis(run.url)
    poller = PollingClient(client, run.idle_ms)
    loop: asyncio.Task[None] | None = None
    try:
        await prepare(client, run)
        scripts0 = await script_calls(client)
        started = time.monotonic()
        loop = asyncio.create_task(poller.run())
        payload = Message(id="0", text="x" * 40).stored_json()

        async def send(lo: int, hi: int) -> None:
            await poller.add_many([(str(j).encode(), payload) for j in range(lo, hi)])
            progress.update(task, description="polling: appending", completed=hi)

        await paced(run.n, run.window_s, send)
        data_pttl = int(await client.pttl(DATA + b"0"))
        progress.update(task, description="polling: delivering", completed=0)
        await wait_until(
            lambda: len(poller.lags) + poller.lost >= run.n,
            run.wait_s,
            lambda: progress.update(task, completed=len(poller.lags)),
        )
        late = int(await client.zcard(DUE))  # still due: not yet polled, data intact
        gaps = [b - a for a, b in zip(poller.poll_times, poller.poll_times[1:], strict=False)]
        checks = {
            "nudger": False,
            "sweeper": False,
            "events": 0,
            "poll_interval_s": poller.interval_s,
            "polls": poller.polls,
            "mean_poll_gap_s": round(sum(gaps) / len(gaps), 3) if gaps else None,
            "data_pttl_ms_mid_run": data_pttl,
            "scripts_run": await script_calls(client) - scripts0,
        }
        seconds = time.monotonic() - started
        return lag_result("polling", run.n, poller.lags, seconds, checks, late=late)
    finally:
        if loop is not None:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)
        await client.aclose()
