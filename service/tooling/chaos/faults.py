"""The fault injector of the chaos soak: one fault at a time, on a seeded schedule.

Fault kinds are drawn in shuffled rounds (every kind once per round, in a
seeded random order), so a run long enough for one round covers them all.
Each fault is followed by a recovery window with no fault.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from redis.asyncio import Redis
from redis.exceptions import RedisError

from service.store.embedded import RedisServer
from service.tooling.chaos.proxy import ChaosProxy
from service.tooling.cluster import LocalCluster
from service.tooling.procs import ServiceProc
from service.tooling.sink import Sink

# kind -> what it does (shown in the report)
KINDS: dict[str, str] = {
    "svc_kill": "SIGKILL a service process, then start it again",
    "svc_term": "SIGTERM a service process (graceful), then start it again",
    "redis_restart": "stop Redis (SIGTERM, AOF flushed), start it again",
    "redis_kill": "SIGKILL Redis (a crash; AOF everysec), start it again",
    "pubsub_kill": "CLIENT KILL TYPE pubsub",
    "script_flush": "SCRIPT FLUSH",
    "client_pause": "CLIENT PAUSE 2000 WRITE",
    "active_expire_off": "DEBUG SET-ACTIVE-EXPIRE 0 for a while",
    "sink_fail": "the bot answers 500 for a while",
    "sink_hang": "the bot never answers for a while",
    "proxy_cut": "cut every service-Redis connection (RST)",
    "proxy_blackhole": "half-open service-Redis connections: data dropped, nothing closed",
}

# The kinds of ``batcher chaos --cluster`` (no proxy; Redis faults on cluster nodes).
CLUSTER_KINDS: dict[str, str] = {
    "svc_kill": KINDS["svc_kill"],
    "svc_term": KINDS["svc_term"],
    "pubsub_kill": "CLIENT KILL TYPE pubsub on one primary",
    "script_flush": "SCRIPT FLUSH on one primary",
    "sink_fail": KINDS["sink_fail"],
    "sink_hang": KINDS["sink_hang"],
    "cluster_failover": "CLUSTER FAILOVER on a replica of a random primary",
    "primary_kill": "SIGKILL a primary; its replica takes over; the node rejoins as a replica",
    "slot_move": "move the slot of one bucket to another primary (live resharding)",
}

# kind -> (min, max) seconds the fault lasts, for the kinds that last
DURATION_S: dict[str, tuple[float, float]] = {
    "svc_kill": (0.2, 1.0),  # down time before the restart
    "svc_term": (0.2, 1.0),
    "redis_restart": (0.3, 1.5),
    "redis_kill": (0.3, 1.5),
    "active_expire_off": (3.0, 8.0),
    "sink_fail": (1.0, 4.0),
    "sink_hang": (1.5, 4.0),
    "proxy_blackhole": (2.0, 5.0),
}


@dataclass
class Fault:
    kind: str
    start: float  # time.monotonic()
    end: float = 0.0  # the fault is over (restarted process ready, mode back to normal)
    target: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Rig:
    """What the injector acts on. A cluster soak has no single server and no proxy."""

    redis: RedisServer | None
    admin: Redis  # a direct connection to Redis (not through the proxy); cluster: a cluster client
    proxy: ChaosProxy | None
    sink: Sink
    services: list[ServiceProc]
    http: httpx.AsyncClient
    cluster: LocalCluster | None = None

    @property
    def server(self) -> RedisServer:
        if self.redis is None:
            raise RuntimeError("this soak runs no single Redis server")
        return self.redis

    @property
    def tcp_proxy(self) -> ChaosProxy:
        if self.proxy is None:
            raise RuntimeError("this soak runs no proxy")
        return self.proxy


class Injector:
    def __init__(
        self,
        rig: Rig,
        seed: int,
        *,
        kinds: list[str] | None = None,
        warmup_s: float = 4.0,
        recovery_s: tuple[float, float] = (3.0, 5.0),
    ) -> None:
        self.rig = rig
        self.rng = random.Random(seed ^ 0x5EED)
        self.kinds = list(kinds or KINDS)
        self.warmup_s = warmup_s
        self.recovery_s = recovery_s
        self.faults: list[Fault] = []
        self.errors: list[str] = []
        self.current: Fault | None = None
        self._round: list[str] = []

    def next_kind(self) -> str:
        if not self._round:
            self._round = self.kinds[:]
            self.rng.shuffle(self._round)
        return self._round.pop()

    async def run(
        self,
        until: float,
        extend: Callable[[float], None] | None = None,
        *,
        extra_s: float = 120.0,
    ) -> None:
        """Inject faults until ``until`` (no fault starts that could not end by
        then). With ``extend``, the first round of every kind is always
        completed, however slow the machine: while it is not, each fault asks
        ``extend`` to keep the traffic going well past its end (``extra_s``
        beyond ``until`` at most)."""
        await asyncio.sleep(self.warmup_s)
        while True:
            kind = self.next_kind()
            lo, hi = DURATION_S.get(kind, (0.0, 0.0))
            duration = self.rng.uniform(lo, hi)
            recovery = self.rng.uniform(*self.recovery_s)
            ends = time.monotonic() + duration + 2.0
            round_done = {f.kind for f in self.faults} >= set(self.kinds)
            if ends > until and (extend is None or round_done or ends > until + extra_s):
                return
            if extend is not None and not round_done:
                extend(min(ends + recovery + 30.0, until + extra_s))
            fault = Fault(kind, time.monotonic())
            self.current = fault
            try:
                await getattr(self, f"_{kind}")(fault, duration)
            except Exception as exc:  # the soak goes on; the report shows it
                self.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
                fault.detail["error"] = f"{type(exc).__name__}: {exc}"
            fault.end = time.monotonic()
            self.current = None
            self.faults.append(fault)
            await asyncio.sleep(recovery)

    # --- the faults ------------------------------------------------------------

    def _pick(self, fault: Fault) -> ServiceProc:
        svc = self.rng.choice(self.rig.services)
        fault.target = svc.name
        return svc

    async def _restart(
        self, svc: ServiceProc, sig: signal.Signals, fault: Fault, down: float
    ) -> None:
        fault.detail["exit"] = await svc.signal_and_wait(sig)
        fault.detail["stopped_in_s"] = round(time.monotonic() - fault.start, 3)
        await asyncio.sleep(down)
        svc.start()
        await svc.wait_ready(self.rig.http)

    async def _svc_kill(self, fault: Fault, down: float) -> None:
        await self._restart(self._pick(fault), signal.SIGKILL, fault, down)

    async def _svc_term(self, fault: Fault, down: float) -> None:
        await self._restart(self._pick(fault), signal.SIGTERM, fault, down)

    async def _redis_restart(self, fault: Fault, down: float) -> None:
        await asyncio.to_thread(self.rig.server.stop)
        await asyncio.sleep(down)
        await asyncio.to_thread(self.rig.server.start, 30.0)

    async def _redis_kill(self, fault: Fault, down: float) -> None:
        await asyncio.to_thread(lambda: self.rig.server.stop(kill=True))
        await asyncio.sleep(down)
        await asyncio.to_thread(self.rig.server.start, 30.0)

    async def _pubsub_kill(self, fault: Fault, _: float) -> None:
        killed = await admin_call(lambda: self.rig.admin.client_kill_filter(_type="pubsub"))
        fault.detail["killed"] = killed

    async def _script_flush(self, fault: Fault, _: float) -> None:
        await admin_call(self.rig.admin.script_flush)

    async def _client_pause(self, fault: Fault, _: float) -> None:
        await admin_call(lambda: command(self.rig.admin, "CLIENT", "PAUSE", 2000, "WRITE"))
        await asyncio.sleep(2.0)

    async def _active_expire_off(self, fault: Fault, duration: float) -> None:
        admin = self.rig.admin
        await admin_call(lambda: command(admin, "DEBUG", "SET-ACTIVE-EXPIRE", 0))
        try:
            await asyncio.sleep(duration)
        finally:
            await admin_call(lambda: command(admin, "DEBUG", "SET-ACTIVE-EXPIRE", 1))

    async def _sink_fail(self, fault: Fault, duration: float) -> None:
        self.rig.sink.set_mode("fail")
        try:
            await asyncio.sleep(duration)
        finally:
            self.rig.sink.set_mode("ok")

    async def _sink_hang(self, fault: Fault, duration: float) -> None:
        self.rig.sink.set_mode("hang")
        try:
            await asyncio.sleep(duration)
        finally:
            self.rig.sink.set_mode("ok")

    async def _proxy_cut(self, fault: Fault, _: float) -> None:
        fault.detail["connections"] = self.rig.tcp_proxy.cut(rst=True)

    async def _proxy_blackhole(self, fault: Fault, duration: float) -> None:
        fault.detail["connections"] = self.rig.tcp_proxy.blackhole(True)
        try:
            await asyncio.sleep(duration)
        finally:
            fault.detail["zombies"] = self.rig.tcp_proxy.blackhole(False)


async def command(admin: Redis, *args: str | int) -> Any:
    """A raw command (redis-py leaves ``execute_command`` untyped)."""
    return await admin.execute_command(*args)  # type: ignore[no-untyped-call]


async def admin_call(fn: Callable[[], Awaitable[Any]], attempts: int = 20) -> Any:
    """A command on the harness's own connection, retried while Redis restarts."""
    for i in range(attempts):
        try:
            return await fn()
        except (RedisError, OSError):
            if i == attempts - 1:
                raise
            await asyncio.sleep(0.25)
    raise AssertionError("unreachable")
