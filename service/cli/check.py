"""``batcher check``: an operator's report on a Redis for this service.

The start-up checks (``checks.py``) plus: the pub/sub output buffer limit,
the permissions the service needs (probed, not guessed), and a live probe of
how late Redis's expired events are on this server, with and without the
nudging the service does. Exit status 0 (OK), 1 (warnings), 2 (failures).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError, ResponseError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from service.cli.setup import add_redis_url, url_of, with_settings
from service.settings import Settings
from service.store.checks import Check, config_get, run_checks
from service.store.connections import connect, each_primary
from service.store.keyspace import Keyspace, expired_channel

PUBSUB_MIN_HARD_BYTES = 64 * 1024 * 1024
PROBE_KEYS = 200
PROBE_TTL_MS = 200


def _bytes(value: str) -> int:
    units = {"kb": 1000, "k": 1000, "mb": 1000**2, "m": 1000**2, "gb": 1000**3, "g": 1000**3}
    value = value.lower()
    for suffix, factor in sorted(units.items(), key=lambda kv: -len(kv[0])):
        if value.endswith(suffix):
            return int(float(value[: -len(suffix)]) * factor)
    return int(value)


async def check_pubsub_buffer(redis: Redis) -> Check:
    fix = "client-output-buffer-limit pubsub 256mb 128mb 120"
    raw = await config_get(redis, "client-output-buffer-limit")
    if raw is None:
        return Check("pubsub buffer", "warn", "CONFIG GET is not allowed", fix)
    words = raw.split()
    try:
        i = words.index("pubsub")
        hard = _bytes(words[i + 1])
    except (ValueError, IndexError):
        return Check("pubsub buffer", "warn", f"cannot read {raw!r}", fix)
    if hard != 0 and hard < PUBSUB_MIN_HARD_BYTES:
        return Check(
            "pubsub buffer",
            "warn",
            f"pubsub hard limit {words[i + 1]}: a burst of expiry events can disconnect "
            "the listener (the sweeper then recovers, seconds late)",
            fix,
        )
    return Check("pubsub buffer", "ok", " ".join(words[i : i + 4]))


async def check_permissions(redis: Redis, settings: Settings) -> Check:
    """Run the kinds of commands the service runs, on a key of its own prefix."""
    key = Keyspace.of(settings).probe(secrets.token_hex(4)) + b"permissions"
    probes: dict[str, Callable[[], Awaitable[object]]] = {
        "EVAL": lambda: redis.eval("return redis.call('EXISTS', KEYS[1])", 1, key),
        "ZRANGEBYSCORE": lambda: redis.zrangebyscore(key, "-inf", "+inf"),
        "HGET": lambda: redis.hget(key, "x"),
        "INFO": lambda: redis.info("server"),
    }
    refused = []
    for name, probe in probes.items():
        try:
            await probe()
        except ResponseError as exc:
            if "NOPERM" in str(exc).upper() or "no permissions" in str(exc):
                refused.append(name)
            else:
                raise
    pubsub = redis.pubsub()
    try:
        await pubsub.subscribe(expired_channel(0))
        await pubsub.get_message(timeout=1.0)  # the confirmation, or the refusal
    except ResponseError:
        refused.append("SUBSCRIBE __keyevent@*__:expired")
    finally:
        with contextlib.suppress(RedisError):
            await pubsub.aclose()  # type: ignore[no-untyped-call]
    if refused:
        return Check(
            "permissions",
            "fail",
            "refused: " + ", ".join(refused),
            "ACL: see docs/operations.md for the service's minimal rule",
        )
    return Check("permissions", "ok", "scripts, sorted sets, hashes, INFO and SUBSCRIBE allowed")


async def probe_event_lag(redis: Redis, settings: Settings, *, nudge: bool) -> list[float]:
    """Expire PROBE_KEYS keys and time their events (arrival - deadline, ms)."""
    db = int(redis.connection_pool.connection_kwargs.get("db", 0) or 0)
    tag = Keyspace.of(settings).probe(secrets.token_hex(4))
    lags: list[float] = []
    deadlines: dict[bytes, float] = {}
    pubsub = redis.pubsub()
    await pubsub.subscribe(expired_channel(db))
    try:
        pipe = redis.pipeline(transaction=False)
        start = time.time()
        for i in range(PROBE_KEYS):
            key = tag + str(i).encode()
            pipe.set(key, 1, px=PROBE_TTL_MS)
            deadlines[key] = start + PROBE_TTL_MS / 1000
        await pipe.execute()
        end = time.monotonic() + 5 + PROBE_TTL_MS / 1000
        while deadlines and time.monotonic() < end:
            if nudge and time.time() > start + PROBE_TTL_MS / 1000:
                with contextlib.suppress(RedisError):
                    await redis.exists(*list(deadlines)[:100])
            msg = await pubsub.get_message(timeout=0.01)
            while msg is not None:
                if msg["type"] == "message" and msg["data"] in deadlines:
                    lags.append((time.time() - deadlines.pop(msg["data"])) * 1000)
                msg = await pubsub.get_message(timeout=0)
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        if deadlines:
            await redis.delete(*deadlines)
    return lags


async def check_event_lag(redis: Redis, settings: Settings) -> Check:
    plain = await probe_event_lag(redis, settings, nudge=False)
    nudged = await probe_event_lag(redis, settings, nudge=True)

    def summary(lags: list[float]) -> str:
        if not lags:
            return "no events"
        ordered = sorted(lags)
        p50 = ordered[len(ordered) // 2]
        return f"p50 {p50:.0f} ms, max {ordered[-1]:.0f} ms ({len(lags)}/{PROBE_KEYS})"

    detail = f"events alone: {summary(plain)}; nudged: {summary(nudged)}"
    if len(nudged) < PROBE_KEYS:
        return Check(
            "expiry events", "fail", detail + " — events are missing", "notify-keyspace-events Ex"
        )
    return Check("expiry events", "ok", detail)


async def doctor(settings: Settings, console: Console) -> int:
    url = url_of(settings, "check")
    try:
        client = await connect(url, settings.redis_cluster)
    except (RedisError, OSError, TimeoutError) as exc:
        console.print(f"[bold red]FAIL[/] cannot reach {settings.redis_url_display}: {exc}")
        return 2
    try:
        probes = _probe_node(client, settings)
        checks: list[Check] = []
        async with contextlib.aclosing(each_primary(client, url)) as primaries:
            async for name, node in primaries:
                found = await _node_checks(node, settings, probes=name in (probes, ""))
                checks += (
                    [replace(c, detail=f"{name}: {c.detail}") for c in found] if name else found
                )
    except (RedisError, OSError, TimeoutError) as exc:
        console.print(f"[bold red]FAIL[/] cannot reach {settings.redis_url_display}: {exc}")
        return 2
    finally:
        await client.aclose()
    console.print(render(checks, settings.redis_url_display))
    if any(c.status == "fail" for c in checks):
        return 2
    return 1 if any(c.status == "warn" for c in checks) else 0


def _probe_node(client: Redis, settings: Settings) -> str:
    """The cluster primary that holds the probe keys' slot ("" on a single server)."""
    if not isinstance(client, RedisCluster):
        return ""
    node = client.get_node_from_key(Keyspace.of(settings).probe("x"))
    return node.name if node is not None else ""


