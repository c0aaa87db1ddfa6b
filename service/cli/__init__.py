"""The ``batcher`` command: one module per command, thin over the store and
the engine, and the console that renders the engine's log events."""

from service.cli.main import main

__all__ = ["main"]
