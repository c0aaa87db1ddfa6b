"""The nudger and the sweeper: the deadline index at work.

Redis publishes ``expired`` when it deletes a key, which for an untouched key
happens whenever its background cycle reaches it: seconds late at scale. The
**nudger** touches, every few milliseconds, the timers whose deadline has
just passed, so their events come at once and drive claims as usual. The
**sweeper** claims what the events missed (listener down, Redis restarted,
events lost) from the index itself, and redelivers batches whose lease ran
out. The index, not the event, is the source of truth.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from redis.exceptions import RedisError

from .loops import sleep_or_stop
from .scripts import Scripts
from .stats import Stats

log = logging.getLogger("service.sweeper")

NUDGE_LIMIT = 1000
SWEEP_LIMIT = 1000


class Nudger:
    def __init__(self, scripts: Scripts, stats: Stats, stop: asyncio.Event) -> None:
        self.scripts = scripts
        self.stats = stats
        self.stop = stop
        self.interval_s = scripts.settings.nudge_interval_ms / 1000
        self._calls = [
            scripts.nudge_call(bk, limit=NUDGE_LIMIT) for bk in scripts.keys.all_buckets()
        ]

    async def run(self) -> None:
        while not self.stop.is_set():
            try:
                results = await self.scripts.run_many(self._calls)
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


class Sweeper:
    """Recovers overdue chats and expired leases, bucket by bucket."""

    def __init__(
        self,
        scripts: Scripts,
        stats: Stats,
        stop: asyncio.Event,
        submit_claim: Callable[[str, bool], None],
        submit_redeliver: Callable[[str, str], None],
    ) -> None:
        self.scripts = scripts
        self.stats = stats
        self.stop = stop
        self.submit_claim = submit_claim
        self.submit_redeliver = submit_redeliver
        self.interval_s = scripts.settings.sweep_interval_ms / 1000
        self.wake = asyncio.Event()
        self._calls = [
            scripts.scan_call(bk, limit=SWEEP_LIMIT) for bk in scripts.keys.all_buckets()
        ]

    async def run(self) -> None:
        while not self.stop.is_set():
            self.wake.clear()
            try:
                await self.sweep()
            except (RedisError, OSError) as exc:
                log.warning("sweep failed: %s", exc)
            except Exception:
                log.exception("sweep failed")
            wake = asyncio.create_task(self.wake.wait())
            stop = asyncio.create_task(self.stop.wait())
            await asyncio.wait(
                {wake, stop}, timeout=self.interval_s, return_when=asyncio.FIRST_COMPLETED
            )
            wake.cancel()
            stop.cancel()

    async def sweep(self) -> int:
        """One pass over every bucket; returns how many chats it handed on."""
        self.stats.sweeps += 1
        results = await self.scripts.run_many(self._calls)
        overdue: list[str] = []
        leases: list[str] = []
        for r in results:
            if isinstance(r, Exception):
                raise r
            overdue.extend(c.decode() for c in r[0])
            leases.extend(c.decode() for c in r[1])
        for chat_id in overdue:
            self.submit_claim(chat_id, True)
        if leases:
            pipe = self.scripts.redis.pipeline(transaction=False)
            for chat_id in leases:
                pipe.hget(self.scripts.keys.chat(chat_id).meta, "batch")
            for chat_id, batch_id in zip(leases, await pipe.execute(), strict=True):
                if batch_id is not None:
                    self.submit_redeliver(chat_id, batch_id.decode())
        return len(overdue) + len(leases)
