"""Live processes and their buckets (service.store.members), on a real server."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis

from service.store.keyspace import Keyspace
from service.store.members import Members, owned_buckets
from service.store.runner import run_script

KS = Keyspace()


@given(
    ids=st.sets(st.text(min_size=1, max_size=8), min_size=1, max_size=9),
    buckets=st.integers(1, 64),
)
def test_every_bucket_has_exactly_one_owner(ids: set[str], buckets: int) -> None:
    shares = [owned_buckets(p, list(ids), buckets) for p in ids]
    assert sorted(b for share in shares for b in share) == list(range(buckets))
    sizes = [len(s) for s in shares]
    assert max(sizes) - min(sizes) <= 1  # as even as the counts allow


def test_a_process_alone_or_not_yet_listed_owns_its_share() -> None:
    assert owned_buckets("a", [], 4) == frozenset(range(4))
    assert owned_buckets("b", ["a"], 4) == owned_buckets("b", ["a", "b"], 4)


async def beat(redis: Redis, pid: str, lease_ms: int = 10_000) -> tuple[str, ...]:
    members = Members(KS)
    return Members.parse(await run_script(redis, *members.heartbeat_call(pid, lease_ms))).live


async def test_heartbeat_lists_the_live_and_drops_the_expired(redis_client: Redis) -> None:
    assert await beat(redis_client, "p1") == ("p1",)
    assert await beat(redis_client, "p2", lease_ms=50) == ("p1", "p2")
    await asyncio.sleep(0.1)  # time is the subject: p2's lease runs out
    assert await beat(redis_client, "p1") == ("p1",)
    assert await redis_client.zscore(KS.members, "p2") is None  # removed, not only hidden
    assert await redis_client.ttl(KS.members) == -1


async def test_leave_hands_over_at_once(redis_client: Redis) -> None:
    await beat(redis_client, "p1")
    await beat(redis_client, "p2")
    members = Members(KS)
    left = Members.parse(await run_script(redis_client, *members.leave_call("p2"))).live
    assert left == ("p1",)
