"""The naive baseline of ``batcher bench lag``: the seed's design, by hand.

A minimal client that uses none of the service's code or scripts:

- append: ``SET naive:timer:<chat> 1 PX <idle>``, ``RPUSH naive:data:<chat>``,
  ``PEXPIRE naive:data:<chat> <ttl>`` (the seed's 60 s TTL on the data);
- a listener on ``__keyevent@<db>__:expired`` that, for each timer event,
  does ``RENAME naive:data:<chat> naive:proc:<chat>`` and reads the batch.

Nothing nudges the timers and nothing sweeps: a batch is delivered when
Redis's expiry cycle gets round to deleting its timer. It is lost when the
data key is gone by then (its TTL beat the late event) or when no event came
within the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from redis.asyncio import Redis
from redis.exceptions import ResponseError
from rich.progress import Progress, TaskID

from service.models import Message
from service.store.connections import create_redis
from service.tooling.bench.common import LagResult, lag_result, paced, script_calls, wait_until
from service.tooling.bench.lag_setup import Run, expiry_config, prepare

TIMER = b"naive:timer:"
DATA = b"naive:data:"
PROC = b"naive:proc:"


class NaiveClient:
    """Timer key + keyspace event + a data key with a TTL."""

    def __init__(self, redis: Redis, subscriber: Redis, idle_ms: int, data_ttl_ms: int) -> None:
        self.redis = redis
        self.subscriber = subscriber  # pub/sub holds a connection of its own
        self.idle_ms = idle_ms
        self.data_ttl_ms = data_ttl_ms
        self.deadline_ms: dict[bytes, float] = {}
        self.lags: list[float] = []
        self.data_gone = 0  # RENAME found no data key: its TTL beat the event
        self.events = 0
        self._queue: list[bytes] = []
        self._wake = asyncio.Event()

    async def add_many(self, items: list[tuple[bytes, bytes]]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for chat, payload in items:
            pipe.set(TIMER + chat, b"1", px=self.idle_ms)
            pipe.rpush(DATA + chat, payload)
            pipe.pexpire(DATA + chat, self.data_ttl_ms)
        # Redis's clock after the chunk: each timer was set at or before it,
        # so the lag measured from here is at most the true lag.
        pipe.time()
        replies = await pipe.execute()
        secs, micros = replies[-1]
        deadline = int(secs) * 1000 + int(micros) / 1000 + self.idle_ms
        for chat, _ in items:
            self.deadline_ms[chat] = deadline

    async def listen(self, db: int, subscribed: asyncio.Event) -> None:
        pubsub = self.subscriber.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(f"__keyevent@{db}__:expired")
            subscribed.set()
            while True:
                msg = await pubsub.get_message(timeout=1.0)
                if msg is None:
                    continue
                key = msg["data"]
                if isinstance(key, bytes) and key.startswith(TIMER):
                    self.events += 1
                    self._queue.append(key[len(TIMER) :])
                    self._wake.set()
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def claim(self) -> None:
        """RENAME data -> proc for every chat whose timer expired, read it, drop it."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            chats, self._queue = self._queue, []
            pipe = self.redis.pipeline(transaction=False)
            for chat in chats:
                pipe.rename(DATA + chat, PROC + chat)
                pipe.lrange(PROC + chat, 0, -1)
                pipe.delete(PROC + chat)
            replies = await pipe.execute(raise_on_error=False)
            now = time.time() * 1000
            for i, chat in enumerate(chats):
                renamed, items = replies[3 * i], replies[3 * i + 1]
                if isinstance(renamed, ResponseError) or not items:
                    self.data_gone += 1
                else:
                    self.lags.append(now - self.deadline_ms[chat])


async def run_naive(run: Run, data_ttl_ms: int, progress: Progress, task: TaskID) -> LagResult:
    client, subscriber = create_redis(run.url), create_redis(run.url)
    naive = NaiveClient(client, subscriber, run.idle_ms, data_ttl_ms)
    db = int(client.connection_pool.connection_kwargs.get("db", 0) or 0)
    subscribed = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        await prepare(client, run)
        config = await expiry_config(client)
        scripts0 = await script_calls(client)
        started = time.monotonic()
        tasks = [
            asyncio.create_task(naive.listen(db, subscribed)),
            asyncio.create_task(naive.claim()),
        ]
        await asyncio.wait_for(subscribed.wait(), 10)
        payload = Message(id="0", text="x" * 40).stored_json()

        async def send(lo: int, hi: int) -> None:
            await naive.add_many([(str(j).encode(), payload) for j in range(lo, hi)])
            progress.update(task, description="naive: appending", completed=hi)

        await paced(run.n, run.window_s, send)
        # Evidence, mid-run: the data keys carry a TTL (and the timers too).
        sample = [str(j).encode() for j in range(0, run.n, max(1, run.n // 5))]
        data_pttl = [int(await client.pttl(DATA + c)) for c in sample]
        timer_pttl = [int(await client.pttl(TIMER + c)) for c in sample]
        progress.update(task, description="naive: waiting for events", completed=0)
        # Wait until every data key's TTL has run out, at least: whatever is
        # not delivered by then is lost for sure.
        margin_s = max(run.opts.wait_s, (data_ttl_ms - run.idle_ms) / 1000 + 1)
        await wait_until(
            lambda: len(naive.lags) + naive.data_gone >= run.n,
            run.idle_ms / 1000 + margin_s,
            lambda: progress.update(task, completed=len(naive.lags)),
        )
        missing = run.n - len(naive.lags) - naive.data_gone
        checks = {
            "nudger": False,
            "sweeper": False,
            "data_ttl_ms": data_ttl_ms,
            "data_pttl_ms_mid_run": data_pttl,
            "timer_pttl_ms_mid_run": timer_pttl,
            "events": naive.events,
            "lost_data_expired": naive.data_gone,
            "lost_no_event": missing,
            "lost_detail": (
                f"{naive.data_gone:,} data key(s) expired before their timer's event, "
                f"{missing:,} timer event(s) never came within {margin_s:g} s "
                "of the last deadline (the data's TTL had run out by then)"
            ),
            "scripts_run": await script_calls(client) - scripts0,
            **config,
        }
        return lag_result("naive", run.n, naive.lags, time.monotonic() - started, checks)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await subscriber.aclose()
        await client.aclose()
