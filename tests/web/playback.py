"""What the fixture playbacks share: each provider's module plays its fixtures
once, through one ``batcher serve`` on a private redis-server, and its tests
read what was recorded."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from service.store.embedded import RedisServer
from service.tooling.sink import Received
from tests.conftest import DEBUG_ARGS, DockerImage, _new_server

T = TypeVar("T")


def play_once(
    redis_binary: Path | DockerImage,
    tmp: Path,
    play: Callable[[RedisServer, Path], Coroutine[Any, Any, T]],
) -> T:
    """``play(server, tmp)`` against a fresh redis-server, stopped afterwards."""
    server = _new_server(redis_binary, tmp / "redis", extra_args=DEBUG_ARGS)
    server.start()
    try:
        return asyncio.run(play(server, tmp))
    finally:
        server.stop(kill=True)


async def settled(wait: Awaitable[object]) -> bool:
    """Await a bounded wait; False on its timeout (the tests then say what is missing)."""
    try:
        await wait
    except TimeoutError:
        return False
    return True


def metric(text: str, name: str, **labels: str) -> float | None:
    """The sum of the samples of ``name`` whose labels include ``labels`` (None: no sample)."""
    found: float | None = None
    for line in text.splitlines():
        m = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        got = dict(re.findall(r'(\w+)="([^"]*)"', (m and m[2]) or ""))
        if m and m[1] == name and labels.items() <= got.items():
            found = (found or 0.0) + float(m[3])
    return found


def delivered(recs: list[Received]) -> list[tuple[str, dict[str, Any]]]:
    """(chat, message) of every message the forwards ``recs`` carried."""
    return [(rec.chat_id, m) for rec in recs for m in rec.batch["messages"]]
