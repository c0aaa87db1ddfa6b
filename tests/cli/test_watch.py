"""``batcher watch``: a snapshot of real state, rendered; the command's exits."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import os
import signal
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis
from rich.console import Console

from service.cli.setup import NoRedis
from service.cli.watch import add_watch_parser, render, run_watch, short, snapshot, watch
from service.engine.batcher import Batcher
from service.models import Batch, Message
from service.settings import Settings
from service.store.connections import create_redis
from service.store.keyspace import Keyspace
from tests.helpers import running_engine

LONG_CHAT = "wa:105512345678901:447700900123456789"


def recording_console(**kwargs: object) -> Console:
    return Console(record=True, width=120, file=io.StringIO(), **kwargs)  # type: ignore[arg-type]


def watch_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_watch_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["watch", *argv])


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def read_only_url(url: str, user: str) -> str:
    parts = urlsplit(url)
    return f"redis://{user}:pw@{parts.hostname}:{parts.port}/0"


async def test_snapshot_and_render_show_open_inflight_and_dead(
    redis_url: str, redis_client: Redis
) -> None:
    release = asyncio.Event()
    calls: dict[str, int] = {}

    async def handler(batch: Batch) -> None:
        calls[batch.chat_id] = calls.get(batch.chat_id, 0) + 1
        if batch.chat_id == "doomed":
            raise RuntimeError("no such chat")
        if batch.chat_id == "stuck":
            if calls["stuck"] == 1:
                raise RuntimeError("bot is down")
            await release.wait()  # attempt 2 stays in flight

    async with running_engine(redis_url, handler, max_attempts=2) as engine:
        meta = engine.keys.chat("stuck").meta
        dead = engine.keys.chat("doomed").bucket.dead
        await engine.add("stuck", "help")
        await engine.add("doomed", "hello?")
        await until(lambda: _is(redis_client.hget(meta, "attempt"), b"2"))
        await until(lambda: _is(redis_client.zcard(dead), 1))
        # A message while "stuck" is in flight: its batch closes, then waits for the ack.
        added = await engine.add("stuck", "anyone?")
        due = engine.keys.chat("stuck").bucket.due
        # Its idle timer (150 ms) expires; the claim parks it at the lease deadline (3 s).
        await until(lambda: _above(redis_client.zscore(due, "stuck"), added.deadline_ms + 1000))

        # Open batches that stay open: appended with a long idle time.
        slow = Settings(redis_url=redis_url, idle_ms=60_000, max_wait_ms=120_000)
        batcher = Batcher(create_redis(redis_url), slow)
        for text in ("hi", "I need", "to change my order"):
            await batcher.add(LONG_CHAT, Message(id=f"long/{text}", text=text))
        await asyncio.sleep(0.01)
        await batcher.add_many([(f"filler-{i:02d}", "hello") for i in range(23)])
        await batcher.redis.aclose()

        # Read through an ACL user that may not write anything.
        await redis_client.execute_command(
            "ACL", "SETUSER", "watcher", "on", ">pw", "~*", "+@read", "+time", "+info"
        )
        reader = create_redis(read_only_url(redis_url, "watcher"))
        try:
            snap = await snapshot(reader, Keyspace(), slow)
            again = await snapshot(reader, Keyspace(), slow, snap)
        finally:
            await reader.aclose()
            await redis_client.execute_command("ACL", "DELUSER", "watcher")
        release.set()

    assert (snap.open_total, snap.inflight_total, snap.dead_total) == (25, 1, 1)
    assert len(snap.open) == 20
    first = snap.open[0]  # soonest flush: parked at the lease deadline (3 s)
    assert first.chat_id == "stuck" and first.behind and first.messages == 1
    long = next(r for r in snap.open if r.chat_id == LONG_CHAT)
    assert long.messages == 3 and not long.behind and long.opened_ms is not None
    assert [r.deadline_ms for r in snap.open] == sorted(r.deadline_ms for r in snap.open)
    (flight,) = snap.inflight
    assert flight.chat_id == "stuck" and flight.attempt == 2 and flight.seq == 1
    assert flight.error == "RuntimeError: bot is down"
    assert flight.deadline_ms is not None and flight.closed_ms >= flight.deadline_ms
    assert again.expiries_per_s is not None and again.expiries_per_s >= 0

    console = recording_console()
    console.print(render(snap))
    text = console.export_text()
    assert "open batches: 25" in text and "in flight: 1" in text
    assert "… and 5 more" in text
    assert short(LONG_CHAT) in text and LONG_CHAT not in text
    assert len(short(LONG_CHAT)) == 24 and "…" in short(LONG_CHAT)
    long_line = next(line for line in text.splitlines() if short(LONG_CHAT) in line)
    assert " 3 " in long_line and "█" in long_line and "s" in long_line
    stuck_open = next(line for line in text.splitlines() if "after the batch in flight" in line)
    assert "stuck" in stuck_open
    stuck_flight = next(line for line in text.splitlines() if "bot is down" in line)
    assert "stuck" in stuck_flight and " 2 " in stuck_flight
    assert flight.batch_id[:4] in stuck_flight
    assert "filler-00" in text
    assert "open 25   in flight 1   dead letters 1" in text
    assert "late by  median" in text
    # The dead-letter pane: the dead batch, its chat and its error.
    (dead,) = snap.dead
    assert dead.chat_id == "doomed" and dead.attempts == 2 and "no such chat" in dead.error
    dead_line = next(line for line in text.splitlines() if dead.batch_id in line)
    assert "doomed" in dead_line and "no such chat" in dead_line


async def _is(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


async def _above(value: Awaitable[float | None], floor: float) -> bool:
    score = await value
    return score is not None and score > floor


async def test_closing_rate_counts_timer_expiries_over_recent_samples(
    redis_url: str, redis_client: Redis
) -> None:
    settings = Settings(redis_url=redis_url)
    first = await snapshot(redis_client, Keyspace(), settings)
    assert first.expiries_per_s is None and len(first.samples) == 1
    batcher = Batcher(redis_client, Settings(redis_url=redis_url, idle_ms=20))
    await batcher.add_many([(f"chat-{i}", "hi") for i in range(3)])
    timers = [batcher.keys.chat(f"chat-{i}").timer for i in range(3)]
    await until(lambda: _is(redis_client.exists(*timers), 0))
    second = await snapshot(redis_client, Keyspace(), settings, first)
    assert second.samples[-1][1] - first.samples[0][1] == 3  # three timers expired
    assert second.expiries_per_s is not None and second.expiries_per_s > 0

    now, count = second.samples[-1]
    stale = ((now - 60_000, 0), (now - 2_000, count - 10), (now - 1_000, count + 5))
    previous = dataclasses.replace(second, samples=stale)
    third = await snapshot(redis_client, Keyspace(), settings, previous)
    # Older than the window: dropped. Above the current count (a restart since): dropped.
    assert third.samples[:1] == ((now - 2_000, count - 10),) and len(third.samples) == 2
    assert third.expiries_per_s == pytest.approx(10_000 / (third.now_ms - now + 2_000))


def test_run_watch_once_prints_a_frame_and_exits_0(redis_url: str) -> None:
    console = recording_console()
    code = run_watch(watch_args("--once"), Settings(redis_url=redis_url), console)
    assert code == 0
    text = console.export_text()
    assert "open batches: 0" in text and "in flight: 0" in text and "(none)" in text
    assert "dead letters 0" in text


def test_run_watch_needs_a_redis_url_and_a_reachable_one(redis_url: str) -> None:
    with pytest.raises(NoRedis):  # main() prints its one line and exits 2
        run_watch(watch_args("--once"), Settings(redis_url=None), recording_console())
    port = urlsplit(redis_url).port
    settings = Settings(redis_url=f"redis://127.0.0.1:{port}/0", key_prefix="other")
    assert run_watch(watch_args("--once"), settings, recording_console()) == 0
    console = recording_console()
    code = run_watch(watch_args("--once"), Settings(redis_url="redis://127.0.0.1:1/0"), console)
    assert code == 2 and "cannot read Redis" in console.export_text()


async def test_live_view_redraws_then_exits_0_on_sigint_with_the_cursor_back(
    redis_url: str,
) -> None:
    console = recording_console(force_terminal=True)
    settings = Settings(redis_url=redis_url)
    task = asyncio.create_task(watch(redis_url, settings, console, interval_s=0.05))
    await asyncio.sleep(0.5)
    os.kill(os.getpid(), signal.SIGINT)
    assert await asyncio.wait_for(task, 5) == 0
    raw = console.file.getvalue()  # type: ignore[attr-defined]
    assert raw.count("open batches: 0") >= 3  # frames, each drawn once
    assert "\x1b[?25l" in raw and raw.rstrip().endswith("\x1b[?25h")  # cursor hidden, restored
