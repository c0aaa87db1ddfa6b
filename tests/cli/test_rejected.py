"""``batcher rejected``: list, show and drop kept messages; ``batcher watch`` counts them."""

from __future__ import annotations

import argparse
import asyncio
import io

from redis.asyncio import Redis
from rich.console import Console

from service.cli.rejected import add_rejected_parser, run_rejected
from service.cli.watch import render, snapshot
from service.settings import Settings
from service.store.keyspace import Keyspace
from service.store.provider_errors import ProviderErrors
from service.store.rejected import RejectedStore, entry_id
from service.store.runner import run_scripts

KS = Keyspace()
RAW = {"id": "wamid.R1", "type": "text", "text": {"body": "[bold]not markup[/] \x1b[31m"}}


def args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_rejected_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["rejected", *argv])


async def run(url: str, *argv: str) -> tuple[int, str]:
    """The command as the CLI runs it (its own event loop, in a thread)."""
    console = Console(record=True, width=200, file=io.StringIO())
    code = await asyncio.to_thread(run_rejected, args(*argv), Settings(redis_url=url), console)
    return code, console.export_text()


async def keep(redis: Redis) -> str:
    store = RejectedStore(redis, KS)
    await run_scripts(redis, [store.keep_call("whatsapp", "no sender", "messages[0]", RAW)])
    return entry_id("whatsapp", RAW)


async def test_list_show_drop(redis_client: Redis, redis_url: str) -> None:
    assert await run(redis_url, "list") == (0, "no rejected messages\n")
    entry = await keep(redis_client)
    code, out = await run(redis_url, "list")
    assert code == 0 and entry in out and "no sender" in out and "1 of 1" in out
    code, out = await run(redis_url, "show", entry)
    assert code == 0 and '"wamid.R1"' in out and "[bold]not markup[/]" in out
    assert "\x1b" not in out  # the escape is shown, never sent to the terminal
    assert (await run(redis_url, "show", "nope"))[0] == 1
    assert (await run(redis_url, "drop", "--all"))[0] == 2  # needs --yes
    assert await run(redis_url, "drop", entry) == (0, f"dropped rejected message {entry}\n")
    assert (await run(redis_url, "drop", entry))[0] == 1
    await keep(redis_client)
    assert await run(redis_url, "drop", "--all", "--yes") == (0, "dropped 1 rejected messages\n")


async def test_watch_counts_rejected_and_provider_errors(
    redis_client: Redis, redis_url: str
) -> None:
    await keep(redis_client)
    errors = ProviderErrors(redis_client, KS)
    await run_scripts(
        redis_client, [errors.report_call("whatsapp", 130429, "Rate limit hit", None, None)]
    )
    snap = await snapshot(redis_client, KS, Settings(redis_url=redis_url))
    assert snap.rejected_total == 1 and snap.provider_errors == (("whatsapp:130429", 1),)
    console = Console(record=True, width=160, file=io.StringIO())
    console.print(render(snap))
    out = console.export_text()
    assert "rejected 1" in out and "whatsapp:130429 x1" in out and "Rate limit hit" in out
