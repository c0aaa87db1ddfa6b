"""A local HTTP forward sink: the bot side of ``BATCHER_FORWARD_URL``, for tests.

A tiny Starlette app under uvicorn, served in the test's own event loop. It
records every POST (headers, raw body, parsed JSON, whether its
``X-Batcher-Signature`` is valid for the configured secret) and answers as it
is told: a status sequence, slowly, never (a hang, until the sink stops), or
not at all (the server stopped: connections are refused).

    async with Sink(secret=b"s") as sink:           # sink.url -> BATCHER_FORWARD_URL
        sink.plan(500, 500)                         # the next two POSTs fail, then 200
        await sink.wait_for(lambda: len(sink.acked()) == 1, timeout_s=5)
        await sink.stop()                           # down: connection refused
        await sink.start()                          # back, same port
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

SIGNATURE_HEADER = "x-batcher-signature"


@dataclass(frozen=True)
class Reply:
    """How the sink answers one POST."""

    status: int = 200
    delay_s: float = 0.0  # answer this much later (cut short when the sink stops)
    hang: bool = False  # never answer (until the sink stops, then 503)


OK = Reply(200)
HANG = Reply(hang=True)


@dataclass
class Received:
    """One POST the sink got."""

    n: int  # arrival order, from 0
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    json: Any  # the parsed body, None when it is not JSON
    signature_valid: bool | None  # None: the sink has no secret to check with
    arrived: float  # time.monotonic()
    status: int | None = None  # what the sink answered; None while it has not (yet)
    answered: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def batch(self) -> dict[str, Any]:
        assert isinstance(self.json, dict), self.body[:200]
        return self.json

    @property
    def batch_id(self) -> str:
        return str(self.batch["batch_id"])

    @property
    def chat_id(self) -> str:
        return str(self.batch["chat_id"])

    @property
    def attempt(self) -> int:
        return int(self.batch["attempt"])

    @property
    def message_ids(self) -> list[str]:
        return [m["id"] for m in self.batch["messages"]]

    @property
    def texts(self) -> list[str | None]:
        return [m["text"] for m in self.batch["messages"]]


def expected_signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class _Server(uvicorn.Server):
    """uvicorn in someone else's event loop: leave the process's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class _Control:
    plan: list[Reply] = field(default_factory=list)
    default: Reply = OK
    responder: Callable[[Received], Reply | None] | None = None


class Sink:
    def __init__(
        self,
        secret: bytes | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str = "/hook",
        hang_s: float = 60.0,
    ) -> None:
        self.secret = secret
        self.host = host
        self.port = port
        self.path = path
        self.hang_s = hang_s
        self.received: list[Received] = []
        self.control = _Control()
        self._changed = asyncio.Condition()
        self._release = asyncio.Event()
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.app = Starlette(routes=[Route("/{rest:path}", self._handle, methods=["POST"])])

    # --- what to answer ----------------------------------------------------------

    def plan(self, *replies: Reply | int) -> None:
        """Answer the next POSTs with these (statuses or Replies), then with ``default``."""
        self.control.plan.extend(r if isinstance(r, Reply) else Reply(r) for r in replies)

    @property
    def default(self) -> Reply:
        return self.control.default

    @default.setter
    def default(self, reply: Reply | int) -> None:
        self.control.default = reply if isinstance(reply, Reply) else Reply(reply)

    def respond_with(self, responder: Callable[[Received], Reply | None] | None) -> None:
        """A function choosing the reply per request (None: fall back to plan/default)."""
        self.control.responder = responder

    def _choose(self, rec: Received) -> Reply:
        if self.control.responder is not None:
            chosen = self.control.responder(rec)
            if chosen is not None:
                return chosen
        if self.control.plan:
            return self.control.plan.pop(0)
        return self.control.default

    # --- the app -----------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        headers = {k.lower(): v for k, v in request.headers.items()}
        valid: bool | None = None
        if self.secret is not None:
            given = headers.get(SIGNATURE_HEADER, "")
            valid = hmac.compare_digest(given, expected_signature(self.secret, body))
        async with self._changed:
            rec = Received(
                n=len(self.received),
                path=request.url.path,
                headers=headers,
                body=body,
                json=doc,
                signature_valid=valid,
                arrived=time.monotonic(),
            )
            reply = self._choose(rec)
            self.received.append(rec)
            self._changed.notify_all()
        status = reply.status
        if reply.hang:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), self.hang_s)
            status = 503
        elif reply.delay_s:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._release.wait(), reply.delay_s)
        async with self._changed:
            rec.status, rec.answered = status, time.monotonic()
            self._changed.notify_all()
        return JSONResponse({"status": status}, status_code=status)

    # --- lifecycle ---------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self.port, "start the sink first"
        return f"http://{self.host}:{self.port}{self.path}"

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self, timeout_s: float = 5.0) -> None:
        """Serve (again) on ``port``; the first start picks a free port if it is 0."""
        if self.running:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        self._release = asyncio.Event()
        config = uvicorn.Config(
            self.app,
            log_config=None,
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self._server = server = _Server(config)
        self._task = task = asyncio.create_task(server.serve(sockets=[sock]), name="sink")
        # uvicorn announces readiness through a flag only: poll it, with a deadline.
        deadline = time.monotonic() + timeout_s
        while not server.started:
            if task.done():
                task.result()  # raises what made it stop
                raise RuntimeError("sink server exited during start-up")
            if time.monotonic() > deadline:
                raise TimeoutError("sink server did not start")
            await asyncio.sleep(0.005)

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Stop serving: hanging and slow replies are released, new connections refused."""
        server, task = self._server, self._task
        self._server, self._task = None, None
        if server is None or task is None:
            return
        self._release.set()
        server.should_exit = True
        await asyncio.wait_for(task, timeout_s)

    async def __aenter__(self) -> Sink:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- waiting and reading -----------------------------------------------------

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
        """Until ``predicate()`` holds; re-checked on every arrival and every answer."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout_s)

    def acked(self) -> list[Received]:
        """The POSTs answered with a 2xx (the batches the bot took)."""
        return [r for r in self.received if r.ok]

    def for_chat(self, chat_id: str) -> list[Received]:
        return [r for r in self.received if isinstance(r.json, dict) and r.chat_id == chat_id]
