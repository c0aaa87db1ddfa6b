"""A small HTTP/1.1 load generator for ``batcher bench http`` when wrk is absent.

Keep-alive connections, each with one request in flight (as wrk does):
send, read the response (status line, ``Content-Length`` body), record the
latency, send the next. Requests are prebuilt bytes, responses are parsed
just enough to find where they end, and the event loop is uvloop when it is
installed, so the client spends as little CPU per request as it can.
Whether that is little enough is measured, not assumed: ``batcher bench
http`` runs it against the bare endpoint too and reports both rates.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from service.tooling.bench.common import ms_pct


@dataclass
class LoadResult:
    requests: int
    seconds: float
    per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    errors: int


class _Connection(asyncio.Protocol):
    def __init__(self, gen: _Generator) -> None:
        self.gen = gen
        self.buf = b""
        self.sent_at = 0.0
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        if self.gen.stopping:
            self.transport.close()
            return
        self.sent_at = time.perf_counter()
        self.transport.write(self.gen.next_request())

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end]
            length = _content_length(head)
            if length is None:  # chunked or unknown framing: not supported
                self.gen.errors += 1
                assert self.transport is not None
                self.transport.close()
                return
            total = end + 4 + length
            if len(self.buf) < total:
                return
            status = head[9:12]
            self.buf = self.buf[total:]
            self.gen.record(time.perf_counter() - self.sent_at, status.startswith(b"2"))
            self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self.gen.errors += 1
        if not self.closed.done():
            self.closed.set_result(None)


def _content_length(head: bytes) -> int | None:
    lower = head.lower()
    i = lower.find(b"\r\ncontent-length:")
    if i < 0:
        return None if b"\r\ntransfer-encoding:" in lower else 0
    j = lower.find(b"\r\n", i + 2)
    return int(lower[i + 17 : j if j >= 0 else len(lower)].strip())


class _Generator:
    def __init__(self, requests: Sequence[bytes]) -> None:
        self.requests = requests
        self.i = 0
        self.stopping = False
        self.measuring = False
        self.latencies: list[float] = []
        self.non_2xx = 0
        self.errors = 0

    def next_request(self) -> bytes:
        self.i = (self.i + 1) % len(self.requests)
        return self.requests[self.i]

    def record(self, seconds: float, ok: bool) -> None:
        if self.measuring:
            self.latencies.append(seconds)
            if not ok:
                self.non_2xx += 1


async def run_load(
    host: str,
    port: int,
    requests: Sequence[bytes],
    *,
    connections: int,
    seconds: float,
    warmup_s: float = 1.0,
) -> LoadResult:
    """Hit ``host:port`` with ``requests`` (cycled) over keep-alive connections."""
    gen = _Generator(requests)
    loop = asyncio.get_running_loop()
    conns: list[_Connection] = []
    for _ in range(connections):
        _, proto = await loop.create_connection(lambda: _Connection(gen), host, port)
        conns.append(proto)
    await asyncio.sleep(warmup_s)
    gen.measuring = True
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)
    gen.measuring = False
    elapsed = time.perf_counter() - t0
    gen.stopping = True
    await asyncio.wait([asyncio.ensure_future(c.closed) for c in conns], timeout=5)
    lat = sorted(x * 1000 for x in gen.latencies)
    return LoadResult(
        len(lat), round(elapsed, 2), round(len(lat) / elapsed),
        ms_pct(lat, 0.5, ordered=True, digits=2), ms_pct(lat, 0.99, ordered=True, digits=2),
        gen.non_2xx, gen.errors,
    )  # fmt: skip


def post_request(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
