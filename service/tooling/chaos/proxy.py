"""A TCP proxy between the services and Redis, owned by the chaos harness.

Every byte between a service and Redis goes through here, so the harness can
break the connection in the two ways a network does:

- ``cut()``: close every current connection at once, on both sides, with an
  RST (SO_LINGER 0) or an orderly close (FIN); new connections pass again.
- ``blackhole(True)``: a half-open network. Current connections, and those
  opened while the blackhole lasts, stay open but every byte is dropped in
  both directions and nothing is ever closed: neither side can tell that the
  other is gone. ``blackhole(False)`` lets *new* connections through again;
  the blackholed ones stay silent zombies (their streams lost bytes, so they
  can never carry a valid exchange again), as after a real network partition,
  until ``zombie_s`` elapses (the kernel's retransmission timeout giving up:
  default never, i.e. until the proxy stops).

Loopback only: it listens on 127.0.0.1 and connects to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from dataclasses import dataclass, field

HOST = "127.0.0.1"
CHUNK = 65536
CONNECT_TIMEOUT_S = 2.0


@dataclass(eq=False)
class _Conn:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None
    zombie_since: float | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def _abort(writer: asyncio.StreamWriter | None, rst: bool) -> None:
    if writer is None or writer.transport.is_closing():
        return
    if rst:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
    else:
        writer.close()


class ChaosProxy:
    def __init__(self, upstream_port: int, *, zombie_s: float | None = None) -> None:
        self.upstream_port = upstream_port
        self.zombie_s = zombie_s
        self.port = 0
        self.blackholed = False
        self.accepted = 0
        self.refused = 0  # upstream unreachable (Redis down): client closed at once
        self.cuts = 0
        self._conns: set[_Conn] = set()
        self._server: asyncio.Server | None = None
        self._reaper: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def zombies(self) -> int:
        return sum(1 for c in self._conns if c.zombie_since is not None)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, HOST, self.port or 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._reaper = asyncio.create_task(self._reap(), name="proxy-reaper")

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            self._drop(conn, rst=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
        self._server = None

    # --- faults ----------------------------------------------------------------

    def cut(self, *, rst: bool = True) -> int:
        """Close every live connection on both sides; returns how many."""
        live = [c for c in self._conns if c.zombie_since is None]
        for conn in live:
            self._drop(conn, rst=rst)
        self.cuts += len(live)
        return len(live)

    def blackhole(self, on: bool) -> int:
        """Start (on) or end (off) a blackhole; returns the number of zombies."""
        self.blackholed = on
        if on:
            now = time.monotonic()
            for conn in self._conns:
                if conn.zombie_since is None:
                    conn.zombie_since = now
        return self.zombies

    # --- plumbing --------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.blackholed:
            conn = _Conn(writer, None, zombie_since=time.monotonic())
            self._conns.add(conn)
            conn.tasks.append(asyncio.create_task(self._pump(conn, reader, None)))
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(HOST, self.upstream_port), CONNECT_TIMEOUT_S
            )
        except (OSError, TimeoutError):
            self.refused += 1
            _abort(writer, rst=True)
            return
        conn = _Conn(writer, up_writer)
        if self.blackholed:  # the blackhole began while we were connecting
            conn.zombie_since = time.monotonic()
        self._conns.add(conn)
        conn.tasks.append(asyncio.create_task(self._pump(conn, reader, up_writer)))
        conn.tasks.append(asyncio.create_task(self._pump(conn, up_reader, writer, upstream=True)))

    async def _pump(
        self,
        conn: _Conn,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter | None,
        *,
        upstream: bool = False,
    ) -> None:
        try:
            while data := await reader.read(CHUNK):
                if conn.zombie_since is not None or writer is None:
                    continue  # the blackhole: read and drop, close nothing
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            return
        # EOF or error on this side.
        if conn.zombie_since is not None and upstream:
            # Redis went away behind a blackhole: the client must not learn it.
            _abort(conn.upstream, rst=False)
            return
        self._drop(conn, rst=False)

    def _drop(self, conn: _Conn, *, rst: bool) -> None:
        self._conns.discard(conn)
        _abort(conn.client, rst)
        _abort(conn.upstream, rst)
        current = asyncio.current_task()
        for task in conn.tasks:
            if task is not current:
                task.cancel()

    async def _reap(self) -> None:
        """Close zombies older than ``zombie_s`` (when set) with an RST."""
        while True:
            await asyncio.sleep(0.5)
            if self.zombie_s is None:
                continue
            limit = time.monotonic() - self.zombie_s
            for conn in list(self._conns):
                if conn.zombie_since is not None and conn.zombie_since < limit:
                    self._drop(conn, rst=True)
