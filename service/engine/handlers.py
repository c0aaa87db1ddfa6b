"""Batch handlers: ``async def handler(batch: Batch) -> None``.

Returning acknowledges the batch; raising makes it retried with backoff and,
after ``BATCHER_MAX_ATTEMPTS``, dead-lettered with the error.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
from collections.abc import Awaitable, Callable

from service.errors import HandlerError
from service.logs import emit
from service.models import Batch

Handler = Callable[[Batch], Awaitable[None]]
log = logging.getLogger(__name__)


def load_handler(spec: str) -> Handler:
    """Resolve ``package.module:function`` to an async callable, or raise
    ``HandlerError`` with one line: what was looked for, where, and why not."""
    where = f"BATCHER_HANDLER={spec}"
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise HandlerError(f"{where}: expected 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an error inside the module counts too
        raise HandlerError(
            f"{where}: cannot import {module_name!r} (looked in {os.getcwd()} and the "
            f"installed packages): {type(exc).__name__}: {exc}"
        ) from None
    obj: object = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise HandlerError(
                f"{where}: module {module_name!r} ({getattr(module, '__file__', '?')}) "
                f"has no {attr!r}"
            ) from None
    if not callable(obj) or not inspect.iscoroutinefunction(obj):
        raise HandlerError(f"{where}: {attr!r} must be an 'async def' function of one batch")
    handler: Handler = obj
    return handler


class ConsoleHandler:
    """The default handler: shows each batch on the console, as a ``batch``
    log event (the command line renders it; in JSON logs it is one object)."""

    async def __call__(self, batch: Batch) -> None:
        emit(
            log,
            "batch",
            chat=batch.chat_id,
            seq=batch.seq,
            reason=batch.reason,
            attempt=batch.attempt,
            texts=[m.text if m.text is not None else f"<{m.type}>" for m in batch.messages],
        )
