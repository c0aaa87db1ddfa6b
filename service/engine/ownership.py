"""This process's share of the buckets, kept up to date by a heartbeat.

Claims on expired events, the nudger and the sweeper work only on the
buckets this process owns (see ``service.store.members``), so N processes do
about the work of one instead of N times it. Appends never look at
ownership: any process takes any message. Until the first heartbeat has
answered, and whenever Redis cannot be reached for one, the last known share
is kept (at start: every bucket, as a lone process would).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from collections.abc import Callable

from redis.exceptions import RedisError

from service.engine.loops import sleep_or_stop
from service.logs import emit
from service.store.members import Members, owned_buckets
from service.store.scripts import Scripts

log = logging.getLogger(__name__)


def new_process_id() -> str:
    return f"{socket.gethostname()}:{secrets.token_hex(4)}"


class Ownership:
    def __init__(
        self,
        scripts: Scripts,
        stop: asyncio.Event,
        on_change: Callable[[frozenset[int], frozenset[int]], None],
        *,
        process_id: str | None = None,
    ) -> None:
        self.scripts = scripts
        self.stop = stop
        self.on_change = on_change  # (gained, lost)
        self.process_id = process_id or new_process_id()
        self.members = Members(scripts.keys)
        self.lease_ms = scripts.settings.owner_lease_ms
        self.buckets = scripts.keys.buckets
        self.owned: frozenset[int] = frozenset(range(self.buckets))
        self.live: tuple[str, ...] = (self.process_id,)

    def owns(self, bucket: int) -> bool:
        return bucket in self.owned

    async def heartbeat(self) -> None:
        """Renew this process's membership and take up its current share."""
        raw = await self.scripts.run(self.members.heartbeat_call(self.process_id, self.lease_ms))
        membership = Members.parse(raw)
        owned = owned_buckets(self.process_id, membership.live, self.buckets)
        if membership.live != self.live or owned != self.owned:
            gained, lost = owned - self.owned, self.owned - owned
            self.live, self.owned = membership.live, owned
            emit(
                log,
                "ownership",
                processes=len(membership.live),
                buckets=len(owned),
                gained=len(gained),
                lost=len(lost),
            )
            self.on_change(gained, lost)

    async def run(self) -> None:
        interval_s = self.lease_ms / 3000
        while not self.stop.is_set():
            try:
                await self.heartbeat()
            except (RedisError, OSError) as exc:
                log.debug("heartbeat failed: %s", exc)
            except Exception:  # a background loop logs and carries on
                log.exception("heartbeat failed")
            await sleep_or_stop(self.stop, interval_s)

    async def leave(self) -> None:
        """Hand this process's buckets to the others at once (at shutdown)."""
        try:
            await self.scripts.run(self.members.leave_call(self.process_id))
        except (RedisError, OSError) as exc:
            log.debug("leave failed (the lease runs out instead): %s", exc)
