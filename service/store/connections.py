"""Redis clients, made in one place with the service's connection policy."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - hiredis is a dependency
    _hiredis_pack = None  # type: ignore[assignment]

try:  # redis-py >= 7
    from redis.maint_notifications import MaintNotificationsConfig
except ImportError:  # pragma: no cover - older redis-py
    MaintNotificationsConfig = None  # type: ignore[assignment,misc]

CONNECT_TIMEOUT_S = 5.0
# Above CLIENT PAUSE and WAIT durations one expects; bounds a half-open socket.
SOCKET_TIMEOUT_S = 10.0


class _ClosedTransportIsConnectionError(AbstractConnection):
    """uvloop reports a write on a transport that died as ``RuntimeError``
    ("the handler is closed"), and redis-py a write on a stream it already
    dropped as ``AttributeError``; both get through. Make them the
    ``ConnectionError`` they are, so that callers retry or answer 503."""

    async def send_packed_command(self, *args: Any, **kwargs: Any) -> None:
        try:
            await super().send_packed_command(*args, **kwargs)
        except (RuntimeError, AttributeError) as exc:
            # AttributeError: redis-py writes on a connection whose stream is
            # already gone (``_writer`` None) while a killed node's
            # connections are torn down. Both mean: this connection is lost.
            await self.disconnect(nowait=True)
            raise RedisConnectionError(f"connection lost: {exc}") from exc

    def pack_command(self, *args: Any) -> list[bytes]:
        """The protocol bytes of one command, packed by hiredis in C (redis-py's
        asyncio connection packs in Python: a sixth of the engine's CPU under
        load). Arguments hiredis does not take go the Python way."""
        if _hiredis_pack is None or not all(type(a) in _PACKABLE for a in args):
            return super().pack_command(*args)
        if isinstance(args[0], str):  # "CONFIG GET" is two words on the wire
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        return [_hiredis_pack(args)]


# bytes, str (UTF-8, as the client's default encoder) and int are packed by
# hiredis exactly as redis-py's encoder would; floats and the rest are not.
_PACKABLE = frozenset({bytes, str, int})


def _hardened(cls: type[AbstractConnection]) -> type[AbstractConnection]:
    if issubclass(cls, _ClosedTransportIsConnectionError):
        return cls
    return type(f"Hardened{cls.__name__}", (_ClosedTransportIsConnectionError, cls), {})


def create_redis(url: str, **overrides: Any) -> Redis:
    """A client for the service's command traffic.

    - No automatic command retry: an append that may have reached Redis is
      reported to the caller (webhook -> 503 -> sender retries, deduplicated
      by message id) rather than re-sent blindly.
    - Maintenance notifications off: with them on ("auto"), redis-py 8.1's
      pool skips its stale-connection check, and after a Redis restart every
      pooled connection fails once before it is replaced.
    - Connect and socket timeouts, set explicitly (older redis-py had none):
      an unreachable host fails fast and a half-open socket does not hang.
    - Writes on a dead uvloop transport surface as ``ConnectionError``.
    """
    kwargs: dict[str, Any] = {
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_keepalive": True,
    }
    if MaintNotificationsConfig is not None:
        kwargs["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
    kwargs.update(overrides)
    client = Redis.from_url(url, **kwargs)
    pool = client.connection_pool
    pool.connection_class = _hardened(pool.connection_class)
    return client


# MOVED and ASK are followed at once; TRYAGAIN, CLUSTERDOWN and a lost node
# are retried with this backoff (about 3 s in all, through a failover), after
# which the caller sees the error (a webhook answers 503).
CLUSTER_RETRY = Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=6)


async def connect(url: str, cluster: str = "auto") -> Redis:
    """A client for ``url``: a cluster client when the server is a Redis
    Cluster node (``cluster="auto"`` asks it) or when ``cluster="true"``.

    The cluster client is typed as ``Redis``: it takes the same commands and
    pipelines, routed by key slot; code that needs a node of its own (the
    listeners, the checks) asks ``is_cluster`` and ``primary_urls``.
    """
    if cluster == "false":
        return create_redis(url)
    if cluster == "auto":
        probe = create_redis(url)
        try:
            info = await probe.info("cluster")
        except RedisError:
            info = {}  # INFO refused (ACL): take it for a single server
        finally:
            await probe.aclose()
        if not info.get("cluster_enabled"):
            return create_redis(url)
    client = RedisCluster.from_url(
        url,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_keepalive=True,
        retry=CLUSTER_RETRY,
    )
    # The nodes' connections get the same hardening as a single server's:
    # the startup nodes now, every node found later through the shared kwargs.
    manager = client.nodes_manager
    hardened = _hardened(manager.connection_kwargs.get("connection_class", Connection))
    manager.connection_kwargs["connection_class"] = hardened
    for node in manager.startup_nodes.values():
        node.connection_class = hardened  # type: ignore[assignment]
    await client.initialize()
    return cast(Redis, client)


def is_cluster(redis: Redis) -> bool:
    return isinstance(redis, RedisCluster)


def node_url(url: str, host: str, port: int) -> str:
    """``url`` (scheme, user, password, options) pointed at another node."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


async def primary_urls(redis: Redis, url: str, *, refresh: bool = False) -> dict[str, str]:
    """Node name ("host:port") -> URL of every primary; one entry for a single server."""
    if not isinstance(redis, RedisCluster):
        parts = urlsplit(url)
        return {f"{parts.hostname}:{parts.port or 6379}": url}
    if refresh:
        await redis.nodes_manager.initialize()
    return {n.name: node_url(url, n.host, int(n.port)) for n in redis.get_primaries()}


async def each_primary(redis: Redis, url: str) -> AsyncGenerator[tuple[str, Redis], None]:
    """``("", redis)`` for a single server; for a cluster, each primary's name
    ("host:port") and a client of its own, closed once the caller moves on.
    Iterate it inside ``contextlib.aclosing``."""
    if not isinstance(redis, RedisCluster):
        yield "", redis
        return
    for name, node_url in (await primary_urls(redis, url)).items():
        node = create_redis(node_url)
        try:
            yield name, node
        finally:
            await node.aclose()