async def _node_checks(redis: Redis, settings: Settings, *, probes: bool) -> list[Check]:
    """The checks of one server (a single one, or one primary of a cluster).
    ``probes``: also the checks that write probe keys (on the node of their slot)."""
    checks = await run_checks(redis, settings, fix=False)
    checks.append(await check_pubsub_buffer(redis))
    if not probes:
        return checks
    checks.append(await check_permissions(redis, settings))
    if any(c.name == "notifications" and c.status == "ok" for c in checks):
        checks.append(await asyncio.wait_for(check_event_lag(redis, settings), 30))
    return checks


def render(checks: list[Check], where: str) -> Table:
    table = Table(title=f"Redis at {where}")
    for col in ("check", "status", "detail", "redis.conf fix"):
        table.add_column(col)
    style = {"ok": "green", "warn": "yellow", "fail": "bold red"}
    for c in checks:
        table.add_row(
            c.name,
            Text(c.status.upper(), style=style[c.status]),
            Text(c.detail),
            Text(c.fix if c.status != "ok" else ""),
        )
    return table


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "check", help="check the Redis at BATCHER_REDIS_URL; exit 0 OK, 1 warnings, 2 failures"
    )
    add_redis_url(p)
    p.set_defaults(run=with_settings(run_check, redis=True))


def run_check(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(doctor(settings, Console(width=160)))
