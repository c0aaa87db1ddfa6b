"""chat-batcher: merges rapid-fire chat messages into one batch per chat, in
Redis, and hands each batch to a handler once the chat has gone quiet.

The names a program needs::

    from service import Batch, Engine, Message, Settings

    async def handler(batch: Batch) -> None:   # BATCHER_HANDLER=module:handler
        ...

    async with Engine(redis, Settings(), handler) as engine:
        await engine.add("chat-1", Message(id="m1", text="hello"))

Subpackages, from the bottom up: ``store`` (Redis: keyspace, scripts,
connections, server checks, dead letters, the embedded server), ``engine``
(append, listen, claim, deliver, recover), ``providers`` (what each chat
provider POSTs, read into messages), ``web`` (the HTTP app), ``cli`` (the
``batcher`` command) and ``tooling`` (benchmarks, chaos soak, samples: never
imported by the others). ``docs/architecture.md`` has the whole map.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from service.lazy import lazy_names

if TYPE_CHECKING:
    from service.engine import Batcher, Engine, Handler
    from service.errors import (
        BatcherError,
        InvalidMessage,
        MessageTooLarge,
        RedisUnavailable,
        ServerConfigError,
    )
    from service.models import AddResult, Batch, Message, TypingResult
    from service.settings import Settings

# Where each public name lives. Loaded on first use, so that a command that
# needs none of them (``batcher serve`` refusing a busy data directory) does
# not pay for importing the whole engine.
_HOMES = {
    "Batcher": "service.engine",
    "Engine": "service.engine",
    "Handler": "service.engine",
    "BatcherError": "service.errors",
    "InvalidMessage": "service.errors",
    "MessageTooLarge": "service.errors",
    "RedisUnavailable": "service.errors",
    "ServerConfigError": "service.errors",
    "AddResult": "service.models",
    "Batch": "service.models",
    "Message": "service.models",
    "Settings": "service.settings",
    "TypingResult": "service.models",
}


__getattr__ = lazy_names(__name__, _HOMES)


__all__ = [
    "AddResult",
    "Batch",
    "Batcher",
    "BatcherError",
    "Engine",
    "Handler",
    "InvalidMessage",
    "Message",
    "MessageTooLarge",
    "RedisUnavailable",
    "ServerConfigError",
    "Settings",
    "TypingResult",
]
