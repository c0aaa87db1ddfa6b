"""``batcher chaos --cluster``: the chaos soak against a local Redis Cluster.

Three primaries with a replica each (``service.tooling.cluster.LocalCluster``,
the repo's redis.conf, ``--appendfsync`` as given), two ``batcher serve``
processes pointed at one node (the cluster is detected) with
``BATCHER_ACK_REPLICAS=1``, so that a write is acknowledged only once a
replica has it, and no proxy. The faults (``faults.CLUSTER_KINDS``) are the
service and sink ones, per-primary pub/sub kills and script flushes, and the
cluster's own: a failover, a primary's crash (its replica takes over, the
node comes back as a replica) and the live move of a bucket's slot.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx
import redis
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from rich.console import Console

from service.store.embedded import find_server_binary
from service.store.keyspace import Keyspace
from service.tooling.chaos.faults import Fault, Injector, Rig
from service.tooling.chaos.run import (
    finish,
    rig_failed,
    run_soak,
    service_env,
    start_services,
    stop_all,
)
from service.tooling.cluster import HOST, ClusterError, ClusterNodeProc, LocalCluster
from service.tooling.procs import ServiceProc
from service.tooling.sink import Sink

PRIMARIES, REPLICAS_PER_PRIMARY = 3, 1
SETTLE_S = 30.0  # bound on each wait for the cluster to settle after a fault
T = TypeVar("T")


class ClusterInjector(Injector):
    """The injector, with the Redis faults acting on the nodes of ``rig.cluster``.

    The cluster's own calls are blocking (redis-py, sync); each fault runs them
    in one worker thread, one fault at a time."""

    @property
    def cluster(self) -> LocalCluster:
        if self.rig.cluster is None:
            raise RuntimeError("the cluster injector needs a rig with a cluster")
        return self.rig.cluster

    def _primary(self, fault: Fault) -> ClusterNodeProc:
        node = self.rng.choice(self.cluster.primaries())
        fault.target = f":{node.port}"
        return node

    async def _pubsub_kill(self, fault: Fault, _: float) -> None:
        node = await asyncio.to_thread(self._primary, fault)
        async with Redis(host=HOST, port=node.port, socket_timeout=5) as client:
            fault.detail["killed"] = await client.client_kill_filter(_type="pubsub")

    async def _script_flush(self, fault: Fault, _: float) -> None:
        node = await asyncio.to_thread(self._primary, fault)
        async with Redis(host=HOST, port=node.port, socket_timeout=5) as client:
            await client.script_flush()

    async def _cluster_failover(self, fault: Fault, _: float) -> None:
        await asyncio.to_thread(self._failover, fault)

    async def _primary_kill(self, fault: Fault, _: float) -> None:
        await asyncio.to_thread(self._kill_primary, fault)

    async def _slot_move(self, fault: Fault, _: float) -> None:
        await asyncio.to_thread(self._move_bucket, fault)

    def _failover(self, fault: Fault) -> None:
        primary = self._primary(fault)
        replica = self.rng.choice(self.cluster.replicas_of(primary))
        fault.target += f" -> :{replica.port}"
        self.cluster.failover(replica, timeout_s=SETTLE_S)
        self.cluster.wait_ok(SETTLE_S)

    def _kill_primary(self, fault: Fault) -> None:
        """SIGKILL a primary; wait for a replica of it to be promoted and the cluster
        to be ok; start the node again and wait for it to be a replica of the new
        primary, its replication link up, and the cluster ok."""
        c, t0 = self.cluster, fault.start
        node = self._primary(fault)
        replicas = c.replicas_of(node)
        c.kill(node)

        def promoted() -> ClusterNodeProc | None:
            return next((r for r in replicas if r in c.primaries()), None)

        new = _until("a replica of the killed primary to take over", promoted)
        c.wait_ok(SETTLE_S)
        fault.target += f" -> :{new.port}"
        fault.detail["promoted_in_s"] = round(time.monotonic() - t0, 3)
        node.server.start(SETTLE_S)

        def rejoined() -> bool | None:
            if node not in c.replicas_of(new):
                return None
            with redis.Redis(host=HOST, port=node.port, socket_timeout=5) as client:
                link = client.info("replication").get("master_link_status")
            return True if link == "up" else None

        try:
            _until(f"{node} to rejoin as a replica of {new}", rejoined)
        finally:
            fault.detail["rejoined_as"] = f"{node.role} of {(node.primary_id or '-')[:8]}"
        c.wait_ok(SETTLE_S)
        fault.detail["rejoined_in_s"] = round(time.monotonic() - t0, 3)

    def _move_bucket(self, fault: Fault) -> None:
        """Move the slot of one bucket of the service's keyspace to another primary."""
        keys = Keyspace()
        bucket = self.rng.randrange(keys.buckets)
        slot = key_slot(keys.bucket(bucket).due)
        source = self.cluster.node_for_slot(slot)
        target = self.rng.choice([p for p in self.cluster.primaries() if p is not source])
        fault.target = f"bucket {bucket} (slot {slot}) :{source.port} -> :{target.port}"
        with redis.Redis(host=HOST, port=source.port, socket_timeout=5) as client:
            count = client.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)
        fault.detail["keys"] = int(count)
        self.cluster.move_slot(slot, target, timeout_s=SETTLE_S)
        self.cluster.wait_ok(SETTLE_S)


