"""``batcher dead``: list, show, replay or drop dead-lettered batches.

The operations are the dead-letter store's (``service.store.deadletters``);
this module holds the command's parser and its rendering. Text from outside
(chat ids, messages, errors) is never parsed as markup and its control
characters are made visible.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table

from service.cli.console import clean, duration
from service.cli.setup import add_redis_url, on_redis, with_settings
from service.models import Message
from service.settings import Settings
from service.store.deadletters import (
    DeadBatch,
    count_dead,
    drop_all,
    drop_dead,
    list_dead,
    replay_all,
    replay_dead,
    server_time_ms,
    show_dead,
)
from service.store.keyspace import Keyspace


def add_dead_parser(subparsers: argparse._SubParsersAction[Any]) -> argparse.ArgumentParser:
    dead: argparse.ArgumentParser = subparsers.add_parser(
        "dead", help="inspect, replay or drop dead-lettered batches"
    )
    cmds = dead.add_subparsers(dest="dead_command", required=True)
    ls = cmds.add_parser("list", help="the most recent dead batches, newest first")
    ls.add_argument("--limit", type=int, default=100)
    show = cmds.add_parser("show", help="one dead batch: its error and messages")
    show.add_argument("batch_id")
    for name, help_text in (
        ("replay", "put a dead batch back into delivery (once; a new batch id)"),
        ("drop", "delete a dead batch for good"),
    ):
        cmd = cmds.add_parser(name, help=help_text)
        which = cmd.add_mutually_exclusive_group(required=True)
        which.add_argument("batch_id", nargs="?")
        which.add_argument("--all", action="store_true", help="every dead batch")
        if name == "drop":
            cmd.add_argument("--yes", action="store_true", help="confirm dropping --all")
    for sub in cmds.choices.values():
        add_redis_url(sub)
    return dead


def run_dead(args: argparse.Namespace, settings: Settings, console: Console | None = None) -> int:
    """``batcher dead ...``: 0 done, 1 no such dead batch, 2 refused or no Redis."""
    out = console or Console()
    keyspace = Keyspace.of(settings)
    return on_redis(settings, "dead", lambda redis: _command(redis, keyspace, args, out), out)


async def _command(redis: Redis, keyspace: Keyspace, args: Any, console: Console) -> int:
    cmd, out = args.dead_command, console.print
    if cmd == "list":
        batches = await list_dead(redis, keyspace, args.limit)
        total = await count_dead(redis, keyspace)
        render_list(console, batches, total, await server_time_ms(redis))
    elif cmd == "replay" and args.all:
        got = await replay_all(redis, keyspace)
        out(f"replayed {got.batches} dead batches ({got.messages} messages)")
    elif cmd == "drop" and args.all and not args.yes:
        out(f"refusing to drop all {await count_dead(redis, keyspace)} dead batches without --yes")
        return 2
    elif cmd == "drop" and args.all:
        out(f"dropped {await drop_all(redis, keyspace)} dead batches")
    else:
        batch_id = args.batch_id
        if cmd == "show" and (shown := await show_dead(redis, keyspace, batch_id)):
            render_show(console, *shown, await server_time_ms(redis))
        elif cmd == "replay" and (n := await replay_dead(redis, keyspace, batch_id)):
            out(clean(f"replayed {n} messages of {batch_id} (delivered under a new batch id)"))
        elif cmd == "drop" and await drop_dead(redis, keyspace, batch_id):
            out(clean(f"dropped dead batch {batch_id}"))
        else:
            out(clean(f"no dead batch {batch_id}"))
            return 1
    return 0


def render_list(console: Console, batches: Sequence[DeadBatch], total: int, now_ms: int) -> None:
    if not batches:
        console.print("no dead batches")
        return
    table = Table(title="dead batches", caption=f"{len(batches)} of {total}, newest first")
    for col in ("batch id", "chat", "messages", "attempts", "age", "error"):
        table.add_column(col, no_wrap=col in ("batch id", "age"))
    for b in batches:
        error = b.error.splitlines()[0] if b.error else ""
        age = duration(now_ms - b.dead_at * 1000)
        cells = (b.batch_id, b.chat_id, b.size, b.attempts, age, error)
        table.add_row(*(clean(c) for c in cells))
    console.print(table)


def render_show(console: Console, b: DeadBatch, messages: Sequence[Message], now_ms: int) -> None:
    age = duration(now_ms - b.dead_at * 1000)
    head = (
        f"dead batch {b.batch_id}  chat {b.chat_id}  seq {b.seq}  reason {b.reason}\n"
        f"opened {_when(b.opened_at)}  closed {_when(b.closed_at)}  "
        f"dead {_when(b.dead_at)} ({age} ago) after {b.attempts} attempts\nerror: {b.error}"
    )
    console.print(clean(head, newlines=True))
    table = Table(title=f"{len(messages)} messages")
    for col in ("#", "received", "id", "type", "text / data"):
        table.add_column(col, no_wrap=col in ("#", "received"))
    for i, m in enumerate(messages, 1):
        body = m.text if m.text is not None else json.dumps(m.data, ensure_ascii=False)
        received = _when(m.received_at) if m.received_at is not None else ""
        table.add_row(str(i), received, clean(m.id), clean(m.type), clean(body, newlines=True))
    console.print(table)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def register(subparsers: Any) -> None:
    add_dead_parser(subparsers).set_defaults(run=with_settings(run_dead, redis=True))
