"""``batcher show|flush|hold|release|drop``: the commands over a real Redis,
their output and their exit statuses (0 done, 1 nothing to act on)."""

from __future__ import annotations

import argparse
import io
import json

from redis.asyncio import Redis
from rich.console import Console

from service import Message
from service.cli.chats import run_action, run_show
from service.store.chats import Chats
from tests.helpers import Collector, fast_settings, running_engine


def out() -> Console:
    return Console(file=io.StringIO(), width=200, color_system=None, record=True)


def args(command: str, chat: str, **extra: object) -> argparse.Namespace:
    return argparse.Namespace(command=command, chat_id=chat, json=False, **extra)


async def test_commands_act_on_one_chat(redis_url: str, redis_client: Redis) -> None:
    overrides = {"idle_ms": 5_000, "max_wait_ms": 20_000}
    settings = fast_settings(redis_url, **overrides)
    collector = Collector()
    async with running_engine(redis_url, collector, **overrides) as engine:
        assert await asyncio_run_action("flush", "nobody", settings) == (
            1,
            "nobody has no open batch",
        )
        await engine.add("c1", Message(id="m1", text="hello"))
        await engine.add("c1", Message(id="m2", text="world"))

        console = out()
        assert await asyncio_to_thread(run_show, args("show", "c1"), settings, console) == 0
        text = console.export_text()
        assert "open batch: 2 messages" in text and "(idle)" in text and "world" in text

        code, said = await asyncio_run_action("hold", "c1", settings)
        assert code == 0 and said.startswith("held c1: its batch closes in")
        code, said = await asyncio_run_action("release", "c1", settings)
        assert code == 0 and said.startswith("released c1")
        assert (await asyncio_run_action("release", "c1", settings))[0] == 1
        code, said = await asyncio_run_action("flush", "c1", settings)
        assert (code, said) == (0, "flushed c1: its batch of 2 messages closes now")
        await collector.wait_messages(2, 5.0)

        await engine.add("c1", Message(id="m3", text="spam"))
        code, said = await asyncio_run_action("drop", "c1", settings)
        assert code == 0 and said.startswith("dropped 1 message of c1 into dead batch")
        state = await Chats(redis_client, settings).read("c1")
        assert state.open is None and len(state.dead) == 1 and state.seq == 1

        console = out()
        as_json = argparse.Namespace(command="show", chat_id="c1", json=True)
        assert await asyncio_to_thread(run_show, as_json, settings, console) == 0
        doc = json.loads(console.export_text())
        assert doc["dead"][0]["error"] == "dropped by an operator" and doc["open"] is None


async def asyncio_to_thread(fn: object, *a: object) -> int:
    """The commands run their own event loop: call them off this one."""
    import asyncio

    return await asyncio.to_thread(fn, *a)  # type: ignore[arg-type]


async def asyncio_run_action(command: str, chat: str, settings: object) -> tuple[int, str]:
    console = out()
    code = await asyncio_to_thread(run_action, args(command, chat), settings, console)
    return code, " ".join(console.export_text().split())
