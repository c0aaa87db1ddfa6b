"""Dead-lettered batches, for operators: list, show, replay, drop.

After ``max_attempts`` failed deliveries the nack script moves a batch's
messages to ``dead:<id>``, its error and metadata to ``deadinfo:<id>``, and
indexes it in its bucket's ``dead`` zset.

**Replay** is one atomic script (``lua/replay.lua``): only while the batch is
in the ``dead`` index, it merges its messages into the chat's *open* batch in
arrival order (by the received time Redis stamped on each; dead messages are
older than any still open, so they come first, as the handler sees them),
makes the chat due now (its timer expires at once: the nudger/event path
claims it in milliseconds, else the sweeper or the next engine to start) and
deletes the dead-letter keys. Hence:

- exactly once: a message is in the dead store or in the open batch, never
  both; a second, retried or concurrent replay finds nothing and returns 0;
- never merged into a delivered batch: a batch in flight is acked first (one
  in flight per chat); batches delivered while this one was dead went before;
- a **new batch id**, ``seq`` and reason (``idle``; ``recovered`` via the
  sweeper; ``max_messages`` if the merged batch is full): bots dedupe on
  batch id, and the bot never acknowledged the dead one.

``--all`` touches only batches dead-lettered before it started (a handler
still failing cannot make it loop) and replays a chat's batches in one call,
oldest first. **Drop** deletes the three keys in one MULTI/EXEC.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .connections import create_redis
from .errors import BatcherError
from .keys import BucketKeys, Keyspace
from .models import Message, order_messages
from .scripts import Call, Replayed, Scripts, run_script, run_scripts
from .settings import Settings

PAGE = 1000  # ids per ZSCAN step and per drop transaction
BATCHES = 100  # dead batches per replay script call, and calls per round trip
T = TypeVar("T")
Shown = tuple["DeadBatch", list[Message]]


@dataclass(frozen=True, slots=True)
class DeadBatch:
    batch_id: str
    chat_id: str
    seq: int
    attempts: int
    error: str
    reason: str
    opened_at: float
    closed_at: float
    dead_at: float
    size: int
    bucket: int


async def find_bucket(redis: Redis, keyspace: Keyspace, batch_id: str) -> int | None:
    """The bucket whose dead index holds the batch (ids do not encode it)."""
    scores = await _each_dead_index(redis, keyspace, "ZSCORE", batch_id)
    return next((n for n, score in enumerate(scores) if score is not None), None)


async def count_dead(redis: Redis, keyspace: Keyspace) -> int:
    return sum(int(n) for n in await _each_dead_index(redis, keyspace, "ZCARD"))


async def list_dead(redis: Redis, keyspace: Keyspace, limit: int = 100) -> list[DeadBatch]:
    """The ``limit`` most recently dead-lettered batches, newest first."""
    pipe = redis.pipeline(transaction=False)
    for bk in keyspace.all_buckets():
        pipe.zrevrange(bk.dead, 0, max(limit, 1) - 1, withscores=True)
    rows = [(-score, _text(m), n) for n, got in enumerate(await pipe.execute()) for m, score in got]
    entries = sorted(rows)[: max(limit, 0)]
    pipe = redis.pipeline(transaction=False)
    for _, batch_id, n in entries:
        pipe.hgetall(keyspace.dead_info(n, batch_id))
        pipe.llen(keyspace.dead_batch(n, batch_id))
    raw = await pipe.execute()
    return [
        _dead_batch(n, batch_id, raw[2 * i], int(raw[2 * i + 1]), -score)
        for i, (score, batch_id, n) in enumerate(entries)
    ]


async def show_dead(redis: Redis, keyspace: Keyspace, batch_id: str) -> Shown | None:
    """A dead batch and its messages (in delivery order), or None."""
    n = await find_bucket(redis, keyspace, batch_id)
    if n is None:
        return None
    pipe = redis.pipeline(transaction=False)
    pipe.hgetall(keyspace.dead_info(n, batch_id))
    pipe.lrange(keyspace.dead_batch(n, batch_id), 0, -1)
    info, items = await pipe.execute()
    if not info:  # replayed or dropped meanwhile
        return None
    return _dead_batch(n, batch_id, info, len(items), 0), order_messages(items)


async def replay_dead(redis: Redis, keyspace: Keyspace, batch_id: str) -> int:
    """Replay one dead batch: the messages put back (0: not, or no longer, dead)."""
    n = await find_bucket(redis, keyspace, batch_id)
    chat = None if n is None else await redis.hget(keyspace.dead_info(n, batch_id), "chat")
    if n is None or chat is None:
        return 0
    call = _replay_call(keyspace, n, _text(chat), [batch_id])
    return Scripts.parse_replay(await run_script(redis, *call)).messages


async def replay_all(redis: Redis, keyspace: Keyspace) -> Replayed:
    """Replay every batch dead-lettered before this call (per chat, oldest first)."""
    cutoff = await _now_ms(redis)
    batches = messages = 0
    for bk in keyspace.all_buckets():
        ids = await _dead_ids(redis, bk, cutoff)
        pipe = redis.pipeline(transaction=False)
        for batch_id, _ in ids:
            pipe.hmget(keyspace.dead_info(bk.bucket, batch_id), ["chat", "seq"])
        by_chat: dict[str, list[tuple[int, int, str]]] = {}
        for (batch_id, dead_ms), (chat, seq) in zip(ids, await pipe.execute(), strict=True):
            if chat is not None:
                by_chat.setdefault(_text(chat), []).append((_int(seq), dead_ms, batch_id))
        calls = [
            _replay_call(keyspace, bk.bucket, chat_id, [batch_id for *_, batch_id in chunk])
            for chat_id, found in by_chat.items()
            for chunk in _chunks(sorted(found), BATCHES)
        ]
        for group in _chunks(calls, BATCHES):
            for raw in await run_scripts(redis, group):
                if isinstance(raw, Exception):
                    raise raw
                got = Scripts.parse_replay(raw)
                batches, messages = batches + got.batches, messages + got.messages
    return Replayed(batches=batches, messages=messages)


async def drop_dead(redis: Redis, keyspace: Keyspace, batch_id: str) -> bool:
    """Delete a dead batch for good; whether it was there."""
    n = await find_bucket(redis, keyspace, batch_id)
    return n is not None and await _drop(redis, keyspace, n, [batch_id]) > 0


async def drop_all(redis: Redis, keyspace: Keyspace) -> int:
    """Delete every batch dead-lettered before this call; how many."""
    cutoff = await _now_ms(redis)
    dropped = 0
    for bk in keyspace.all_buckets():
        ids = [batch_id for batch_id, _ in await _dead_ids(redis, bk, cutoff)]
        for chunk in _chunks(ids, PAGE):
            dropped += await _drop(redis, keyspace, bk.bucket, chunk)
    return dropped


def _replay_call(keyspace: Keyspace, bucket: int, chat_id: str, batch_ids: Sequence[str]) -> Call:
    ck = keyspace.chat(chat_id)
    if ck.bucket.bucket != bucket:
        raise BatcherError(
            f"dead batch {batch_ids[0]} is in bucket {bucket} but its chat maps to bucket "
            f"{ck.bucket.bucket}: is BATCHER_BUCKETS the value it was dead-lettered with?"
        )
    return Scripts.replay_call(keyspace, ck, batch_ids)


async def _drop(redis: Redis, keyspace: Keyspace, bucket: int, batch_ids: Sequence[str]) -> int:
    pipe = redis.pipeline(transaction=True)
    pipe.zrem(keyspace.bucket(bucket).dead, *batch_ids)
    for batch_id in batch_ids:
        pipe.delete(keyspace.dead_batch(bucket, batch_id), keyspace.dead_info(bucket, batch_id))
    return int((await pipe.execute())[0])  # the index entries removed


async def _dead_ids(redis: Redis, bk: BucketKeys, cutoff_ms: int) -> list[tuple[str, int]]:
    """(batch id, dead ms) dead-lettered by the cutoff; ZSCAN, not offsets: entries
    removed meanwhile (a concurrent replay) shift no other one out of the scan."""
    found: dict[str, int] = {}
    async for member, score in redis.zscan_iter(bk.dead, count=PAGE):
        if score <= cutoff_ms:
            found[_text(member)] = int(score)
    return list(found.items())


async def _now_ms(redis: Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


def _dead_batch(n: int, batch_id: str, info: dict[Any, Any], size: int, score: float) -> DeadBatch:
    got = {_text(k): _text(v) for k, v in info.items()}
    ms = {k: _int(got.get(k)) / 1000 for k in ("opened", "closed")}
    dead_at = _int(got.get("dead"), int(score)) / 1000
    seq, attempts = _int(got.get("seq")), _int(got.get("attempts"))
    chat, error, reason = (got.get(k, "") for k in ("chat", "error", "reason"))
    return DeadBatch(
        batch_id, chat, seq, attempts, error, reason, ms["opened"], ms["closed"], dead_at, size, n
    )


async def _each_dead_index(redis: Redis, keyspace: Keyspace, *command: Any) -> list[Any]:
    pipe = redis.pipeline(transaction=False)
    for bk in keyspace.all_buckets():
        pipe.execute_command(command[0], bk.dead, *command[1:])
    return list(await pipe.execute())


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _int(value: Any, default: int = 0) -> int:
    return int(_text(value)) if value is not None and _text(value).isdigit() else default


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


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
    return dead


def run_dead(args: argparse.Namespace, settings: Settings, console: Console | None = None) -> int:
    """``batcher dead ...``: 0 done, 1 no such dead batch, 2 refused or no Redis."""
    if settings.redis_url is None:
        raise SystemExit("batcher dead: set BATCHER_REDIS_URL to the server holding the batches")
    url, out = settings.redis_url.get_secret_value(), console or Console()

    async def run() -> int:
        redis = create_redis(url)
        try:
            return await _command(redis, Keyspace(settings.key_prefix, settings.buckets), args, out)
        except (RedisError, OSError) as exc:
            out.print(f"[bold red]error:[/] Redis at {settings.redis_url_display}:", _clean(exc))
            return 2
        finally:
            await redis.aclose()

    return asyncio.run(run())


async def _command(redis: Redis, keyspace: Keyspace, args: Any, console: Console) -> int:
    cmd, out = args.dead_command, console.print
    if cmd == "list":
        batches = await list_dead(redis, keyspace, args.limit)
        total = await count_dead(redis, keyspace)
        render_list(console, batches, total, await _now_ms(redis))
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
            render_show(console, *shown, await _now_ms(redis))
        elif cmd == "replay" and (n := await replay_dead(redis, keyspace, batch_id)):
            out(_clean(f"replayed {n} messages of {batch_id} (delivered under a new batch id)"))
        elif cmd == "drop" and await drop_dead(redis, keyspace, batch_id):
            out(_clean(f"dropped dead batch {batch_id}"))
        else:
            out(_clean(f"no dead batch {batch_id}"))
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
        cells = (b.batch_id, b.chat_id, b.size, b.attempts, _age(now_ms, b.dead_at), error)
        table.add_row(*(_clean(c) for c in cells))
    console.print(table)


def render_show(console: Console, b: DeadBatch, messages: Sequence[Message], now_ms: int) -> None:
    age = _age(now_ms, b.dead_at)
    head = (
        f"dead batch {b.batch_id}  chat {b.chat_id}  seq {b.seq}  reason {b.reason}\n"
        f"opened {_when(b.opened_at)}  closed {_when(b.closed_at)}  "
        f"dead {_when(b.dead_at)} ({age} ago) after {b.attempts} attempts\nerror: {b.error}"
    )
    console.print(_clean(head, newlines=True))
    table = Table(title=f"{len(messages)} messages")
    for col in ("#", "received", "id", "type", "text / data"):
        table.add_column(col, no_wrap=col in ("#", "received"))
    for i, m in enumerate(messages, 1):
        body = m.text if m.text is not None else json.dumps(m.data, ensure_ascii=False)
        received = _when(m.received_at) if m.received_at is not None else ""
        table.add_row(str(i), received, _clean(m.id), _clean(m.type), _clean(body, newlines=True))
    console.print(table)


def _clean(value: object, *, newlines: bool = False) -> Text:
    """Outside text, never parsed as markup, control characters made visible:
    no escape sequence in a chat id or a message reaches the terminal."""
    keep = "\n\t" if newlines else ""
    return Text("".join(c if c.isprintable() or c in keep else repr(c)[1:-1] for c in str(value)))


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def _age(now_ms: int, at: float) -> str:
    s = max(now_ms - int(at * 1000), 0) // 1000
    for size, unit, sub, sub_unit in ((86400, "d", 3600, "h"), (3600, "h", 60, "m")):
        if s >= size:
            return f"{s // size}{unit}{s % size // sub}{sub_unit}"
    return f"{s // 60}m{s % 60}s" if s >= 60 else f"{s}s"
