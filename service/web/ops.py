"""Operations endpoints: ``/healthz``, ``/readyz``, ``/metrics``."""

from __future__ import annotations

import asyncio

from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from service.store.backlog import read_backlog
from service.store.checks import check_notifications
from service.web.state import AppState, app_state

READY_TIMEOUT_S = 2.0


async def healthz(request: Request) -> Response:
    """The process is alive (no dependency is consulted)."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready to take webhooks: Redis reachable, notifications on, listener live."""
    state = app_state(request)
    engine = state.engine
    reasons: list[str] = []
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            await engine.redis.ping()
            nodes = engine.listeners.nodes if engine.listeners is not None else {}
            # every primary's own setting (a cluster's are checked one by one)
            targets = {name: n.commands for name, n in nodes.items()} or {"": engine.redis}
            for node, client in targets.items():
                check = await check_notifications(client, enable=False)
                if check.status == "fail":
                    where = f" ({node})" if len(targets) > 1 else ""
                    reasons.append(f"notifications{where}: {check.detail}")
    except (RedisError, OSError, TimeoutError) as exc:
        reasons.append(f"redis unreachable: {type(exc).__name__} {exc}".strip())
    listeners = engine.listeners.states() if engine.listeners is not None else {}
    if not listeners:
        reasons.append("listener not subscribed")
    for node, subscribed in listeners.items():
        where = f" ({node})" if len(listeners) > 1 else ""
        if not subscribed:
            reasons.append(f"listener not subscribed{where}")
    if listeners and all(listeners.values()) and not engine.healthy():
        reasons.append("listener silent beyond its liveness bound")
    if engine.stopping.is_set():
        reasons.append("shutting down")
    reasons.extend(f"background loop stopped: {name}" for name in engine.stopped_loops())
    if reasons:
        return JSONResponse(
            {"ready": False, "reasons": reasons, "listeners": listeners}, status_code=503
        )
    return JSONResponse({"ready": True, "listeners": listeners})


class Gauges:
    def __init__(self, state: AppState) -> None:
        r = state.stats.registry
        self.open = Gauge(
            "batcher_open_batches", "Open batches (chats waiting to flush)", registry=r
        )
        self.inflight = Gauge("batcher_inflight_batches", "Batches being delivered", registry=r)
        self.dead = Gauge("batcher_dead_batches", "Batches in the dead-letter store", registry=r)


async def metrics(request: Request) -> Response:
    state = app_state(request)
    gauges: Gauges = request.app.state.gauges
    engine = state.engine
    try:
        backlog = await read_backlog(engine.redis, engine.keys)
        gauges.open.set(backlog.open)
        gauges.inflight.set(backlog.inflight)
        gauges.dead.set(backlog.dead)
    except (RedisError, OSError):
        pass  # the gauges keep their last values; /readyz reports Redis
    return Response(generate_latest(state.stats.registry), media_type=CONTENT_TYPE_LATEST)
