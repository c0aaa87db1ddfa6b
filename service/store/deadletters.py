"""The dead-letter store: list, show, replay and drop dead-lettered batches.

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

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.asyncio import Redis

from service.errors import BatcherError
from service.models import Message, order_messages
from service.store.keyspace import BucketKeys, Keyspace
from service.store.runner import Call, run_script, run_scripts
from service.store.scripts import Replayed, Scripts

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


async def dead_of_chat(
    redis: Redis, keyspace: Keyspace, chat_id: str, *, scan: int = 1000
) -> list[DeadBatch]:
    """The chat's dead batches among the ``scan`` newest of its bucket, newest first."""
    n = keyspace.bucket_of(chat_id)
    got = await redis.zrevrange(keyspace.bucket(n).dead, 0, scan - 1, withscores=True)
    entries: list[tuple[bytes, float]] = list(got)  # type: ignore[arg-type]
    pipe = redis.pipeline(transaction=False)
    for member, _ in entries:
        pipe.hgetall(keyspace.dead_info(n, _text(member)))
        pipe.llen(keyspace.dead_batch(n, _text(member)))
    raw = await pipe.execute()
    found = [
        _dead_batch(n, _text(member), raw[2 * i], int(raw[2 * i + 1]), score)
        for i, (member, score) in enumerate(entries)
    ]
    return [b for b in found if b.chat_id == chat_id]


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
    cutoff = await server_time_ms(redis)
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
    cutoff = await server_time_ms(redis)
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


async def server_time_ms(redis: Redis) -> int:
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
