"""Client creation: a cluster is detected by itself, or named by the setting."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from service.store.connections import connect, is_cluster, node_url, primary_urls
from service.tooling.cluster import LocalCluster


async def test_a_single_server_gets_a_plain_client(redis_url: str) -> None:
    client = await connect(redis_url)
    try:
        assert isinstance(client, Redis) and not is_cluster(client)
        assert list((await primary_urls(client, redis_url)).values()) == [redis_url]
    finally:
        await client.aclose()


async def test_a_cluster_node_gets_a_cluster_client(redis_cluster: LocalCluster) -> None:
    auto = await connect(redis_cluster.url)
    forced_off = await connect(redis_cluster.url, "false")
    try:
        assert is_cluster(auto) and isinstance(auto, RedisCluster)
        assert not is_cluster(forced_off)
        primaries = await primary_urls(auto, redis_cluster.url)
        ports = {p.port for p in redis_cluster.primaries()}
        assert {int(name.rpartition(":")[2]) for name in primaries} == ports
        await auto.set("k", "v")  # routed by slot, wherever it lives
        assert await auto.get("k") == b"v"
    finally:
        await auto.aclose()
        await forced_off.aclose()


def test_node_url_keeps_scheme_credentials_and_options() -> None:
    url = "rediss://app:s3cret@redis.example:6380/0?ssl_cert_reqs=required"
    assert node_url(url, "10.0.0.7", 7001) == (
        "rediss://app:s3cret@10.0.0.7:7001/0?ssl_cert_reqs=required"
    )
    assert node_url("redis://h:1", "10.0.0.8", 7002) == "redis://10.0.0.8:7002"
