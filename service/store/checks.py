"""Checks of the Redis server the service runs against.

Run at start-up (``ensure_ready``: fixes what it may, refuses what loses
batches) and by ``batcher check`` (a read-only report). Each problem names
the ``redis.conf`` line that fixes it.
"""

from __future__ import annotations

import logging
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Literal

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from service.errors import ServerConfigError
from service.logs import emit
from service.settings import Settings
from service.store.connections import each_primary

logger = logging.getLogger(__name__)

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


async def config_get(redis: Redis, name: str) -> str | None:
    """A server setting, or None when CONFIG is not allowed (managed Redis, ACL)."""
    try:
        reply = await redis.config_get(name)
    except ResponseError:
        return None
    value = reply.get(name.encode(), reply.get(name))  # type: ignore[call-overload]
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def notifications_on(flags: str) -> bool:
    """Expired key-event notifications: 'E' plus 'x' (or 'A', which includes it)."""
    return "E" in flags and ("x" in flags or "A" in flags)


async def check_notifications(redis: Redis, *, enable: bool) -> Check:
    fix = "notify-keyspace-events Ex"
    flags = await config_get(redis, "notify-keyspace-events")
    if flags is None:
        return Check(
            "notifications",
            "warn",
            "CONFIG GET is not allowed: cannot see notify-keyspace-events "
            "(batches still flush, via the sweeper, up to a grace period late)",
            fix,
        )
    if notifications_on(flags):
        return Check("notifications", "ok", f"notify-keyspace-events is {flags!r}")
    if enable:
        wanted = "".join(sorted(set(flags + "Ex"), key=(flags + "Ex").index))
        try:
            await redis.config_set("notify-keyspace-events", wanted)
        except ResponseError as exc:
            return Check(
                "notifications",
                "fail",
                f"notify-keyspace-events is {flags!r} and CONFIG SET was refused ({exc})",
                fix,
            )
        return Check(
            "notifications",
            "warn",
            f"notify-keyspace-events was {flags!r}; set to {wanted!r} with CONFIG SET "
            "(not persisted: a restarted server loses it)",
            fix,
        )
    return Check(
        "notifications",
        "fail",
        f"notify-keyspace-events is {flags!r}: no expired events, batches flush only "
        "via the sweeper",
        fix,
    )


async def check_memory_policy(redis: Redis, *, allow_eviction: bool) -> Check:
    fix = "maxmemory-policy noeviction"
    policy = await config_get(redis, "maxmemory-policy")
    if policy is None:
        return Check(
            "maxmemory-policy",
            "warn",
            "CONFIG GET is not allowed: make sure the policy is noeviction",
            fix,
        )
    if policy == "noeviction":
        return Check("maxmemory-policy", "ok", "noeviction")
    status: Status = "warn" if allow_eviction else "fail"
    return Check(
        "maxmemory-policy",
        status,
        f"maxmemory-policy is {policy}: Redis may evict open batches under memory pressure"
        + (" (allowed by BATCHER_ALLOW_EVICTION)" if allow_eviction else ""),
        fix,
    )


async def check_persistence(redis: Redis) -> Check:
    fix = "appendonly yes  +  appendfsync everysec"
    aof = await config_get(redis, "appendonly")
    if aof is None:
        return Check("persistence", "warn", "CONFIG GET is not allowed: cannot see appendonly", fix)
    if aof != "yes":
        return Check(
            "persistence",
            "warn",
            "appendonly is off: a restart loses every open batch since the last snapshot",
            fix,
        )
    fsync = await config_get(redis, "appendfsync")
    return Check("persistence", "ok", f"appendonly yes, appendfsync {fsync}")


async def check_version(redis: Redis) -> Check:
    info = await redis.info("server")
    version = str(info.get("valkey_version") or info.get("redis_version", "?"))
    name = "Valkey" if "valkey_version" in info else "Redis"
    major = version.split(".")[0]
    if major.isdigit() and int(major) < 7:
        return Check(
            "version", "fail", f"{name} {version}: 7.0 or newer is required", "upgrade the server"
        )
    return Check("version", "ok", f"{name} {version}")


async def run_checks(redis: Redis, settings: Settings, *, fix: bool) -> list[Check]:
    return [
        await check_version(redis),
        await check_notifications(redis, enable=fix and settings.configure_redis),
        await check_memory_policy(redis, allow_eviction=settings.allow_eviction),
        await check_persistence(redis),
    ]


async def ensure_ready(
    redis: Redis, settings: Settings, *, log: bool = True, node: str = ""
) -> list[Check]:
    """Start-up checks: enable notifications if allowed, refuse what loses batches.
    ``log``: a line per check (off when a caller has just logged them). ``node``
    names the server in each check (a cluster's primaries are checked one by one)."""
    where = f"{node}: " if node else ""
    try:
        checks = await run_checks(redis, settings, fix=True)
    except RedisError as exc:
        raise ServerConfigError(
            f"cannot reach Redis at {node or settings.redis_url_display}: {exc}",
            "start Redis or set BATCHER_REDIS_URL",
        ) from exc
    if node:
        checks = [replace(c, detail=where + c.detail) for c in checks]
    for c in checks if log else ():
        level = {"ok": logging.INFO, "warn": logging.WARNING, "fail": logging.ERROR}[c.status]
        emit(
            logger,
            "check",
            level=level,
            check=c.name,
            status=c.status,
            detail=c.detail,
            **({"fix": c.fix} if c.status != "ok" and c.fix else {}),
        )
    for c in checks:
        if c.status == "fail":
            raise ServerConfigError(c.detail, f"add `{c.fix}` to redis.conf" if c.fix else "")
    return checks


async def ensure_primaries_ready(
    redis: Redis, url: str, settings: Settings, *, log: bool = True
) -> list[Check]:
    """``ensure_ready`` on a single server, or on every primary of a cluster
    (each check naming its node)."""
    checks: list[Check] = []
    async with aclosing(each_primary(redis, url)) as primaries:
        async for name, node in primaries:
            checks += await ensure_ready(node, settings, log=log, node=name)
    return checks