def _until(what: str, check: Callable[[], T | None], timeout_s: float = SETTLE_S) -> T:
    """Poll ``check`` until it returns something (a Redis error means "not yet")."""
    deadline, delay = time.monotonic() + timeout_s, 0.01
    problem = "no answer yet"
    while True:
        try:
            if (got := check()) is not None:
                return got
        except (redis.RedisError, OSError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out waiting for {what} ({problem})")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


async def cluster_soak(
    args: argparse.Namespace, console: Console, kinds: list[str], run_dir: Path
) -> dict[str, Any]:
    console.print(
        f"chaos soak on a Redis Cluster ({PRIMARIES} primaries, {REPLICAS_PER_PRIMARY} replica "
        f"each): {args.minutes} min, seed {args.seed}, appendfsync {args.appendfsync}, "
        f"run dir {run_dir}"
    )
    app_secret, forward_secret = secrets.token_hex(16), secrets.token_hex(16)
    cluster = LocalCluster(
        find_server_binary(),
        run_dir / "cluster",
        primaries=PRIMARIES,
        replicas_per_primary=REPLICAS_PER_PRIMARY,
        extra_args=("--appendfsync", args.appendfsync),
    )
    sink = Sink(forward_secret.encode())
    services: list[ServiceProc] = []
    admin: Redis | None = None
    started = time.monotonic()
    report: dict[str, Any] = {}
    try:
        await asyncio.to_thread(cluster.start, 60.0)
        url = cluster.url
        admin = cast(Redis, RedisCluster.from_url(url, socket_timeout=5, socket_connect_timeout=2))
        await sink.start()
        env = service_env(url, sink, forward_secret, app_secret, BATCHER_ACK_REPLICAS="1")
        async with httpx.AsyncClient() as http:
            await start_services(env, run_dir, http, services)
            rig = Rig(None, admin, None, sink, services, http, cluster=cluster)
            injector = ClusterInjector(rig, args.seed, kinds=kinds or None)
            report = await run_soak(args, console, rig, injector, kinds, app_secret.encode())
    except Exception as exc:
        report = rig_failed(exc, console)
    finally:
        await stop_all(services, sink)
        if admin is not None:
            await admin.aclose()
        topology = _topology(cluster)
        await asyncio.to_thread(cluster.stop)
    return finish(report, args, services, started, run_dir, redis="cluster", cluster_nodes=topology)


def _topology(cluster: LocalCluster) -> list[str]:
    """The nodes at the end of the run, as the cluster last said (for the report)."""
    with contextlib.suppress(ClusterError, redis.RedisError, OSError):
        cluster.primaries()
    return [f":{n.port} {n.role}{'' if n.running else ' (down)'}" for n in cluster.nodes]
