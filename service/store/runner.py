"""Running the service's Lua scripts: one call, or many in one round trip.

Scripts run with EVALSHA; when the server has lost its script cache
(restart, failover, SCRIPT FLUSH) the script is loaded again and only the
calls that did not run are repeated. With replicas to wait for, each round
trip ends with ``WAIT`` on the connection that carried the writes: on a
Redis Cluster, one round trip per primary, each on that primary's own
connection (``service.store.durable``).
"""

from __future__ import annotations

import asyncio
import hashlib
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import AskError, MovedError, NoScriptError, RedisError, ResponseError

Arg = bytes | str | int | float


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    source: str
    sha: str

    @classmethod
    def load(cls, name: str, *, prelude: tuple[str, ...] = ()) -> Script:
        """``lua/<name>.lua``, after each ``lua/<prelude>.lua`` (shared functions)."""
        lua = resources.files("service.store").joinpath("lua")
        parts = [lua.joinpath(f"{part}.lua").read_text("utf-8") for part in (*prelude, name)]
        source = "".join(parts)
        return cls(name, source, hashlib.sha1(source.encode()).hexdigest())


Call = tuple[Script, Sequence[bytes], Sequence[Arg]]


async def run_script(
    redis: Redis, script: Script, keys: Sequence[bytes], args: Sequence[Arg]
) -> Any:
    try:
        return await redis.evalsha(script.sha, len(keys), *keys, *args)
    except NoScriptError:
        # EVAL with the source cannot meet NOSCRIPT (a SCRIPT FLUSH may land
        # between a SCRIPT LOAD and a retried EVALSHA) and caches the script.
        return await redis.eval(script.source, len(keys), *keys, *args)


class NotReplicated(RedisError):
    """WAIT: fewer replicas than required acknowledged the writes in time."""


async def run_scripts(
    redis: Redis, calls: Sequence[Call], *, replicas: int = 0, wait_ms: int = 0
) -> list[Any]:
    """Run many script calls in one round trip (not atomic as a whole).

    Errors come back in place as exception objects. Calls refused with
    NOSCRIPT did not run: just those are sent again, as EVAL with the source.
    With ``replicas``, each pipeline ends with ``WAIT replicas wait_ms`` on
    its own connection, and ``NotReplicated`` is raised when too few replicas
    acknowledged the writes.
    """
    if not calls:
        return []
    if replicas and isinstance(redis, RedisCluster):
        return await _per_primary(redis, calls, replicas=replicas, wait_ms=wait_ms)
    results = await _pipeline(redis, calls, with_source=False, replicas=replicas, wait_ms=wait_ms)
    missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
    if missing:
        again = await _pipeline(
            redis,
            [calls[i] for i in missing],
            with_source=True,
            replicas=replicas,
            wait_ms=wait_ms,
        )
        for i, r in zip(missing, again, strict=True):
            results[i] = r
    return results


async def _pipeline(
    redis: Redis, calls: Sequence[Call], *, with_source: bool, replicas: int, wait_ms: int
) -> list[Any]:
    pipe = redis.pipeline(transaction=False)
    for script, keys, args in calls:
        # execute_command: a cluster pipeline refuses pipe.eval()/evalsha() but
        # routes the command itself by its keys' slot.
        if with_source:
            pipe.execute_command("EVAL", script.source, len(keys), *keys, *args)
        else:
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
    if replicas:
        pipe.execute_command("WAIT", replicas, wait_ms)
    results = list(await pipe.execute(raise_on_error=False))
    if replicas:
        acked = results.pop()
        if isinstance(acked, Exception) or int(acked) < replicas:
            raise NotReplicated(
                f"only {acked} of {replicas} replica(s) acknowledged within {wait_ms} ms"
            )
    return results


# A cluster client's own connection per primary, for writes that end in WAIT.
_NODE_CLIENTS: weakref.WeakKeyDictionary[RedisCluster, dict[str, Redis]] = (
    weakref.WeakKeyDictionary()
)


def _node_client(cluster: RedisCluster, node: Any) -> Redis:
    clients = _NODE_CLIENTS.setdefault(cluster, {})
    client = clients.get(node.name)
    if client is None:
        pool = ConnectionPool(connection_class=node.connection_class, **node.connection_kwargs)
        client = clients[node.name] = Redis(connection_pool=pool)
    return client


def _redirected(result: object) -> bool:
    return isinstance(result, MovedError | AskError) or (
        isinstance(result, ResponseError) and str(result).startswith(("MOVED", "ASK"))
    )


async def _per_primary(
    cluster: RedisCluster, calls: Sequence[Call], *, replicas: int, wait_ms: int
) -> list[Any]:
    """The calls grouped by the primary of their slot, each group one round
    trip ending in WAIT on that primary's connection. A call that meets a
    slot on the move (MOVED, ASK) is sent again once the slot map is read
    again; still moving, it comes back as the error (the caller answers 503)."""
    results: list[Any] = [None] * len(calls)
    todo = list(range(len(calls)))
    for attempt in range(2):
        groups: dict[str, tuple[Any, list[int]]] = {}
        for i in todo:
            node = cluster.nodes_manager.get_node_from_slot(cluster.keyslot(calls[i][1][0]))
            groups.setdefault(node.name, (node, []))[1].append(i)

        async def one(node: Any, idxs: list[int]) -> None:
            got = await run_scripts(
                _node_client(cluster, node),
                [calls[i] for i in idxs],
                replicas=replicas,
                wait_ms=wait_ms,
            )
            for i, r in zip(idxs, got, strict=True):
                results[i] = r

        await asyncio.gather(*(one(node, idxs) for node, idxs in groups.values()))
        todo = [i for i in todo if _redirected(results[i])]
        if not todo or attempt:
            break
        await cluster.nodes_manager.initialize()
    return results
