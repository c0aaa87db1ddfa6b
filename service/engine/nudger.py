"""The nudger: timers touched as their deadline passes, so events come at once.

Redis publishes ``expired`` when it deletes a key, which for an untouched key
happens whenever its background cycle reaches it: seconds late at scale.
Touching an expired key on the primary deletes it and publishes the event at
once, so the nudger runs a script per bucket (``lua/nudge.lua``) that
touches the timers whose deadline (in the ``due`` index) has just passed;
their events then drive claims through the one usual path.

It sleeps until it is needed. Each nudge answers with the bucket's next
deadline, and a script that sets an earlier one (an append in any process)
publishes it on the bucket's wake channel (``lua/wake.lua``), which the
listeners hear: so the nudger wakes at the next deadline of the buckets it
owns, or when told of an earlier one, and runs no script while nothing is
due. Buckets it knows nothing of (at start, when it gains them, after a
listener resubscribes and may have missed a wake) are nudged at once, which
reads their next deadline. ``nudge_interval_ms`` is the least time between
two passes: deadlines falling due within it are nudged together.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable

from redis.exceptions import RedisError

from service.engine.loops import sleep_or_stop
from service.stats import Stats
from service.store.runner import Call
from service.store.scripts import Scripts

log = logging.getLogger(__name__)

NUDGE_LIMIT = 1000
RETRY_S = 0.5  # after a failed pass


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
        self.gap_s = scripts.settings.nudge_interval_ms / 1000
        buckets = scripts.keys.all_buckets()
        self._calls: list[Call] = [scripts.nudge_call(bk, limit=NUDGE_LIMIT) for bk in buckets]
        # Monotonic time each bucket is next due; 0 = look now, inf = nothing due.
        self._at = [0.0] * len(buckets)
        self._offset_ms: float | None = None  # Redis's clock - time.monotonic(), in ms
        self._wake = asyncio.Event()
        self.passes = 0  # nudge passes run (each: one script per due bucket)

    def _buckets(self) -> Iterable[int]:
        return range(len(self._at)) if self.owned is None else self.owned()

    def look(self, buckets: Iterable[int] | None = None) -> None:
        """Nudge these buckets (default: all) at once, which reads their next deadline."""
        for b in range(len(self._at)) if buckets is None else buckets:
            self._at[b] = 0.0
        self._wake.set()

    def heard(self, bucket: int, deadline_ms: int) -> None:
        """A deadline was set in ``bucket`` (a wake message): nudge it then, if sooner."""
        at = self._local(deadline_ms)
        if at < self._at[bucket]:
            self._at[bucket] = at
            self._wake.set()

    def next_in_s(self) -> float | None:
        """Seconds until the next pass is due (None: nothing due); for tests and views."""
        at = min((self._at[b] for b in self._buckets()), default=math.inf)
        return None if at == math.inf else max(at - time.monotonic(), 0.0)

    def _local(self, redis_ms: int) -> float:
        """The monotonic time just after ``redis_ms`` on Redis's clock (its TIME)."""
        if self._offset_ms is None:
            return 0.0  # no reply yet to set the clocks by: look now
        return (redis_ms + 1 - self._offset_ms) / 1000

    async def run(self) -> None:
        while not self.stop.is_set():
            now = time.monotonic()
            buckets = list(self._buckets())
            due = [b for b in buckets if self._at[b] <= now]
            if not due:
                first = min((self._at[b] for b in buckets), default=math.inf)
                self._wake.clear()
                timeout_s = None if first == math.inf else first - now
                await sleep_or_stop(self.stop, timeout_s, wake=self._wake)
                continue
            try:
                await self.nudge(due)
            except (RedisError, OSError) as exc:
                log.debug("nudge failed: %s", exc)
                self._retry(due)
            except Exception:  # a background loop logs and carries on
                log.exception("nudge failed")
                self._retry(due)
            await sleep_or_stop(self.stop, self.gap_s)

    async def nudge(self, buckets: list[int]) -> int:
        """One pass over ``buckets``; returns the timers touched."""
        self.passes += 1
        for b in buckets:
            self._at[b] = math.inf  # a wake heard while the scripts run lowers it again
        results = await self.scripts.run_many([self._calls[b] for b in buckets])
        replied_ms = time.monotonic() * 1000
        touched = 0
        for b, raw in zip(buckets, results, strict=True):
            if isinstance(raw, Exception):
                raise raw
            got = self.scripts.parse_nudge(raw)
            self._offset_ms = got.now_ms - replied_ms
            touched += got.touched
            if got.next_ms is not None:
                self._at[b] = min(self._at[b], self._local(got.next_ms))
        self.stats.nudged += touched
        return touched

    def _retry(self, buckets: list[int]) -> None:
        at = time.monotonic() + RETRY_S
        for b in buckets:
            self._at[b] = min(self._at[b], at)
