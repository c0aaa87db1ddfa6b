"""Helpers for background loops that stop on an ``asyncio.Event``."""

from __future__ import annotations

import asyncio


async def sleep_or_stop(
    stop: asyncio.Event, seconds: float | None, wake: asyncio.Event | None = None
) -> bool:
    """Sleep up to ``seconds`` (None: no limit); return early once ``stop``
    is set (True) or ``wake`` is (False).

    ``asyncio.wait``, not ``wait_for``: on Python 3.11 ``wait_for`` can swallow
    a cancellation that lands as its timeout fires, and a loop that sleeps a
    few milliseconds at a time would then never be cancelled.
    """
    if stop.is_set():
        return True
    waiters = {asyncio.ensure_future(stop.wait())}
    if wake is not None:
        waiters.add(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return stop.is_set()
