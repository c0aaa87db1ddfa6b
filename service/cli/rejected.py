"""``batcher rejected``: list, show or drop the messages no chat could be named for.

The operations are the rejected-messages store's (``service.store.rejected``);
this module holds the command's parser and its rendering. What a provider
sent is never parsed as markup (``clean``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table

from service.cli.console import clean, duration
from service.cli.setup import add_redis_url, on_redis, with_settings
from service.settings import Settings
from service.store.deadletters import server_time_ms
from service.store.keyspace import Keyspace
from service.store.rejected import RejectedEntry, RejectedStore


def add_rejected_parser(subparsers: argparse._SubParsersAction[Any]) -> argparse.ArgumentParser:
    cmd: argparse.ArgumentParser = subparsers.add_parser(
        "rejected", help="inspect or drop messages no chat could be named for"
    )
    cmds = cmd.add_subparsers(dest="rejected_command", required=True)
    ls = cmds.add_parser("list", help="the most recent rejected messages, newest first")
    ls.add_argument("--limit", type=int, default=100, help="at most this many (100)")
    show = cmds.add_parser("show", help="one rejected message: its reason and raw JSON")
    show.add_argument("entry_id")
    drop = cmds.add_parser("drop", help="delete a rejected message for good")
    which = drop.add_mutually_exclusive_group(required=True)
    which.add_argument("entry_id", nargs="?")
    which.add_argument("--all", action="store_true", help="every rejected message")
    drop.add_argument("--yes", action="store_true", help="confirm dropping --all")
    for sub in cmds.choices.values():
        add_redis_url(sub)
    return cmd


def run_rejected(
    args: argparse.Namespace, settings: Settings, console: Console | None = None
) -> int:
    """``batcher rejected ...``: 0 done, 1 no such entry, 2 refused or no Redis."""
    out = console or Console()
    keyspace = Keyspace.of(settings)

    async def work(redis: Redis) -> int:
        return await _command(RejectedStore(redis, keyspace), args, out)

    return on_redis(settings, "rejected", work, out)


async def _command(store: RejectedStore, args: Any, console: Console) -> int:
    cmd, out = args.rejected_command, console.print
    if cmd == "list":
        entries = await store.list(args.limit)
        render_list(console, entries, await store.count(), await server_time_ms(store.redis))
    elif cmd == "drop" and args.all and not args.yes:
        out(f"refusing to drop all {await store.count()} rejected messages without --yes")
        return 2
    elif cmd == "drop" and args.all:
        out(f"dropped {await store.drop_all()} rejected messages")
    elif cmd == "show" and (entry := await store.get(args.entry_id)):
        render_show(console, entry)
    elif cmd == "drop" and await store.drop(args.entry_id):
        out(clean(f"dropped rejected message {args.entry_id}"))
    else:
        out(clean(f"no rejected message {args.entry_id}"))
        return 1
    return 0


def render_list(
    console: Console, entries: Sequence[RejectedEntry], total: int, now_ms: int
) -> None:
    if not entries:
        console.print("no rejected messages")
        return
    table = Table(title="rejected messages", caption=f"{len(entries)} of {total}, newest first")
    for col in ("id", "source", "age", "reason", "where"):
        table.add_column(col, no_wrap=col in ("id", "age"))
    for e in entries:
        cells = (e.id, e.source, duration(now_ms - e.at * 1000), e.reason, e.path)
        table.add_row(*(clean(c) for c in cells))
    console.print(table)


def render_show(console: Console, e: RejectedEntry) -> None:
    console.print(clean(f"rejected message {e.id}  from {e.source}  at {e.path}"))
    console.print(clean(f"reason: {e.reason}"))
    console.print(clean(json.dumps(e.raw, ensure_ascii=False, indent=2), newlines=True))


def register(subparsers: Any) -> None:
    add_rejected_parser(subparsers).set_defaults(run=with_settings(run_rejected, redis=True))
