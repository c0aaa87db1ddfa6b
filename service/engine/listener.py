"""The expired-event listener: one dedicated pub/sub connection, one reader.

It subscribes (exact channels, not patterns) to ``__keyevent@<db>__:expired``
and to the buckets' wake channels, and does nothing but hand each message to
its channel's callback (which parses an event into a chat id): the
claims run in other tasks, so a burst of events never backs up in Redis's
output buffer for this client. redis-py cannot see a half-open connection
(its health check sends a PING but never waits for the PONG), so the reader
pings on its own and declares the connection dead when nothing at all has
come back within ``listener_dead_ms``. Every (re)subscription is followed by
``on_subscribed`` (the engine re-checks the server's config and sweeps):
events published while we were away are lost, the sweep finds their chats.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from service.engine.loops import sleep_or_stop
from service.logs import emit
from service.stats import Stats

log = logging.getLogger(__name__)

BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 2.0


class ListenerDead(Exception):
    pass


def dedicated_client(redis: Redis) -> Redis:
    """A client of its own for pub/sub, with redis-py's silent retries off.

    The supervisor below reconnects and, unlike redis-py's internal retry,
    sweeps afterwards.
    """
    pool = redis.connection_pool
    kwargs = dict(pool.connection_kwargs)
    kwargs["retry"] = Retry(NoBackoff(), 0)
    kwargs["socket_timeout"] = None
    new_pool = ConnectionPool(connection_class=pool.connection_class, max_connections=4, **kwargs)
    return Redis(connection_pool=new_pool)


class Listener:
    def __init__(
        self,
        redis: Redis,
        channels: Mapping[bytes, Callable[[bytes], None]],
        on_subscribed: Callable[[], Coroutine[Any, Any, None]],
        *,
        ping_ms: int,
        dead_ms: int,
        stats: Stats,
        stop: asyncio.Event,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self.redis = redis
        self.on_lost = on_lost  # told when the connection fails (a cluster re-reads its topology)
        self.channels = dict(channels)  # channel -> what to do with a message's data
        self.on_subscribed = on_subscribed
        self.ping_s = ping_ms / 1000
        self.dead_s = dead_ms / 1000
        self.stats = stats
        self.stop = stop
        self.subscribed = False
        self.last_frame = 0.0  # monotonic time of the last frame received
        self._tasks: set[asyncio.Task[None]] = set()
        self._pubsub: PubSub | None = None
        self._backoff = BACKOFF_MIN_S

    async def run(self) -> None:
        """Supervise: subscribe, read until the connection fails, reconnect."""
        self._backoff = BACKOFF_MIN_S
        while not self.stop.is_set():
            pubsub = self.redis.pubsub()
            self._pubsub = pubsub
            try:
                # Connecting has no liveness check of its own: bound it.
                async with asyncio.timeout(self.dead_s):
                    await pubsub.subscribe(*self.channels)
                await self._read(pubsub)
            except Exception as exc:  # any failure: reconnect (and sweep) rather than die
                if not isinstance(exc, (RedisError, OSError, ListenerDead, TimeoutError)):
                    log.exception("listener failed unexpectedly")
                if not self.stop.is_set():
                    if self.on_lost is not None:
                        self.on_lost()
                    emit(
                        log,
                        "listener_lost",
                        error=f"{type(exc).__name__}: {exc}",
                        retry_in_ms=int(self._backoff * 1000),
                    )
            finally:
                self.subscribed = False
                self._pubsub = None
                await _close(pubsub)
            if self.stop.is_set():
                break
            self.stats.reconnects += 1
            await sleep_or_stop(self.stop, self._backoff)
            self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)

    async def _read(self, pubsub: PubSub) -> None:
        self.last_frame = time.monotonic()
        ping_at = self.last_frame + self.ping_s
        while not self.stop.is_set():
            msg = await pubsub.get_message(timeout=min(self.ping_s, 0.5))
            now = time.monotonic()
            if msg is not None:
                self.last_frame = now
                kind = msg["type"]
                if kind == "message":
                    self.channels[msg["channel"]](msg["data"])
                elif kind == "subscribe" and msg["data"] == len(self.channels):
                    self._subscribed()  # the last channel's confirmation
            if now - self.last_frame >= self.dead_s:
                raise ListenerDead(f"no reply from Redis for {now - self.last_frame:.1f}s")
            if now >= ping_at:
                # Any frame proves the connection; the PONG comes back as one.
                await pubsub.ping()
                ping_at = now + self.ping_s

    def _subscribed(self) -> None:
        self.subscribed = True
        self._backoff = BACKOFF_MIN_S
        self.stats.subscribes += 1
        emit(
            log,
            "subscribed",
            channel=next(iter(self.channels)).decode(),  # the expired events' (first)
            channels=len(self.channels),
            reconnects=self.stats.reconnects,
        )
        task = asyncio.create_task(self.on_subscribed())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def healthy(self) -> bool:
        return self.subscribed and time.monotonic() - self.last_frame < self.dead_s


async def _close(pubsub: PubSub) -> None:
    with contextlib.suppress(RedisError, OSError, TimeoutError):
        await asyncio.wait_for(pubsub.aclose(), 2.0)  # type: ignore[no-untyped-call]
