"""Exceptions with messages an operator can act on."""

from __future__ import annotations


class BatcherError(Exception):
    """Base class of this service's errors."""


class InvalidMessage(BatcherError, ValueError):
    """A message or chat id the service refuses (nothing was stored)."""


class MessageTooLarge(InvalidMessage):
    """A message above BATCHER_MAX_MESSAGE_BYTES (answered 413)."""


class HandlerError(BatcherError, ValueError):
    """BATCHER_HANDLER names nothing that can be called with a batch."""


class RedisUnavailable(BatcherError):
    """Redis could not take the write; nothing was acknowledged."""


class ServerConfigError(BatcherError):
    """The Redis server is configured in a way that can lose batches."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem}\n  fix: {fix}")
        self.problem = problem
        self.fix = fix
