"""The nudger: timers touched as their deadline passes, so events come at once.

Redis publishes ``expired`` when it deletes a key, which for an untouched key
happens whenever its background cycle reaches it: seconds late at scale.
Touching an expired key on the primary deletes it and publishes the event at
once, so the nudger runs, every few milliseconds, a script per bucket that
touches the timers whose deadline (in the ``due`` index) has just passed.
Their events then drive claims through the one usual path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from redis.exceptions import RedisError

from service.engine.loops import sleep_or_stop
from service.stats import Stats
from service.store.runner import Call
from service.store.scripts import Scripts

log = logging.getLogger(__name__)

NUDGE_LIMIT = 1000


class Nudger:
    """Nudges the buckets ``owned()`` names (every bucket, without an owner filter)."""

    def __init__(
        self,
        scripts: Scripts,
        stats: Stats,
        stop: asyncio.Event,
        owned: Callable[[], frozenset[int]] | None = None,
    ) -> None:
        self.scripts = scripts
        self.stats = stats
        self.stop = stop
        self.owned = owned
        self.interval_s = scripts.settings.nudge_interval_ms / 1000
        self._calls = [
            scripts.nudge_call(bk, limit=NUDGE_LIMIT) for bk in scripts.keys.all_buckets()
        ]

    def calls(self) -> list[Call]:
        if self.owned is None:
            return self._calls
        owned = self.owned()
        return [c for b, c in enumerate(self._calls) if b in owned]

    async def run(self) -> None:
        while not self.stop.is_set():
            try:
                results = await self.scripts.run_many(self.calls())
                for r in results:
                    if isinstance(r, Exception):
                        raise r
                    self.stats.nudged += int(r)
            except (RedisError, OSError) as exc:
                log.debug("nudge failed: %s", exc)
                await sleep_or_stop(self.stop, 0.5)
            except Exception:  # a background loop logs and carries on
                log.exception("nudge failed")
                await sleep_or_stop(self.stop, 0.5)
            await sleep_or_stop(self.stop, self.interval_s)
