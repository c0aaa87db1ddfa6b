"""Everything that knows Redis: the keyspace, the Lua scripts and their typed
wrappers, client connections, server checks, the indexes' backlog, the
dead-letter store, and the embedded server for development.

Nothing here schedules work or calls a handler; that is the engine's job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.lazy import lazy_names

if TYPE_CHECKING:
    from service.store.backlog import Backlog, read_backlog
    from service.store.connections import create_redis
    from service.store.keyspace import BucketKeys, ChatKeys, Keyspace
    from service.store.scripts import Scripts

# Loaded on first use: importing one module of the store (the embedded
# server, say) does not import the Redis client.
_HOMES = {
    "Backlog": "service.store.backlog",
    "read_backlog": "service.store.backlog",
    "create_redis": "service.store.connections",
    "BucketKeys": "service.store.keyspace",
    "ChatKeys": "service.store.keyspace",
    "Keyspace": "service.store.keyspace",
    "Scripts": "service.store.scripts",
}


__getattr__ = lazy_names(__name__, _HOMES)


__all__ = [
    "Backlog",
    "BucketKeys",
    "ChatKeys",
    "Keyspace",
    "Scripts",
    "create_redis",
    "read_backlog",
]
