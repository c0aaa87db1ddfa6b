"""The live service processes of a deployment, and which buckets each one owns.

Every process heartbeats into one sorted set (process id -> the time its
membership runs out) and reads back the live ids. Ownership is computed, not
stored: with the ids sorted, bucket ``b`` belongs to ``ids[b % len(ids)]``,
so every process that has read the same list agrees on every owner without
being told. A process that stops leaves at once; one that dies drops out
when its lease runs out, and the others take its buckets at their next
heartbeat. Ownership only decides who does the work (claims on events,
nudges, sweeps); the claim script stays the only arbiter of a batch, so two
processes that disagree for a moment cost a few scripts, never a batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from service.store.keyspace import Keyspace
from service.store.runner import Call, Script

MEMBERS = Script.load("members")


@dataclass(frozen=True, slots=True)
class Membership:
    now_ms: int
    live: tuple[str, ...]  # sorted


def owned_buckets(process_id: str, live: Sequence[str], buckets: int) -> frozenset[int]:
    """The buckets ``process_id`` owns among the ``live`` processes (all, if it is alone)."""
    ids = sorted(set(live) | {process_id})
    me = ids.index(process_id)
    return frozenset(b for b in range(buckets) if b % len(ids) == me)


class Members:
    def __init__(self, keyspace: Keyspace) -> None:
        self.key = keyspace.members

    def heartbeat_call(self, process_id: str, lease_ms: int) -> Call:
        return MEMBERS, (self.key,), (process_id, max(lease_ms, 1))

    def leave_call(self, process_id: str) -> Call:
        return MEMBERS, (self.key,), (process_id, 0)

    @staticmethod
    def parse(raw: Any) -> Membership:
        return Membership(int(raw[0]), tuple(sorted(m.decode() for m in raw[1:])))
