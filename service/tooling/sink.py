"""A local HTTP forward sink: the bot side of ``BATCHER_FORWARD_URL``.

A bare ASGI app under uvicorn, served in the caller's own event loop (the
end-to-end tests, the chaos harness). It records every POST (arrival order,
path, headers, raw body, parsed JSON, whether ``X-Batcher-Signature`` is valid
for the configured secret, when it arrived and when and how it was answered)
and answers:

- a body that is not a batch: 400 at once (counted in ``bad_requests``);
- else the reply a ``respond_with`` function chooses, or the next planned one;
- else by the current mode: ``ok`` (200), ``fail`` (500 at once) or ``hang``
  (no answer until the hang is released by a mode change or the sink stops,
  then 503: the bot did not take it).

    async with Sink(secret=b"s") as sink:           # sink.url -> BATCHER_FORWARD_URL
        sink.plan(500, 500)                         # the next two POSTs fail, then by mode
        await sink.wait_for(lambda: len(sink.acked()) == 1, timeout_s=5)
        sink.set_mode("hang")                       # from now on nothing is answered ...
        sink.set_mode("ok")                         # ... and the hanging POSTs get 503
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
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from functools import cached_property
from types import TracebackType
from typing import Any, Literal

import uvicorn

SIGNATURE_HEADER = "x-batcher-signature"

Mode = Literal["ok", "fail", "hang"]
_Scope = MutableMapping[str, Any]
_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]


@dataclass(frozen=True)
class Reply:
    """How the sink answers one POST."""

    status: int = 200
    delay_s: float = 0.0  # answer this much later (cut short when the sink stops)
    hang: bool = False  # no answer until a mode change or the sink stops, then 503


OK = Reply(200)
FAIL = Reply(500)
HANG = Reply(hang=True)
_BY_MODE: dict[Mode, Reply] = {"ok": OK, "fail": FAIL, "hang": HANG}


@dataclass(eq=False)
class Received:
    """One POST the sink got (times: ``time.monotonic()``)."""

    n: int  # arrival order, from 0
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    json: Any  # the parsed body, None when it is not JSON
    signature_valid: bool | None  # None: the sink has no secret to check with
    arrived: float
    status: int | None = None  # what the sink answered; None while it has not (yet)
    answered: float | None = None
    hung: bool = False  # held without an answer (a hang)

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @cached_property
    def is_batch(self) -> bool:
        """The body has the shape of a forwarded batch."""
        if not isinstance(self.json, dict):
            return False
        try:
            _ = self.batch_id, self.chat_id, self.attempt, self.message_ids
        except (KeyError, TypeError, ValueError):
            return False
        return True

    @property
    def batch(self) -> dict[str, Any]:
        assert isinstance(self.json, dict), self.body[:200]
        return self.json

    @cached_property
    def batch_id(self) -> str:
        return str(self.batch["batch_id"])

    @cached_property
    def chat_id(self) -> str:
        return str(self.batch["chat_id"])

    @cached_property
    def attempt(self) -> int:
        return int(self.batch["attempt"])

    @cached_property
    def message_ids(self) -> list[str]:
        return [str(m["id"]) for m in self.batch["messages"]]

    @cached_property
    def texts(self) -> list[str | None]:
        return [m.get("text") for m in self.batch["messages"]]


def expected_signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class _Server(uvicorn.Server):
    """uvicorn in someone else's event loop: leave the process's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Sink:
    def __init__(
        self,
        secret: bytes | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str = "/hook",
    ) -> None:
        self.secret = secret
        self.host = host
        self.port = port
        self.path = path
        self.received: list[Received] = []  # every POST, in arrival order
        self.bad_requests = 0  # POSTs whose body is not a batch (answered 400)
        self._mode: Mode = "ok"
        self._plan: list[Reply] = []
        self._responder: Callable[[Received], Reply | None] | None = None
        self._changed = asyncio.Condition()
        self._stopped = asyncio.Event()  # set when the sink stops: delays and hangs end
        self._unhang = asyncio.Event()  # set when a hang ends (mode change or stop)
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    # --- what to answer ----------------------------------------------------------

    @property
    def mode(self) -> Mode:
        return self._mode

    def set_mode(self, mode: Mode) -> None:
        """Answer by ``mode`` from now on; a change releases every hanging POST (503)."""
        if mode != self._mode:
            self._unhang.set()
            self._unhang = asyncio.Event()
        self._mode = mode

    def plan(self, *replies: Reply | int) -> None:
        """Answer the next batches with these (statuses or Replies), then by the mode."""
        self._plan.extend(r if isinstance(r, Reply) else Reply(r) for r in replies)

    def respond_with(self, responder: Callable[[Received], Reply | None] | None) -> None:
        """A function choosing the reply per batch (None: fall back to plan, then mode)."""
        self._responder = responder

    def _choose(self, rec: Received) -> Reply:
        if self._responder is not None and (chosen := self._responder(rec)) is not None:
            return chosen
        if self._plan:
            return self._plan.pop(0)
        return _BY_MODE[self._mode]

    # --- the app -----------------------------------------------------------------

    async def _app(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] != "POST":
            await _answer(send, 405)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        arrived = time.monotonic()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        valid: bool | None = None
        if self.secret is not None:
            given = headers.get(SIGNATURE_HEADER, "")
            valid = hmac.compare_digest(given, expected_signature(self.secret, body))
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        stopped, unhang = self._stopped, self._unhang
        async with self._changed:
            rec = Received(len(self.received), scope["path"], headers, body, doc, valid, arrived)
            if rec.is_batch:
                reply = self._choose(rec)
            else:
                self.bad_requests += 1
                reply = Reply(400)
            rec.hung = reply.hang
            self.received.append(rec)
            self._changed.notify_all()
        status = reply.status
        if reply.hang:
            await unhang.wait()
            status = 503
        elif reply.delay_s:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopped.wait(), reply.delay_s)
        async with self._changed:
            rec.status, rec.answered = status, time.monotonic()
            self._changed.notify_all()
        await _answer(send, status)

    # --- lifecycle ---------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self.port, "start the sink first"
        return f"http://{self.host}:{self.port}{self.path}"

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self, timeout_s: float = 10.0) -> None:
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
        self.port = int(sock.getsockname()[1])
        self._stopped, self._unhang = asyncio.Event(), asyncio.Event()
        config = uvicorn.Config(
            self._app,
            log_config=None,
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=1,
            backlog=2048,
            interface="asgi3",
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
        """Stop serving: hanging and slow POSTs are answered, new connections refused."""
        server, task = self._server, self._task
        self._server, self._task = None, None
        self._stopped.set()
        self._unhang.set()
        if server is None or task is None:
            return
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

    def batches(self) -> list[Received]:
        """The POSTs that carried a batch (every one, unless ``bad_requests``)."""
        return [r for r in self.received if r.is_batch]

    def acked(self) -> list[Received]:
        """The batches answered with a 2xx (the ones the bot took)."""
        return [r for r in self.received if r.ok and r.is_batch]

    def for_chat(self, chat_id: str) -> list[Received]:
        return [r for r in self.received if r.is_batch and r.chat_id == chat_id]


async def _answer(send: _Send, status: int) -> None:
    start = {"type": "http.response.start", "status": status}
    start["headers"] = [(b"content-type", b"application/json")]
    await send(start)
    await send({"type": "http.response.body", "body": b'{"status": %d}' % status})
