"""One expired-event listener per primary, following the cluster's topology.

Keyspace events are published by the node where the key expired, and only
by primaries. A single server has one listener; on a Redis Cluster the set
of primaries is read again every few seconds (a failover promotes a replica,
a node is added or removed), listeners are started for new primaries and
stopped for those that are gone, and each new subscription is followed, as
always, by a check of that node's notifications and a sweep: the events of a
primary nobody listened to are found in the deadline index. A listener that
loses its connection has the topology read again at once (its node may have
failed over).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from service.engine.listener import Listener, dedicated_client
from service.engine.loops import sleep_or_stop
from service.logs import emit
from service.settings import Settings
from service.stats import Stats
from service.store.connections import create_redis, is_cluster, primary_urls

log = logging.getLogger(__name__)

TOPOLOGY_REFRESH_S = 2.0
MIN_REFRESH_S = 0.25

OnSubscribed = Callable[[Redis], Coroutine[Any, Any, None]]


@dataclass(slots=True)
class _Node:
    url: str
    commands: Redis  # for the node's checks (CONFIG GET/SET)
    listener: Listener
    task: asyncio.Task[None]


class Listeners:
    def __init__(
        self,
        redis: Redis,
        url: str,
        channels: Mapping[bytes, Callable[[bytes], None]],
        on_subscribed: OnSubscribed,
        settings: Settings,
        stats: Stats,
        stop: asyncio.Event,
    ) -> None:
        self.redis = redis
        self.url = url
        self.channels = channels
        self.on_subscribed = on_subscribed
        self.settings = settings
        self.stats = stats
        self.stop = stop
        self.cluster = is_cluster(redis)
        self.nodes: dict[str, _Node] = {}
        self._refresh = asyncio.Event()  # a listener lost its node: read the topology now

    @property
    def first(self) -> Listener | None:
        return next((n.listener for n in self.nodes.values()), None)

    def healthy(self) -> bool:
        return bool(self.nodes) and all(n.listener.healthy() for n in self.nodes.values())

    def states(self) -> dict[str, bool]:
        """Primary ("host:port") -> whether its listener is subscribed."""
        return {name: n.listener.subscribed for name, n in self.nodes.items()}

    async def sync(self, *, refresh: bool = False) -> bool:
        """Listen to exactly the current primaries; True when that changed anything."""
        primaries = await primary_urls(self.redis, self.url, refresh=refresh)
        gone = [name for name in self.nodes if name not in primaries]
        for name in gone:
            await self._drop(name)
        added = [name for name in primaries if name not in self.nodes]
        for name in added:
            self._add(name, primaries[name])
        if gone or added:
            emit(log, "topology", primaries=len(primaries), added=len(added), gone=len(gone))
        return bool(gone or added)

    def _add(self, name: str, url: str) -> None:
        if self.cluster:
            commands = create_redis(url)
            client = dedicated_client(commands)
        else:
            commands, client = self.redis, dedicated_client(self.redis)

        async def subscribed() -> None:
            await self.on_subscribed(commands)

        listener = Listener(
            client,
            self.channels,
            subscribed,
            ping_ms=self.settings.listener_ping_ms,
            dead_ms=self.settings.listener_dead_ms,
            stats=self.stats,
            stop=self.stop,
            on_lost=self._refresh.set,
        )
        task = asyncio.create_task(listener.run(), name=f"batcher-listener-{name}")
        self.nodes[name] = _Node(url, commands, listener, task)

    async def _drop(self, name: str) -> None:
        node = self.nodes.pop(name)
        node.task.cancel()
        await asyncio.gather(node.task, return_exceptions=True)
        await node.listener.redis.aclose()
        if node.commands is not self.redis:
            await node.commands.aclose()

    async def run(self) -> None:
        """Keep the listeners in step with the primaries (a cluster's can change)."""
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._refresh.wait(), TOPOLOGY_REFRESH_S)
            self._refresh.clear()
            if self.stop.is_set():
                break
            if not self.cluster:
                continue
            try:
                await self.sync(refresh=True)
            except (RedisError, OSError) as exc:
                log.debug("topology refresh failed: %s", exc)
            except Exception:  # a background loop logs and carries on
                log.exception("topology refresh failed")
            await sleep_or_stop(self.stop, MIN_REFRESH_S)  # a failing node asks often

    async def close(self) -> None:
        for name in list(self.nodes):
            with contextlib.suppress(RedisError, OSError):
                await self._drop(name)
