"""The bot side of ``BATCHER_FORWARD_URL`` for the chaos harness.

A bare ASGI app under uvicorn, served in the harness's own event loop. It
records every POST it gets (batch id, chat, attempt, message ids, when it
arrived, when and how it was answered, whether the signature was valid) and
answers as the fault injector says: ``ok`` (200), ``fail`` (500 at once) or
``hang`` (no answer until the hang ends, then 503: the bot did not take it).
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
from typing import Any, Literal

import uvicorn

Mode = Literal["ok", "fail", "hang"]
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass(slots=True)
class Post:
    """One forward POST as the sink saw it (times: ``time.monotonic()``)."""

    batch_id: str
    chat_id: str
    attempt: int
    ids: list[str]
    arrived: float
    signature_ok: bool
    answered: float | None = None
    status: int | None = None
    hung: bool = False

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class _Server(uvicorn.Server):
    """uvicorn inside someone else's event loop: leave the signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ChaosSink:
    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.mode: Mode = "ok"
        self.posts: list[Post] = []
        self.bad_requests = 0  # not a batch at all (must stay 0)
        self.port = 0
        self._released = asyncio.Event()
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def set_mode(self, mode: Mode) -> None:
        if self.mode == "hang" and mode != "hang":
            self._released.set()  # hanging requests answer 503 now
        if mode == "hang":
            self._released = asyncio.Event()
        self.mode = mode

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = int(sock.getsockname()[1])
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
        deadline = time.monotonic() + 10
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("sink exited during start-up")
            if time.monotonic() > deadline:
                raise TimeoutError("sink did not start")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._released.set()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 5)
        self._server = self._task = None

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        arrived = time.monotonic()
        post = self._record(scope, body, arrived)
        if post is None:
            await _answer(send, 400)
            return
        status = 500 if self.mode == "fail" else 200
        if self.mode == "hang":
            post.hung = True
            await self._released.wait()
            status = 503
        post.answered, post.status = time.monotonic(), status
        await _answer(send, status)

    def _record(self, scope: Scope, body: bytes, arrived: float) -> Post | None:
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        want = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        try:
            doc = json.loads(body)
            post = Post(
                batch_id=str(doc["batch_id"]),
                chat_id=str(doc["chat_id"]),
                attempt=int(doc["attempt"]),
                ids=[str(m["id"]) for m in doc["messages"]],
                arrived=arrived,
                signature_ok=hmac.compare_digest(headers.get("x-batcher-signature", ""), want),
            )
        except (ValueError, KeyError, TypeError):
            self.bad_requests += 1
            return None
        self.posts.append(post)
        return post


async def _answer(send: Send, status: int) -> None:
    body = b'{"status": %d}' % status
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})
