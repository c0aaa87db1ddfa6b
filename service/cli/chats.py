"""``batcher show|flush|hold|release|drop <chat>``: one chat, seen and acted on.

Thin over ``service.store.chats``; the same operations answer the admin
endpoints (``/v1/chats/{chat_id}``). Exit status 0 done, 1 nothing to act on
(no open batch, not held), 2 no Redis or Redis failed.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from service.cli.console import clean, duration, plural
from service.cli.setup import (
    EXIT_FOUND,
    EXIT_OK,
    add_redis_url,
    on_redis,
    with_settings,
)
from service.settings import Settings
from service.store.chats import Chats, ChatState

ACTIONS = {
    "flush": "close the chat's open batch now and deliver it (reason manual)",
    "hold": "pause the chat's idle timer until release (or the batch's max wait)",
    "release": "end a hold: the idle timer runs again from now",
    "drop": "move the chat's open batch to the dead letters (replayable from there)",
}


def register(subparsers: Any) -> None:
    show = subparsers.add_parser("show", help="one chat: its open batch, in flight and dead")
    show.add_argument("chat_id")
    show.add_argument("--json", action="store_true", help="print the state as JSON")
    add_redis_url(show)
    show.set_defaults(run=with_settings(run_show, redis=True))
    for name, help_text in ACTIONS.items():
        p = subparsers.add_parser(name, help=help_text)
        p.add_argument("chat_id")
        add_redis_url(p)
        p.set_defaults(run=with_settings(run_action, redis=True))


def _with_chats(settings: Settings, command: str, work: Callable[[Chats], Awaitable[int]]) -> int:
    async def on(redis: Redis) -> int:
        return await work(Chats(redis, settings))

    return on_redis(settings, command, on, Console(stderr=True))


def run_show(args: argparse.Namespace, settings: Settings, console: Console | None = None) -> int:
    out = console or Console()

    async def show(chats: Chats) -> int:
        state = await chats.read(args.chat_id)
        if args.json:
            out.print_json(json.dumps(state.to_json()))
        else:
            out.print(render(state))
        return EXIT_OK

    return _with_chats(settings, "show", show)


def run_action(args: argparse.Namespace, settings: Settings, console: Console | None = None) -> int:
    out, chat = console or Console(), args.chat_id

    async def act(chats: Chats) -> int:
        now = (await chats.read(chat)).now_ms
        if args.command == "drop":
            dropped = await chats.drop(chat)
            if dropped is None:
                return _nothing(out, chat)
            batch_id, size = dropped
            what = plural(size, "message")
            out.print(clean(f"dropped {what} of {chat} into dead batch {batch_id} "
                            f"(`batcher dead replay {batch_id}` puts them back)"))  # fmt: skip
            return EXIT_OK
        if args.command == "flush":
            flushed = await chats.flush(chat)
            if flushed is None:
                return _nothing(out, chat)
            out.print(
                clean(f"flushed {chat}: its batch of {plural(flushed, 'message')} closes now")
            )
            return EXIT_OK
        deadline = await (chats.hold if args.command == "hold" else chats.release)(chat)
        if deadline is None:
            return _nothing(out, chat, held=args.command == "release")
        verb = "held" if args.command == "hold" else "released"
        out.print(clean(f"{verb} {chat}: its batch closes in {duration(deadline - now)}"))
        return EXIT_OK

    return _with_chats(settings, args.command, act)


def _nothing(out: Console, chat: str, *, held: bool = False) -> int:
    out.print(clean(f"{chat} is not held" if held else f"{chat} has no open batch"))
    return EXIT_FOUND


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M:%S.%f")[:-3] + "Z"


def render(state: ChatState) -> Group:
    now = state.now_ms
    parts: list[Any] = [Text.assemble(("chat ", "bold"), (state.chat_id, "cyan"),
                                      f"  {state.seq} batches so far")]  # fmt: skip
    if state.open is None:
        parts.append(Text("open batch: none", style="dim"))
    else:
        o = state.open
        left = "" if o.deadline_ms is None else f", closes in {duration(o.deadline_ms - now)}"
        parts.append(Text(f"open batch: {len(o.messages)} messages, opened "
                          f"{duration(now - o.opened_ms)} ago{left} ({o.why})"))  # fmt: skip
        table = Table(box=None, pad_edge=False)
        for col in ("#", "received", "id", "type", "text"):
            table.add_column(col, no_wrap=col != "text")
        for i, m in enumerate(o.messages, 1):
            received = _when(int(m.received_at * 1000)) if m.received_at else ""
            body = m.text if m.text is not None else f"<{m.type}>"
            table.add_row(str(i), received, clean(m.id), clean(m.type), clean(body))
        parts.append(table)
    if state.inflight is None:
        parts.append(Text("in flight: none", style="dim"))
    else:
        f = state.inflight
        lease = "" if f.lease_until_ms is None else f", lease {duration(f.lease_until_ms - now)}"
        if f.lease_until_ms is not None and f.lease_until_ms <= now:
            lease = ", lease ran out: being redelivered"
        ago = duration(now - f.closed_ms)
        line = (f"in flight: batch {f.batch_id} #{f.seq}, {f.size} messages, attempt "
                f"{f.attempt}, claimed {ago} ago ({f.reason}){lease}")  # fmt: skip
        parts.append(clean(line))
        if f.last_error:
            parts.append(Text.assemble(("  last error: ", "red"), clean(f.last_error)))
    if not state.dead:
        parts.append(Text("dead batches: none", style="dim"))
    else:
        parts.append(Text(f"dead batches: {len(state.dead)}", style="bold red"))
        for d in state.dead:
            error = d.error.splitlines()[0] if d.error else ""
            parts.append(clean(f"  {d.batch_id}  {d.size} messages, "
                               f"{duration(now - d.dead_at * 1000)} ago: {error}"))  # fmt: skip
    return Group(*parts)
