"""``batcher demo``: the seed scenario, in process, on a real server."""

from __future__ import annotations

import argparse
import io
import random

import pytest
from redis.asyncio import Redis
from rich.console import Console

from service.cli.demo import CONVERSATIONS, add_demo_parser, demo, plan, run_demo
from service.settings import Settings
from service.store.embedded import EmbeddedRedisError, find_server_binary

FAST = ("--chats", "4", "--rate", "0.05", "--idle-ms", "200")


def demo_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_demo_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["demo", *argv])


def recording_console() -> Console:
    return Console(record=True, width=120, file=io.StringIO())


async def test_every_chat_gets_one_batch_with_all_its_fragments_in_order(
    redis_url: str, redis_client: Redis
) -> None:
    args = demo_args(*FAST, "--seed", "11")
    console = recording_console()
    result = await demo(
        redis_url,
        Settings(redis_url=redis_url),
        chats=args.chats,
        idle_ms=args.idle_ms,
        rate=args.rate,
        seed=args.seed,
        console=console,
    )
    assert (result.lost, result.duplicated, result.ok) == (0, 0, True)
    assert len(result.talks) == 4 and len(result.sent) == sum(len(t.texts) for t in result.talks)
    by_chat = result.by_chat()
    assert set(by_chat) == {t.chat_id for t in result.talks}
    for talk in result.talks:
        (batch,) = by_chat[talk.chat_id]
        assert [m.text for m in batch.messages] == list(talk.texts)
        assert batch.reason == "idle" and batch.attempt == 1
    assert len(result.lag_ms) == 4 and result.elapsed_s < 10

    text = console.export_text()
    lines = text.splitlines()

    def cells(name: str) -> list[str]:
        return next(line for line in lines if f" {name} " in line).replace("│", " ").split()

    assert cells("lost") == ["lost", "0"] and cells("duplicated") == ["duplicated", "0"]
    assert cells("batches out") == ["batches", "out", "4"]
    assert cells("flush lag p50")[:3] == ["flush", "lag", "p50"] and cells("p99")[-1].endswith("ms")
    assert "✓ every message delivered exactly once" in text
    for talk in result.talks:
        chat_row = next(line for line in lines if f"│ {talk.chat_id} " in line)
        cells = [c.strip() for c in chat_row.split("│")[1:-1]]
        assert cells[:3] == [talk.chat_id, str(len(talk.texts)), "1"]
        assert cells[3] == " · ".join(talk.texts)
    # its own key prefix, deleted at the end: nothing left behind
    assert await redis_client.dbsize() == 0


def test_plan_is_a_dozen_varied_conversations_replayable_by_seed() -> None:
    talks = plan(12, 1.0, random.Random(5))
    assert sorted(t.texts for t in talks) == sorted(CONVERSATIONS)
    assert len({t.chat_id for t in talks}) == 12
    assert all(3 <= len(t.texts) <= 5 for t in talks)
    assert all(1.0 <= g <= 2.0 for t in talks for g in t.gaps_s)
    assert plan(12, 1.0, random.Random(5)) == talks
    faster = plan(12, 0.1, random.Random(5))
    assert [t.texts for t in faster] == [t.texts for t in talks]
    assert all(0.1 <= g <= 0.2 for t in faster for g in t.gaps_s)
    more = plan(30, 1.0, random.Random(5))
    assert len({t.chat_id for t in more}) == 30


def test_run_demo_exits_0_on_the_given_redis(redis_url: str) -> None:
    console = recording_console()
    assert run_demo(demo_args(*FAST), Settings(redis_url=redis_url), console) == 0
    assert "demo summary" in console.export_text()
    assert run_demo(demo_args("--chats", "0"), Settings(redis_url=redis_url), console) == 2


def test_run_demo_starts_its_own_server_with_no_configuration() -> None:
    try:
        find_server_binary()
    except EmbeddedRedisError as exc:
        pytest.skip(str(exc))
    console = recording_console()
    assert run_demo(demo_args(*FAST), Settings(redis_url=None), console) == 0
    text = console.export_text()
    assert "embedded" in text and "BATCHER_REDIS_URL=redis://127.0.0.1:" in text
    assert "✓ every message delivered exactly once" in text
