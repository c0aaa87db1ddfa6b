"""The sweeper: recovery from the deadline index.

Expired events are at-most-once: lost while the listener is away, never
published for timers that expired while Redis was down. The sweeper claims
what the events missed (chats overdue by more than a grace period whose
timer is gone) from the index itself, and redelivers batches whose lease ran
out. It runs at start-up, after every (re)subscribe and periodically. The
index, not the event, is the source of truth.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from redis.exceptions import RedisError

from service.engine.loops import sleep_or_stop
from service.stats import Stats
from service.store.scripts import Scripts

log = logging.getLogger(__name__)

SWEEP_LIMIT = 1000


class Sweeper:
    """Recovers overdue chats and expired leases, bucket by bucket."""

    def __init__(
        self,
        scripts: Scripts,
        stats: Stats,
        stop: asyncio.Event,
        submit_claim: Callable[[str, bool], None],
        submit_redeliver: Callable[[str, str], None],
        owned: Callable[[], frozenset[int]] | None = None,
    ) -> None:
        self.scripts = scripts
        self.stats = stats
        self.stop = stop
        self.submit_claim = submit_claim
        self.submit_redeliver = submit_redeliver
        self.owned = owned  # the buckets to sweep (None: every bucket)
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
            await sleep_or_stop(self.stop, self.interval_s, wake=self.wake)

    async def sweep(self) -> int:
        """One pass over the buckets; returns how many chats it handed on."""
        self.stats.sweeps += 1
        calls = self._calls
        if self.owned is not None:
            owned = self.owned()
            calls = [c for b, c in enumerate(self._calls) if b in owned]
        results = await self.scripts.run_many(calls)
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
