"""Batch handlers: ``async def handler(batch: Batch) -> None``.

Returning acknowledges the batch; raising makes it retried with backoff and,
after ``BATCHER_MAX_ATTEMPTS``, dead-lettered with the error.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable

from rich.console import Console
from rich.text import Text

from .models import Batch

Handler = Callable[[Batch], Awaitable[None]]


def load_handler(spec: str) -> Handler:
    """Resolve ``package.module:function`` to an async callable."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"BATCHER_HANDLER must look like 'package.module:function', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"BATCHER_HANDLER: cannot import {module_name!r}: {exc}") from exc
    obj: object = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise ValueError(f"BATCHER_HANDLER: {module_name!r} has no {attr!r}") from exc
    if not callable(obj) or not inspect.iscoroutinefunction(obj):
        raise ValueError(f"BATCHER_HANDLER: {spec!r} must be an 'async def' function")
    handler: Handler = obj
    return handler


class ConsoleHandler:
    """The default handler: shows each batch on the console."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)

    async def __call__(self, batch: Batch) -> None:
        head = Text.assemble(
            ("batch ", "bold"),
            (batch.chat_id, "cyan"),
            f"  #{batch.seq}  {len(batch.messages)} message(s)  reason={batch.reason}",
            f"  attempt={batch.attempt}" if batch.attempt > 1 else "",
        )
        self.console.print(head)
        for m in batch.messages:
            self.console.print(Text.assemble("   • ", (m.text or f"<{m.type}>", "white")))
