"""A real local Redis Cluster for tests and benchmarks: ``redis-server`` processes on free
loopback ports, each a :class:`RedisServer` with the repo's redis.conf, the cluster formed
from Python with redis-py (no redis-cli needed).

Needs Redis >= 7.0 (or Valkey): each node's cluster bus gets a free port of its own with
``cluster-port`` (port + 10000 may not even exist), given to ``CLUSTER MEET``, and slots are
assigned with ``CLUSTER ADDSLOTSRANGE``. Every wait polls against a deadline and raises
:class:`ClusterError` saying what was still missing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import redis

from service.store.embedded import EmbeddedRedisError, RedisServer, free_port

SLOTS, HOST = 16384, "127.0.0.1"
DEBUG_ARGS = ("--enable-debug-command", "local")  # as tests/conftest.py's (off since Redis 7)
_MIGRATE_BATCH, _MIGRATE_TIMEOUT_MS, _LAUNCH_TRIES = 100, 5000, 3
Role = Literal["primary", "replica"]


class ClusterError(EmbeddedRedisError):
    """The cluster did not form or settle in time, or was asked something impossible."""


@dataclass(eq=False)
class ClusterNodeProc:
    """One node: its process, and its role as last read from the cluster."""

    server: RedisServer
    bus_port: int
    node_id: str = ""
    role: Role = "primary"
    primary_id: str | None = None  # a replica's primary

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def running(self) -> bool:
        return self.server.running

    def __repr__(self) -> str:
        return f"ClusterNodeProc(:{self.port} {self.role} {self.node_id[:8]})"


@dataclass(frozen=True)
class _Entry:
    """One line of CLUSTER NODES: a node as seen by the node that answered."""

    node_id: str
    flags: frozenset[str]
    primary_id: str | None
    slots: tuple[tuple[int, int], ...]

    @property
    def role(self) -> Role:
        return "replica" if "slave" in self.flags else "primary"

    def describe(self) -> str:
        of = f" of {self.primary_id}" if self.primary_id else ""
        return f"{self.role}{of} with slots {list(self.slots)}"

    def owns(self, slot: int) -> bool:
        return any(lo <= slot <= hi for lo, hi in self.slots)


def _parse_nodes(text: str) -> dict[str, _Entry]:
    """`<id> <ip:port@bus> <flags> <primary|-> <ping> <pong> <epoch> <link> <slot>...`"""
    entries: dict[str, _Entry] = {}
    for fields in (line.split() for line in text.splitlines()):
        if len(fields) < 8:
            continue
        slots = []
        for item in fields[8:]:
            if not item.startswith("["):  # "[slot->-id]": a slot being migrated or imported
                lo, _, hi = item.partition("-")
                slots.append((int(lo), int(hi or lo)))
        node_id, flags, primary = fields[0], frozenset(fields[2].split(",")), fields[3]
        entries[node_id] = _Entry(node_id, flags, None if primary == "-" else primary, tuple(slots))
    return entries


def _myself(view: dict[str, _Entry]) -> _Entry:
    return next(e for e in view.values() if "myself" in e.flags)


_Views = dict["ClusterNodeProc", dict[str, _Entry]]  # each running node's CLUSTER NODES


class LocalCluster:
    """`primaries` primaries with `replicas_per_primary` replicas each, under `base_dir`."""

    def __init__(
        self,
        binary: Path,
        base_dir: Path,
        *,
        primaries: int = 3,
        replicas_per_primary: int = 1,
        node_timeout_ms: int = 1000,
        extra_args: Sequence[str] = (),
    ) -> None:
        if primaries < 1 or replicas_per_primary < 0:
            raise ValueError("need primaries >= 1 and replicas_per_primary >= 0")
        self.binary, self.base_dir = Path(binary), Path(base_dir)
        self.primary_count, self.replicas_per_primary = primaries, replicas_per_primary
        self.node_timeout_ms, self.extra_args = node_timeout_ms, tuple(extra_args)
        self.nodes: list[ClusterNodeProc] = []
        self._clients: dict[int, redis.Redis] = {}
        self._used_ports: set[int] = set()

    @property
    def url(self) -> str:
        """The first running primary (by last-known roles): a seed for cluster clients."""
        if not self.nodes:
            raise ClusterError("the cluster has not been started")
        seed = next((n for n in self.nodes if n.running and n.role == "primary"), self.nodes[0])
        return f"redis://{HOST}:{seed.port}"

    def start(self, timeout_s: float = 30.0) -> None:
        """Start every node and form the cluster; on any failure, kill what was started."""
        if self.nodes:
            raise ClusterError("start() was already called")
        deadline = time.monotonic() + timeout_s
        try:
            for _ in range(self.primary_count * (1 + self.replicas_per_primary)):
                self.nodes.append(self._launch(deadline))
            primaries, replicas = self.nodes[: self.primary_count], self.nodes[self.primary_count :]
            for i, node in enumerate(primaries):
                # Distinct epochs up front spare the cluster its epoch-collision resolution.
                self._cmd(node, "CLUSTER", "SET-CONFIG-EPOCH", i + 1)
                lo, hi = i * SLOTS // len(primaries), (i + 1) * SLOTS // len(primaries) - 1
                self._cmd(node, "CLUSTER", "ADDSLOTSRANGE", lo, hi)
            for node in self.nodes[1:]:
                self._cmd(self.nodes[0], "CLUSTER", "MEET", HOST, node.port, node.bus_port)
            self._poll("every node to know all the others", self._strangers, deadline)
            for i, node in enumerate(replicas):
                node.role, node.primary_id = "replica", primaries[i % len(primaries)].node_id
                self._cmd(node, "CLUSTER", "REPLICATE", node.primary_id)

            def formed() -> str | None:
                for node in replicas:
                    if (me := _myself(self._view(node))).primary_id != node.primary_id:
                        return f"{node} is not a replica yet (it is {me.describe()})"
                return self._unsettled()

            self._poll("the cluster to form", formed, deadline)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGKILL every node (the data is thrown away). Idempotent."""
        for node in self.nodes:
            self.kill(node)

    def kill(self, node: ClusterNodeProc) -> None:
        """SIGKILL one node: a crash, as the rest of the cluster sees it."""
        if (client := self._clients.pop(node.port, None)) is not None:
            client.close()
        node.server.stop(kill=True)

    def primaries(self) -> list[ClusterNodeProc]:
        """The running primaries, roles re-read from each node's own CLUSTER NODES line."""
        self._refresh()
        return [n for n in self.nodes if n.running and n.role == "primary"]

    def replicas_of(self, node: ClusterNodeProc) -> list[ClusterNodeProc]:
        """The running replicas of `node`, as they say now."""
        self._refresh()
        return [n for n in self.nodes if n.running and n.primary_id == node.node_id]

    def node_for_slot(self, slot: int) -> ClusterNodeProc:
        """The running primary that claims `slot` for itself."""
        if not 0 <= slot < SLOTS:
            raise ValueError(f"slot {slot} is not in 0..{SLOTS - 1}")
        for node, view in self._refresh().items():
            if (me := _myself(view)).role == "primary" and me.owns(slot):
                return node
        raise ClusterError(f"no running primary serves slot {slot}")

    def wait_ok(self, timeout_s: float = 15.0) -> None:
        """Wait until CLUSTER INFO says cluster_state:ok on every running node."""

        def not_ok() -> str | None:
            bad = [f":{n.port}" for n in self.nodes if n.running and not self._state_ok(n)]
            return f"cluster_state is not ok on {', '.join(bad)}" if bad else None

        self._poll("cluster_state:ok everywhere", not_ok, time.monotonic() + timeout_s)

    def failover(self, replica: ClusterNodeProc, timeout_s: float = 15.0) -> None:
        """CLUSTER FAILOVER on `replica` (FORCE if its primary is down); wait until it is a
        primary, every running node agrees on the topology and cluster_state is ok."""
        deadline = time.monotonic() + timeout_s
        self._refresh()
        old = next((n for n in self.nodes if n.node_id == replica.primary_id), None)
        self._cmd(replica, "CLUSTER", "FAILOVER", *(() if old and old.running else ("FORCE",)))

        def promoted() -> str | None:
            if _myself(self._view(replica)).role == "replica":
                return f"{replica} is still a replica"
            return self._unsettled()

        self._poll(f"{replica} to take over", promoted, deadline)

    def add_primary(self, timeout_s: float = 15.0) -> ClusterNodeProc:
        """Start a new empty node, MEET it, and wait until all agree on it (no slots yet)."""
        deadline = time.monotonic() + timeout_s
        if not (running := [n for n in self.nodes if n.running]):
            raise ClusterError("no running node to introduce a new one to")
        node = self._launch(deadline)
        self.nodes.append(node)
        self._cmd(running[0], "CLUSTER", "MEET", HOST, node.port, node.bus_port)
        self._poll(f"{node} to join", self._unsettled, deadline)
        return node

    def move_slot(self, slot: int, target: ClusterNodeProc, timeout_s: float = 15.0) -> None:
        """Live resharding of one slot, keys included, to the primary `target`."""
        deadline = time.monotonic() + timeout_s
        if (source := self.node_for_slot(slot)) is target:
            return
        if target.role != "primary" or not target.running:
            raise ClusterError(f"{target} is not a running primary")
        self._cmd(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id)
        self._cmd(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", target.node_id)
        while keys := self._cmd(source, "CLUSTER", "GETKEYSINSLOT", slot, _MIGRATE_BATCH):
            self._cmd(source, "MIGRATE", HOST, target.port, "", 0, _MIGRATE_TIMEOUT_MS,
                      "REPLACE", "KEYS", *keys)  # fmt: skip
        # Target first (it bumps its epoch), then the source, then the other primaries;
        # replicas refuse SETSLOT and learn the new owner by gossip.
        others = [n for n in self.primaries() if n is not source and n is not target]
        for node in (target, source, *others):
            self._cmd(node, "CLUSTER", "SETSLOT", slot, "NODE", target.node_id)

        def moved() -> str | None:
            if not _myself(self._view(target)).owns(slot):
                return f"{target} does not claim slot {slot} yet"
            return self._unsettled()

        self._poll(f"slot {slot} to move to {target}", moved, deadline)

    # ---- plumbing ---------------------------------------------------------------------------
    def _fresh_port(self) -> int:
        while (port := free_port()) in self._used_ports:
            pass
        self._used_ports.add(port)
        return port

    def _launch(self, deadline: float) -> ClusterNodeProc:
        data_dir = self.base_dir / f"node-{len(self.nodes)}"
        for attempt in range(_LAUNCH_TRIES):
            port, bus_port = self._fresh_port(), self._fresh_port()
            args = [
                *DEBUG_ARGS, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(self.node_timeout_ms),
                "--cluster-port", str(bus_port),
                "--repl-diskless-sync-delay", "0",  # else a full sync waits 5 s for company
                # Redis 7.0 leaves a replica out of CLUSTER SLOTS while its replication
                # offset is 0, i.e. until its primary's first write or PING (every 10 s).
                "--repl-ping-replica-period", "1",
                *self.extra_args,
            ]  # fmt: skip
            server = RedisServer(self.binary, port=port, data_dir=data_dir, extra_args=args)
            try:
                server.start(timeout_s=max(0.5, deadline - time.monotonic()))
                break
            except EmbeddedRedisError as exc:  # a port was taken meanwhile: pick others
                if "already in use" not in str(exc) or attempt == _LAUNCH_TRIES - 1:
                    raise
        node = ClusterNodeProc(server, bus_port)
        node.node_id = str(self._cmd(node, "CLUSTER", "MYID"))
        return node

    def _cmd(self, node: ClusterNodeProc, *args: object) -> Any:
        """A raw command on one node (redis-py leaves ``execute_command`` untyped)."""
        if (client := self._clients.get(node.port)) is None:
            client = redis.Redis(host=HOST, port=node.port, decode_responses=True,
                                 socket_timeout=5.0, socket_connect_timeout=2.0)  # fmt: skip
            self._clients[node.port] = client
        return client.execute_command(*args)  # type: ignore[no-untyped-call]

    def _view(self, node: ClusterNodeProc) -> dict[str, _Entry]:
        return _parse_nodes(self._cmd(node, "CLUSTER", "NODES"))

    def _state_ok(self, node: ClusterNodeProc) -> bool:
        return "cluster_state:ok" in str(self._cmd(node, "CLUSTER", "INFO"))

    def _refresh(self) -> _Views:
        """Every running node's view; each node's role is updated from its own line."""
        views = {node: self._view(node) for node in self.nodes if node.running}
        for node, view in views.items():
            me = _myself(view)
            node.role, node.primary_id = me.role, me.primary_id
        return views

    def _strangers(self, views: _Views | None = None) -> str | None:
        """A running node that another running node does not know yet (handshake done)."""
        views = self._refresh() if views is None else views
        for node, view in views.items():
            for other in views:
                if (seen := view.get(other.node_id)) is None or "handshake" in seen.flags:
                    return f"{node} does not know {other} yet"
        return None

    def _unsettled(self) -> str | None:
        """What keeps the cluster from being settled, or None: every running node sees every
        running node as it sees itself (role, primary, slots), has cluster_state:ok and lists
        every replica of a slot owner in CLUSTER SLOTS; every replica's link is up."""
        views = self._refresh()
        if problem := self._strangers(views):
            return problem
        selves = {node.node_id: _myself(view) for node, view in views.items()}
        owners = {node_id for node_id, me in selves.items() if me.slots}
        served = {node_id for node_id, me in selves.items() if me.primary_id in owners}
        for node, view in views.items():
            for node_id, me in selves.items():
                if (seen := view[node_id].describe()) != me.describe():
                    return f"{node} sees {node_id[:8]} as {seen}, not {me.describe()}"
            if not self._state_ok(node):
                return f"cluster_state is not ok on {node}"
            listed = {str(r[2]) for row in self._cmd(node, "CLUSTER", "SLOTS") for r in row[3:]}
            if hidden := served - listed:
                return f"CLUSTER SLOTS on {node} leaves out replicas {sorted(hidden)}"
            if node.role == "replica":
                link = self._cmd(node, "INFO", "replication").get("master_link_status")
                if link != "up":
                    return f"{node}: replication link is {link}"
        return None

    def _poll(self, what: str, check: Callable[[], str | None], deadline: float) -> None:
        """Call `check` until it returns None (a Redis error means "not yet"), or raise."""
        delay = 0.01
        while True:
            try:
                problem = check()
            except redis.RedisError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if problem is None:
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"timed out waiting for {what}: {problem}")
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
