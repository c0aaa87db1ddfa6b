"""Helpers for background loops that stop on an ``asyncio.Event``."""

from __future__ import annotations

import asyncio


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to ``seconds``; return early (True) once ``stop`` is set.

    ``asyncio.wait``, not ``wait_for``: on Python 3.11 ``wait_for`` can swallow
    a cancellation that lands as its timeout fires, and a loop that sleeps a
    few milliseconds at a time would then never be cancelled.
    """
    if stop.is_set():
        return True
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({waiter}, timeout=seconds)
    finally:
        waiter.cancel()
    return stop.is_set()
