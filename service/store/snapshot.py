"""A snapshot of a deployment for operators' views (``batcher watch``): the
open, in-flight and dead batches soonest first, read (never written) in two
pipelined round trips whose work is bounded by buckets times ``top``,
whatever the number of chats.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from service.settings import Settings
from service.store.keyspace import BucketKeys, Keyspace
from service.store.provider_errors import ReportedError, decode_reported

TOP = 20
RATE_S = 5  # the closing rate is averaged over this
FLIGHT_FIELDS = ["batch", "attempt", "bseq", "bclosed", "bdeadline", "error"]


@dataclass(frozen=True, slots=True)
class OpenRow:
    chat_id: str
    messages: int  # LLEN of the open batch
    deadline_ms: int  # its `due` score: the idle (or max-wait) deadline
    opened_ms: int | None  # meta `opened`: its first message
    behind: bool  # the chat has a batch in flight: this one is parked until its ack


@dataclass(frozen=True, slots=True)
class FlightRow:
    chat_id: str
    batch_id: str
    attempt: int
    seq: int
    closed_ms: int  # when it was claimed
    deadline_ms: int | None  # when it became due: claim lag = closed - deadline
    lease_ms: int  # `inflight` score: a sweeper redelivers it after this
    error: str | None  # the last failed attempt's error


@dataclass(frozen=True, slots=True)
class DeadRow:
    chat_id: str
    batch_id: str
    attempts: int
    dead_ms: int  # when it was dead-lettered
    error: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    now_ms: int  # Redis TIME
    source: str  # where from: URL (password masked), key prefix, buckets
    idle_ms: int  # from the watching shell's settings
    max_wait_ms: int
    open_total: int
    inflight_total: int
    dead_total: int
    open: tuple[OpenRow, ...]  # soonest flush first, at most `top`
    inflight: tuple[FlightRow, ...]  # soonest lease expiry first, at most `top`
    dead: tuple[DeadRow, ...]  # newest first, at most `top`
    samples: tuple[tuple[int, int], ...]  # (now_ms, INFO expired_keys) of the last RATE_S
    expiries_per_s: float | None  # expired_keys per second over those samples
    rejected_total: int = 0  # messages no chat could be named for (batcher rejected)
    provider_errors: tuple[tuple[str, int], ...] = ()  # ("<source>:<code>", count), most first
    last_provider_error: ReportedError | None = None


def _int(value: Any) -> int | None:
    return None if value is None else int(float(value))


async def _expired_keys(redis: Redis) -> int | None:
    """INFO's expired_keys, summed over a cluster's primaries; None when INFO
    is refused (an ACL may): the closing rate is then unknown."""
    try:
        if isinstance(redis, RedisCluster):
            infos = await redis.info("stats", target_nodes=RedisCluster.PRIMARIES)
            return sum(int(i.get("expired_keys", 0)) for i in infos.values())
        return _int((await redis.info("stats")).get("expired_keys"))
    except ResponseError:
        return None


async def snapshot(
    redis: Redis, keyspace: Keyspace, settings: Settings, previous: Snapshot | None = None,
    *, top: int = TOP,
) -> Snapshot:  # fmt: skip
    """Per bucket: sizes of due/inflight/dead and their first ``top`` entries, with
    TIME and INFO stats; then LLEN buf and HMGET meta (deadinfo for the dead) for
    the first ``top`` of each overall.
    ``redis`` must answer bytes, as clients from ``create_redis`` do."""
    buckets = keyspace.all_buckets()
    clock, expired = await asyncio.gather(redis.time(), _expired_keys(redis))
    pipe = redis.pipeline(transaction=False)
    pipe.hlen(keyspace.rejected)
    pipe.hgetall(keyspace.provider_errors)
    pipe.lindex(keyspace.provider_errors_recent, 0)
    for bk in buckets:
        for key in (bk.due, bk.inflight, bk.dead):
            pipe.zcard(key)
        pipe.zrange(bk.due, 0, top - 1, withscores=True)
        pipe.zrange(bk.inflight, 0, top - 1, withscores=True)
        pipe.zrevrange(bk.dead, 0, top - 1, withscores=True)
    first = await pipe.execute(raise_on_error=False)
    if errors := [e for e in first if isinstance(e, Exception)]:
        raise errors[0]
    now_ms = int(clock[0]) * 1000 + int(clock[1]) // 1000
    rejected, perrors, last_error, *per_bucket = first

    totals = [0, 0, 0]
    due: list[tuple[float, bytes, BucketKeys]] = []  # (score, chat id, its bucket)
    leases: list[tuple[float, bytes, BucketKeys]] = []
    dead: list[tuple[float, bytes, BucketKeys]] = []  # (-dead ms, batch id, its bucket)
    for n, bk in enumerate(buckets):
        row = per_bucket[6 * n : 6 * n + 6]
        totals = [t + int(c) for t, c in zip(totals, row[:3], strict=True)]
        due += [(float(score), chat, bk) for chat, score in row[3]]
        leases += [(float(score), chat, bk) for chat, score in row[4]]
        dead += [(-float(score), batch, bk) for batch, score in row[5]]
    due = sorted(due, key=lambda e: e[:2])[:top]
    leases = sorted(leases, key=lambda e: e[:2])[:top]
    dead = sorted(dead, key=lambda e: e[:2])[:top]

    second: list[Any] = []
    if due or leases or dead:
        pipe = redis.pipeline(transaction=False)
        for _, chat, _bk in due:
            ck = keyspace.chat(chat.decode())
            pipe.llen(ck.buf)
            pipe.hmget(ck.meta, ["opened", "batch"])
        for _, chat, _bk in leases:
            pipe.hmget(keyspace.chat(chat.decode()).meta, FLIGHT_FIELDS)
        for _, batch, bk in dead:
            pipe.hmget(keyspace.dead_info(bk.bucket, batch.decode()), ["chat", "attempts", "error"])
        second = await pipe.execute()

    open_rows = []
    for i, (score, chat, _) in enumerate(due):
        count, (opened, batch) = int(second[2 * i]), second[2 * i + 1]
        if count:  # else claimed between the two round trips
            name = chat.decode("utf-8", "replace")
            open_rows.append(OpenRow(name, count, int(score), _int(opened), batch is not None))
    flight_rows = []
    for i, (score, chat, _) in enumerate(leases):
        batch, attempt, seq, closed, deadline, error = second[2 * len(due) + i]
        if batch is not None:  # else acknowledged between the two round trips
            name, closed_ms = chat.decode("utf-8", "replace"), _int(closed) or now_ms
            flight_rows.append(
                FlightRow(name, batch.decode(), _int(attempt) or 1, _int(seq) or 0, closed_ms,
                          _int(deadline), int(score), error and error.decode("utf-8", "replace"))
            )  # fmt: skip
    dead_rows = []
    for i, (score, batch, _) in enumerate(dead):
        chat, attempts, error = second[2 * len(due) + len(leases) + i]
        if chat is not None:  # else replayed or dropped between the two round trips
            text = (error or b"").decode("utf-8", "replace")
            dead_rows.append(DeadRow(chat.decode("utf-8", "replace"), batch.decode(),
                                     _int(attempts) or 0, int(-score), text))  # fmt: skip

    rate: float | None = None
    samples: tuple[tuple[int, int], ...] = ()
    if expired is not None:  # samples of the last RATE_S, since any restart (a reset)
        old = previous.samples if previous is not None else ()
        old = tuple(s for s in old if now_ms - s[0] <= RATE_S * 1000 and s[1] <= expired)
        samples = (*old, (now_ms, expired))
        if now_ms > samples[0][0]:
            rate = (expired - samples[0][1]) * 1000 / (now_ms - samples[0][0])
    source = f"{settings.redis_url_display}  prefix {keyspace.prefix!r}, {keyspace.buckets} buckets"
    return Snapshot(
        now_ms, source, settings.idle_ms, settings.max_wait_ms, totals[0], totals[1], totals[2],
        tuple(open_rows), tuple(flight_rows), tuple(dead_rows), samples, rate, int(rejected),
        tuple(sorted(((k.decode(), int(v)) for k, v in perrors.items()), key=lambda kv: -kv[1])),
        None if last_error is None else decode_reported(last_error),
    )  # fmt: skip
