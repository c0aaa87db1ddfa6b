"""The chaos proxy itself: it passes bytes, cuts with an RST, and blackholes
without closing anything (a half-open connection as a network leaves it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from service.store.embedded import RedisServer
from service.tooling.chaos.proxy import ChaosProxy

PING = b"*1\r\n$4\r\nPING\r\n"


@pytest.fixture
async def proxy(redis_factory: Callable[..., RedisServer]) -> AsyncIterator[ChaosProxy]:
    p = ChaosProxy(redis_factory().port)
    await p.start()
    yield p
    await p.stop()


async def connect(p: ChaosProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", p.port)


async def closed_by_peer(reader: asyncio.StreamReader, timeout_s: float) -> bool:
    """True once the peer closed (EOF) or reset the connection."""
    try:
        return await asyncio.wait_for(reader.read(), timeout_s) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


async def ping(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    writer.write(PING)
    await writer.drain()
    return await asyncio.wait_for(reader.readline(), 2)


async def test_passes_bytes_both_ways(proxy: ChaosProxy) -> None:
    r, w = await connect(proxy)
    assert await ping(r, w) == b"+PONG\r\n"
    assert await ping(r, w) == b"+PONG\r\n"
    w.close()


async def test_cut_resets_live_connections_and_new_ones_pass(proxy: ChaosProxy) -> None:
    r, w = await connect(proxy)
    assert await ping(r, w) == b"+PONG\r\n"
    assert proxy.cut(rst=True) == 1
    assert await closed_by_peer(r, 2)
    r2, w2 = await connect(proxy)
    assert await ping(r2, w2) == b"+PONG\r\n"
    w2.close()


async def test_blackhole_drops_data_and_closes_nothing(proxy: ChaosProxy) -> None:
    r, w = await connect(proxy)
    assert await ping(r, w) == b"+PONG\r\n"
    proxy.blackhole(True)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ping(r, w), 0.5)
    assert not r.at_eof()
    # a connection opened during the blackhole is accepted, then silent
    r2, w2 = await connect(proxy)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ping(r2, w2), 0.5)
    assert proxy.blackhole(False) == 2
    # afterwards new connections pass; the blackholed ones stay silent zombies
    r3, w3 = await connect(proxy)
    assert await ping(r3, w3) == b"+PONG\r\n"
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ping(r, w), 0.5)
    assert not r.at_eof() and not r2.at_eof()
    for writer in (w, w2, w3):
        writer.close()


async def test_zombies_are_reset_after_zombie_s(redis_factory: Callable[..., RedisServer]) -> None:
    p = ChaosProxy(redis_factory().port, zombie_s=0.2)
    await p.start()
    try:
        r, w = await connect(p)
        assert await ping(r, w) == b"+PONG\r\n"
        p.blackhole(True)
        p.blackhole(False)
        assert await closed_by_peer(r, 3)
        assert p.zombies == 0
    finally:
        await p.stop()


async def test_upstream_down_closes_the_client(redis_factory: Callable[..., RedisServer]) -> None:
    server = redis_factory()
    p = ChaosProxy(server.port)
    await p.start()
    try:
        await asyncio.to_thread(server.stop)
        r, w = await connect(p)
        w.write(PING)
        assert await closed_by_peer(r, 3)
        assert p.refused == 1
    finally:
        await p.stop()
