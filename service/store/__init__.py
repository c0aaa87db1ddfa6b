"""Everything that knows Redis: the keyspace, the Lua scripts and their typed
wrappers, client connections, server checks, the indexes' backlog, the
dead-letter store, and the embedded server for development.

Nothing here schedules work or calls a handler; that is the engine's job.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'service.store' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


__all__ = [
    "Backlog",
    "BucketKeys",
    "ChatKeys",
    "Keyspace",
    "Scripts",
    "create_redis",
    "read_backlog",
]
