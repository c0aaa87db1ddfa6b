"""LocalCluster (service/tooling/cluster.py): a real local Redis Cluster, checked through
redis-py's async cluster client and through plain connections to single nodes.

Every test gets a fresh 3-primary + 3-replica cluster (the `redis_cluster` fixture)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from service.tooling.cluster import SLOTS, ClusterNodeProc, LocalCluster


@pytest.fixture
async def client(redis_cluster: LocalCluster) -> AsyncIterator[RedisCluster]:
    rc = RedisCluster.from_url(redis_cluster.url, decode_responses=True)
    await rc.initialize()
    yield rc
    await rc.aclose()


def direct(node: ClusterNodeProc) -> redis.Redis:
    """A plain (non-cluster) connection to one node."""
    return redis.Redis(host="127.0.0.1", port=node.port, decode_responses=True)


def cluster_info(node: ClusterNodeProc) -> dict[str, str]:
    with direct(node) as c:
        text = c.execute_command("CLUSTER", "INFO")
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def slot_of(key: str) -> int:
    return key_slot(key.encode())


async def test_forms_three_primaries_each_with_one_replica(
    redis_cluster: LocalCluster, client: RedisCluster
) -> None:
    primaries = redis_cluster.primaries()
    assert len(primaries) == 3 and len(redis_cluster.nodes) == 6
    assert (
        len({n.port for n in redis_cluster.nodes} | {n.bus_port for n in redis_cluster.nodes}) == 12
    )
    replicas = []
    for primary in primaries:
        [replica] = redis_cluster.replicas_of(primary)
        assert (replica.role, replica.primary_id) == ("replica", primary.node_id)
        replicas.append(replica)
    for node in redis_cluster.nodes:  # every node: all slots covered, all nodes known
        info = cluster_info(node)
        assert info["cluster_state"] == "ok"
        assert info["cluster_slots_assigned"] == info["cluster_slots_ok"] == str(SLOTS)
        assert (info["cluster_known_nodes"], info["cluster_size"]) == ("6", "3")
    # Even split: each primary owns one third, first to last slot.
    assert [redis_cluster.node_for_slot(s) for s in (0, 5461, SLOTS - 1)] == primaries
    assert redis_cluster.url == f"redis://127.0.0.1:{primaries[0].port}"
    # The cluster client discovers the same topology from the URL alone.
    assert {n.port for n in client.get_primaries()} == {p.port for p in primaries}
    assert {n.port for n in client.get_replicas()} == {r.port for r in replicas}
    assert await client.ping()


async def test_keys_land_on_the_primary_owning_their_slot(
    redis_cluster: LocalCluster, client: RedisCluster
) -> None:
    keys = [f"chat:{i}" for i in range(60)]
    for key in keys:
        await client.set(key, f"v-{key}")
    primaries = redis_cluster.primaries()
    owners = {slot: redis_cluster.node_for_slot(slot) for slot in {slot_of(k) for k in keys}}
    assert set(owners.values()) == set(primaries)  # 60 keys spread over all three
    for key in keys:
        owner = owners[slot_of(key)]
        assert client.get_node_from_key(key).port == owner.port
        with direct(owner) as c:
            assert c.get(key) == f"v-{key}"
        other = next(p for p in primaries if p is not owner)
        with direct(other) as c, pytest.raises(redis.exceptions.MovedError):
            c.get(key)
    # ... and reach the owner's replica.
    owner = owners[slot_of(keys[0])]
    [replica] = redis_cluster.replicas_of(owner)
    with direct(owner) as c:
        assert c.execute_command("WAIT", 1, 5000) == 1
    with direct(replica) as c:
        c.execute_command("READONLY")
        assert c.get(keys[0]) == f"v-{keys[0]}"


async def test_failover_promotes_the_replica_and_the_client_follows(
    redis_cluster: LocalCluster, client: RedisCluster
) -> None:
    await client.set("{chat}:a", "1")
    slot = slot_of("{chat}:a")
    old = redis_cluster.node_for_slot(slot)
    [replica] = redis_cluster.replicas_of(old)

    redis_cluster.failover(replica)

    assert replica.role == "primary" and redis_cluster.node_for_slot(slot) is replica
    assert redis_cluster.replicas_of(replica) == [old] and old.role == "replica"
    assert len(redis_cluster.primaries()) == 3
    for node in redis_cluster.nodes:
        assert cluster_info(node)["cluster_state"] == "ok"
    # The client still maps the slot to `old`: the MOVED it gets sends it to the new primary.
    assert await client.get("{chat}:a") == "1"
    await client.set("{chat}:a", "2")
    assert client.get_node_from_key("{chat}:a").port == replica.port
    with direct(replica) as c:
        assert c.get("{chat}:a") == "2"
    for i in range(30):  # the other slots are unaffected
        await client.set(f"after:{i}", i)
        assert await client.get(f"after:{i}") == str(i)


async def test_move_slot_moves_the_slot_with_its_keys(
    redis_cluster: LocalCluster, client: RedisCluster
) -> None:
    keys = [f"{{room}}:{i}" for i in range(250)]  # more than one GETKEYSINSLOT page
    await client.mset({k: k for k in keys})
    await client.hset("{room}:hash", mapping={"a": "1", "b": "2"})
    await client.set("{room}:ttl", "x", ex=300)
    slot = slot_of("{room}")
    source = redis_cluster.node_for_slot(slot)
    target = next(p for p in redis_cluster.primaries() if p is not source)

    redis_cluster.move_slot(slot, target)

    assert redis_cluster.node_for_slot(slot) is target
    with direct(source) as s, direct(target) as t:
        assert s.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
        assert t.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == len(keys) + 2
    for node in redis_cluster.nodes:
        assert cluster_info(node)["cluster_state"] == "ok"
    # The client's map is stale; MOVED takes it to the target, values, types and TTLs intact.
    assert await client.mget(keys) == keys
    assert await client.hgetall("{room}:hash") == {"a": "1", "b": "2"}
    assert 0 < await client.ttl("{room}:ttl") <= 300
    await client.set("{room}:new", "y")
    with direct(target) as c:
        assert c.get("{room}:new") == "y"


async def test_add_primary_then_move_a_slot_to_it(
    redis_cluster: LocalCluster, client: RedisCluster
) -> None:
    await client.set("{fresh}:k", "v")
    slot = slot_of("{fresh}:k")

    new = redis_cluster.add_primary()

    assert new.role == "primary" and new in redis_cluster.primaries()
    assert len(redis_cluster.primaries()) == 4 and redis_cluster.replicas_of(new) == []
    info = cluster_info(new)
    assert (info["cluster_state"], info["cluster_known_nodes"]) == ("ok", "7")
    assert redis_cluster.node_for_slot(slot) is not new  # empty until a slot is moved

    redis_cluster.move_slot(slot, new)

    assert redis_cluster.node_for_slot(slot) is new
    assert cluster_info(new)["cluster_slots_assigned"] == str(SLOTS)
    assert await client.get("{fresh}:k") == "v"  # the client learns of the new node
    assert client.get_node_from_key("{fresh}:k").port == new.port
    await client.set("{fresh}:k2", "w")
    with direct(new) as c:
        assert c.mget("{fresh}:k", "{fresh}:k2") == ["v", "w"]


async def test_killing_a_replica_leaves_the_cluster_ok(
    redis_cluster: LocalCluster, client: RedisCluster
) -> None:
    primary = redis_cluster.primaries()[0]
    [replica] = redis_cluster.replicas_of(primary)

    redis_cluster.kill(replica)

    assert not replica.running
    # Wait until the others have noticed the crash (FAIL after the node timeout) ...
    deadline = time.monotonic() + 10
    with direct(primary) as c:
        while True:
            line = next(
                ln for ln in c.execute_command("CLUSTER", "NODES").splitlines()
                if ln.startswith(replica.node_id)
            )  # fmt: skip
            if "fail" in line.split()[2].split(","):
                break
            assert time.monotonic() < deadline, f"the crash went unnoticed: {line}"
            await asyncio.sleep(0.05)
    # ... the cluster is still ok, and still serves every slot.
    redis_cluster.wait_ok()
    assert redis_cluster.replicas_of(primary) == [] and len(redis_cluster.primaries()) == 3
    key = next(
        f"k{i}" for i in range(1000) if redis_cluster.node_for_slot(slot_of(f"k{i}")) is primary
    )
    await client.set(key, "still here")
    assert await client.get(key) == "still here"
