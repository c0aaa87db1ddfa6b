"""How much work the indexes hold: open, in-flight and dead batches, summed
over every bucket in one pipelined round trip.

Read by ``/metrics``, the operators' tools, the benchmarks and the tests:
the indexes, not the data keys, say what is waiting.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from service.store.keyspace import Keyspace


@dataclass(frozen=True, slots=True)
class Backlog:
    open: int  # chats with a batch waiting to be claimed (entries of ``due``)
    inflight: int  # batches claimed and not yet acknowledged (``inflight``)
    dead: int  # dead-lettered batches (``dead``)

    @property
    def pending(self) -> int:
        """Batches not delivered yet: open or in flight."""
        return self.open + self.inflight


async def read_backlog(redis: Redis, keyspace: Keyspace) -> Backlog:
    pipe = redis.pipeline(transaction=False)
    for bk in keyspace.all_buckets():
        pipe.zcard(bk.due)
        pipe.zcard(bk.inflight)
        pipe.zcard(bk.dead)
    sizes = [int(n) for n in await pipe.execute()]
    return Backlog(sum(sizes[0::3]), sum(sizes[1::3]), sum(sizes[2::3]))
