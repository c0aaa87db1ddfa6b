"""The engine: listener, nudger, sweeper and delivery workers of one process.

Any number of engines (processes, hosts) may run against one Redis: they
share the buckets (``ownership.py``), each claiming, nudging and sweeping
its own; the claim script makes sure exactly one claims each batch.

    async with Engine(redis, settings, handler) as engine:
        await engine.add("chat-1", "hello")
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from types import TracebackType

from redis.asyncio import Redis
from redis.exceptions import RedisError

from service.engine.batcher import Batcher
from service.engine.delivery import Delivery
from service.engine.handlers import ConsoleHandler, Handler
from service.engine.listener import Listener
from service.engine.listeners import Listeners
from service.engine.nudger import Nudger
from service.engine.ownership import Ownership
from service.engine.sweeper import Sweeper
from service.logs import emit
from service.models import AddResult, Message
from service.settings import Settings
from service.stats import Stats
from service.store.checks import Check, check_notifications, ensure_primaries_ready
from service.store.connections import is_cluster
from service.store.keyspace import expired_channel

log = logging.getLogger(__name__)

Job = tuple[str, str, str | None, bool]  # (kind, chat id, batch id, recovered)


class Engine:
    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        handler: Handler | None = None,
        *,
        shutdown_timeout_s: float = 10.0,
        log_checks: bool = True,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.batcher = Batcher(redis, settings)
        self.keys = self.batcher.keys
        self.scripts = self.batcher.scripts
        self.stats = Stats()
        self.stopping = asyncio.Event()
        self.delivery = Delivery(
            self.scripts, settings, handler or ConsoleHandler(), self.stats, self.stopping
        )
        self.shutdown_timeout_s = shutdown_timeout_s
        self.log_checks = log_checks  # off when the caller has just run and shown them
        self.checks: list[Check] = []
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._queued: set[tuple[str, str]] = set()
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._workers: list[asyncio.Task[None]] = []
        self.listeners: Listeners | None = None
        self.ownership = Ownership(self.scripts, self.stopping, self._on_ownership)
        owned = self._owned
        self.sweeper = Sweeper(
            self.scripts,
            self.stats,
            self.stopping,
            self.submit_claim,
            self.submit_redeliver,
            owned,
        )
        self.nudger = Nudger(self.scripts, self.stats, self.stopping, owned)

    # --- the append API -----------------------------------------------------

    async def add(self, chat_id: str, message: Message | str) -> AddResult:
        return await self.batcher.add(chat_id, message)

    # --- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        self.checks = await ensure_primaries_ready(
            self.redis, self._url(), self.settings, log=self.log_checks
        )
        with contextlib.suppress(RedisError, OSError):
            await self.ownership.heartbeat()  # this process's share before any work
        db = 0
        if not is_cluster(self.redis):
            db = int(self.redis.connection_pool.connection_kwargs.get("db", 0) or 0)
        channels: dict[bytes, Callable[[bytes], None]] = {
            expired_channel(db).encode(): self._on_key
        }
        for bk in self.keys.all_buckets():
            channels[bk.wake] = functools.partial(self._on_wake, bk.bucket)
        self.listeners = Listeners(
            self.redis,
            self._url(),
            channels,
            self._on_subscribed,
            self.settings,
            self.stats,
            self.stopping,
        )
        await self.listeners.sync()
        self._tasks = [
            asyncio.create_task(self.listeners.run(), name="batcher-topology"),
            asyncio.create_task(self.nudger.run(), name="batcher-nudger"),
            asyncio.create_task(self.sweeper.run(), name="batcher-sweeper"),
            asyncio.create_task(self.ownership.run(), name="batcher-ownership"),
        ]
        self._workers = [
            asyncio.create_task(self._worker(), name=f"batcher-worker-{i}")
            for i in range(self.settings.concurrency)
        ]

    def _url(self) -> str:
        url = self.settings.redis_url
        return url.get_secret_value() if url is not None else "redis://127.0.0.1:6379"

    @property
    def listener(self) -> Listener | None:
        """The (first) expired-event listener: the only one on a single server."""
        return self.listeners.first if self.listeners is not None else None

    async def stop(self) -> None:
        """Stop taking work, let running handlers finish (up to the timeout),
        hand back whatever is still in flight, and close connections."""
        self.stopping.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), self.shutdown_timeout_s)
        for task in self._tasks + self._workers:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._workers, return_exceptions=True)
        if self._tasks:
            await self.ownership.leave()
        if self.listeners is not None:
            await self.listeners.close()
        self._tasks, self._workers = [], []

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def healthy(self) -> bool:
        return self.listeners is not None and self.listeners.healthy()

    def stopped_loops(self) -> list[str]:
        """Background tasks that ended while the engine runs (should be none)."""
        if self.stopping.is_set():
            return []
        tasks = self._tasks + self._workers
        if self.listeners is not None:
            tasks += [n.task for n in self.listeners.nodes.values()]
        return [t.get_name() for t in tasks if t.done()]

    # --- work ---------------------------------------------------------------

    def submit_claim(self, chat_id: str, recovered: bool = False) -> None:
        if ("c", chat_id) in self._queued:
            return
        if recovered:
            emit(log, "recovering", chat=chat_id, why="overdue, no claim")
        self._queued.add(("c", chat_id))
        self._queue.put_nowait(("c", chat_id, None, recovered))

    def submit_redeliver(self, chat_id: str, batch_id: str) -> None:
        if ("r", chat_id) in self._queued:
            return
        self._queued.add(("r", chat_id))
        self._queue.put_nowait(("r", chat_id, batch_id, False))

    def _owned(self) -> frozenset[int]:
        return self.ownership.owned

    def _on_ownership(self, gained: frozenset[int], lost: frozenset[int]) -> None:
        if gained:  # their chats' events went to another process until now
            self.sweeper.wake.set()
            self.nudger.look(gained)

    def _on_wake(self, bucket: int, data: bytes) -> None:
        with contextlib.suppress(ValueError):  # not ours: another writer on the channel
            self.nudger.heard(bucket, int(data))

    def _on_key(self, key: bytes) -> None:
        chat_id = self.keys.parse_timer(key)
        if chat_id is not None:
            self.stats.events += 1
            if self.ownership.owns(self.keys.bucket_of(chat_id)):
                self.submit_claim(chat_id)

    async def _on_subscribed(self, node: Redis) -> None:
        """After every (re)subscribe to a primary: events may have been lost,
        and a restarted (or newly promoted) server may lack the CONFIG SET.
        Re-check that node, then sweep."""
        with contextlib.suppress(RedisError, OSError):
            check = await check_notifications(node, enable=self.settings.configure_redis)
            if check.status != "ok":
                emit(
                    log,
                    "check",
                    level=logging.WARNING,
                    check=check.name,
                    status=check.status,
                    detail=check.detail,
                    fix=check.fix,
                )
        self.sweeper.wake.set()
        self.nudger.look()  # a wake may have been missed too: read every next deadline
        # Events lost just before the resubscribe belong to chats not yet
        # overdue by the grace period: sweep once more when they are.
        loop = asyncio.get_running_loop()
        loop.call_later(self.settings.sweep_grace_ms / 1000 + 0.05, self.sweeper.wake.set)

    async def _worker(self) -> None:
        while True:
            kind, chat_id, batch_id, recovered = await self._queue.get()
            self._queued.discard((kind, chat_id))
            if self.stopping.is_set():
                continue  # left due in Redis: the next sweep (here or elsewhere) takes it
            self._busy += 1
            self._idle.clear()
            try:
                if kind == "c":
                    await self.delivery.process(chat_id, recovered=recovered)
                elif batch_id is not None:
                    await self.delivery.redeliver(chat_id, batch_id)
            except (RedisError, OSError) as exc:
                log.warning("redis error on chat=%s (the sweeper retries): %s", chat_id, exc)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("unexpected error on chat=%s", chat_id)
            finally:
                self._busy -= 1
                if not self._busy:
                    self._idle.set()
