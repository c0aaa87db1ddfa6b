"""Redis clients, made in one place with the service's connection policy."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

try:  # redis-py >= 7
    from redis.maint_notifications import MaintNotificationsConfig
except ImportError:  # pragma: no cover - older redis-py
    MaintNotificationsConfig = None  # type: ignore[assignment,misc]

CONNECT_TIMEOUT_S = 5.0


def create_redis(url: str, **overrides: Any) -> Redis:
    """A client for the service's command traffic.

    - No automatic command retry: an append that may have reached Redis is
      reported to the caller (webhook -> 503 -> sender retries, deduplicated
      by message id) rather than re-sent blindly.
    - Maintenance notifications off: with them on ("auto"), redis-py 8.1's
      pool skips its stale-connection check, and after a Redis restart every
      pooled connection fails once before it is replaced.
    - A connect timeout, so an unreachable host fails fast.
    """
    kwargs: dict[str, Any] = {
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_keepalive": True,
    }
    if MaintNotificationsConfig is not None:
        kwargs["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
    kwargs.update(overrides)
    return Redis.from_url(url, **kwargs)
