"""``batcher watch``: a live, read-only terminal view of a running deployment.

``snapshot`` reads the Redis at ``BATCHER_REDIS_URL`` (never writes) in two
pipelined round trips whose work is bounded by buckets times ``top``, whatever
the number of chats; ``render`` turns one snapshot into one renderable, which
a ``Live`` display shows about four times a second.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .connections import create_redis
from .console import shorten
from .keys import BucketKeys, Keyspace
from .settings import Settings

TOP = 20
REFRESH_S = 0.25  # ~4 frames a second
SNAPSHOT_TIMEOUT_S = 3.0
RATE_S = 5  # the closing rate is averaged over this
CHAT_WIDTH = 24
BAR_WIDTH = 14
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
    samples: tuple[tuple[int, int], ...]  # (now_ms, INFO expired_keys) of the last RATE_S
    expiries_per_s: float | None  # expired_keys per second over those samples


def _int(value: Any) -> int | None:
    return None if value is None else int(float(value))


async def snapshot(
    redis: Redis, keyspace: Keyspace, settings: Settings, previous: Snapshot | None = None,
    *, top: int = TOP,
) -> Snapshot:  # fmt: skip
    """Per bucket: sizes of due/inflight/dead and their first ``top`` entries, with
    TIME and INFO stats; then LLEN buf and HMGET meta for the first ``top`` overall.
    ``redis`` must answer bytes, as clients from ``create_redis`` do."""
    buckets = keyspace.all_buckets()
    pipe = redis.pipeline(transaction=False)
    pipe.time()
    pipe.info("stats")
    for bk in buckets:
        for key in (bk.due, bk.inflight, bk.dead):
            pipe.zcard(key)
        pipe.zrange(bk.due, 0, top - 1, withscores=True)
        pipe.zrange(bk.inflight, 0, top - 1, withscores=True)
    first = await pipe.execute(raise_on_error=False)
    if errors := [e for i, e in enumerate(first) if isinstance(e, Exception) and i != 1]:
        raise errors[0]  # but INFO (index 1) may be refused by an ACL: it is optional
    now_ms = int(first[0][0]) * 1000 + int(first[0][1]) // 1000
    expired = _int(first[1].get("expired_keys")) if isinstance(first[1], dict) else None

    totals = [0, 0, 0]
    due: list[tuple[float, bytes, BucketKeys]] = []  # (score, chat id, its bucket)
    leases: list[tuple[float, bytes, BucketKeys]] = []
    for n, bk in enumerate(buckets):
        row = first[2 + 5 * n : 7 + 5 * n]
        totals = [t + int(c) for t, c in zip(totals, row[:3], strict=True)]
        due += [(float(score), chat, bk) for chat, score in row[3]]
        leases += [(float(score), chat, bk) for chat, score in row[4]]
    due = sorted(due, key=lambda e: e[:2])[:top]
    leases = sorted(leases, key=lambda e: e[:2])[:top]

    second: list[Any] = []
    if due or leases:
        pipe = redis.pipeline(transaction=False)
        for _, chat, bk in due:
            pipe.llen(bk.buf_prefix + chat)
            pipe.hmget(bk.meta_prefix + chat, ["opened", "batch"])
        for _, chat, bk in leases:
            pipe.hmget(bk.meta_prefix + chat, FLIGHT_FIELDS)
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
        tuple(open_rows), tuple(flight_rows), samples, rate,
    )  # fmt: skip


# --- rendering ------------------------------------------------------------------


def short(text: str, width: int = CHAT_WIDTH) -> str:
    return shorten(text, width)


def duration(ms: float) -> str:
    ms = abs(ms)
    if ms < 60_000:
        return f"{ms:.0f}ms" if ms < 1000 else f"{ms / 1000:.1f}s"
    if ms < 3_600_000:
        return f"{int(ms // 60_000)}m{int(ms % 60_000 // 1000):02d}s"
    return f"{int(ms // 3_600_000)}h{int(ms % 3_600_000 // 60_000):02d}m"


def countdown(left_ms: float, total_ms: float) -> Text:
    """A bar, full with ``total_ms`` left and empty at zero, and the time left."""
    style = "red" if left_ms < 1000 else ("yellow" if left_ms < total_ms / 4 else "green")
    filled = round(min(max(left_ms / total_ms, 0.0), 1.0) * BAR_WIDTH) if total_ms > 0 else 0
    text = Text("█" * filled, style=style)
    text.append("░" * (BAR_WIDTH - filled), style="grey35")
    text.append(f" {duration(left_ms):>7}", style=style)
    return text


def _table(title: str, columns: Sequence[str], rows: list[list[Any]], more: int) -> Table:
    """Columns named ``">name"`` are right-aligned; ``more`` rows not shown are counted."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for name in columns:
        right = name.startswith(">")
        table.add_column(name.lstrip(">"), justify="right" if right else "left", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    blank = [""] * (len(columns) - 1)
    if more > 0:
        table.add_row(Text(f"… and {more} more", style="dim"), *blank)
    elif not rows:
        table.add_row(Text("(none)", style="dim"), *blank)
    return table


def _open_table(snap: Snapshot) -> Table:
    rows = []
    for r in snap.open:
        left = r.deadline_ms - snap.now_ms
        if r.behind:
            flush = Text("after the batch in flight", style="magenta")
        elif left <= 0:
            flush = Text(f"due {duration(left)} ago, claiming", style="bold red")
        else:
            flush = countdown(left, snap.idle_ms)
        wait = Text("—", style="dim")
        if r.opened_ms is not None:
            wait = countdown(r.opened_ms + snap.max_wait_ms - snap.now_ms, snap.max_wait_ms)
        rows.append([Text(short(r.chat_id), style="cyan"), str(r.messages), flush, wait])
    columns = [
        "chat".ljust(CHAT_WIDTH), ">msgs", f"flush in (idle {duration(snap.idle_ms)})",
        f"max wait left ({duration(snap.max_wait_ms)})",
    ]  # fmt: skip
    title = f"open batches: {snap.open_total}  (soonest flush first)"
    return _table(title, columns, rows, snap.open_total - len(snap.open))


def _flight_table(snap: Snapshot) -> Table:
    rows = []
    for r in snap.inflight:
        left = r.lease_ms - snap.now_ms
        lease = Text(duration(left), "green") if left > 0 else Text("expired", "bold red")
        rows.append([
            Text(short(r.chat_id), style="cyan"), short(r.batch_id, 9), str(r.seq),
            Text(str(r.attempt), style="bold yellow" if r.attempt > 1 else ""),
            duration(snap.now_ms - r.closed_ms),
            "" if r.deadline_ms is None else duration(r.closed_ms - r.deadline_ms),
            lease, Text(short(r.error or "", 44), style="red"),
        ])  # fmt: skip
    columns = [
        "chat".ljust(CHAT_WIDTH), "batch", ">#", ">attempt", ">age", ">claim lag", ">lease",
        "last error",
    ]  # fmt: skip
    title = f"in flight: {snap.inflight_total}  (soonest lease expiry first)"
    return _table(title, columns, rows, snap.inflight_total - len(snap.inflight))


def _totals(snap: Snapshot) -> Text:
    text = Text("totals   ", style="bold")
    text.append(f"open {snap.open_total}   in flight {snap.inflight_total}   ")
    text.append(f"dead letters {snap.dead_total}", style="bold red" if snap.dead_total else "")
    text.append("\nclosing  ", style="bold")
    if snap.expiries_per_s is not None:
        text.append(f"≈ {snap.expiries_per_s:.1f} batches/s over {RATE_S} s")
    else:
        text.append("… (next frame)" if snap.samples else "n/a (INFO refused)")
    why = "every batch closes when its timer expires: INFO expired_keys, whole server"
    text.append(f"  ({why})", style="dim")
    lags = sorted(r.closed_ms - r.deadline_ms for r in snap.inflight if r.deadline_ms)
    if lags:
        text.append("\nclaim lag ", style="bold")
        text.append(f"p50 {duration(lags[(len(lags) - 1) // 2])}  max {duration(lags[-1])}")
        text.append(f"  (deadline → claim, of the {len(lags)} in flight shown)", style="dim")
    overdue = [snap.now_ms - r.deadline_ms for r in snap.open if not r.behind]
    overdue = [ms for ms in overdue if ms > 0]
    if overdue:
        text.append("\noverdue  ", style="bold red")
        text.append(f"{len(overdue)} open batches not claimed yet, oldest {duration(max(overdue))}")
    return text


def render(snap: Snapshot) -> RenderableType:
    """One frame: header, open batches, batches in flight, totals."""
    where = f"{snap.source}  (idle and max wait: this shell's settings)"
    head = Text.assemble(("batcher watch  ", "bold"), (where, "dim"))
    return Group(head, _open_table(snap), _flight_table(snap), _totals(snap))


async def frame(
    redis: Redis, keyspace: Keyspace, settings: Settings, previous: Snapshot | None, top: int
) -> tuple[Snapshot | None, RenderableType]:
    """A snapshot and its rendering, or (None, what went wrong)."""
    try:
        async with asyncio.timeout(SNAPSHOT_TIMEOUT_S):
            snap = await snapshot(redis, keyspace, settings, previous, top=top)
    except (RedisError, OSError, TimeoutError) as exc:
        why = f"{type(exc).__name__}: {exc}"
        head = ("batcher watch  ", "bold"), (settings.redis_url_display, "dim")
        return None, Text.assemble(*head, ("\ncannot read Redis: ", "bold red"), why)
    return snap, render(snap)


# --- the command ------------------------------------------------------------------


async def watch(
    url: str, settings: Settings, console: Console, *, once: bool = False, top: int = TOP,
    interval_s: float = REFRESH_S,
) -> int:  # fmt: skip
    """Frames until SIGINT/SIGTERM (exit 0), or one frame with ``once`` (2 if unreadable)."""
    redis = create_redis(url)
    keyspace = Keyspace(settings.key_prefix, settings.buckets)
    stop, loop, installed = asyncio.Event(), asyncio.get_running_loop(), []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        if once:
            snap, view = await frame(redis, keyspace, settings, None, top)
            console.print(view)
            return 0 if snap is not None else 2
        # No auto refresh: one renderable per snapshot, drawn once (no flicker).
        with Live(console=console, screen=False, auto_refresh=False) as live:
            snap = None
            while not stop.is_set():
                snap, view = await frame(redis, keyspace, settings, snap, top)
                live.update(view, refresh=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval_s)
        return 0
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await redis.aclose()


def add_watch_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    p = subparsers.add_parser("watch", help="live view of the batches at BATCHER_REDIS_URL")
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.add_argument("--top", type=int, default=TOP, help="rows per list (%(default)s)")
    p.add_argument("--interval", type=float, default=REFRESH_S, help="seconds between frames")
    return p


def run_watch(args: argparse.Namespace, settings: Settings, console: Console | None = None) -> int:
    """Exit 0 (also on Ctrl-C); 2 without BATCHER_REDIS_URL, or when --once cannot read it."""
    if settings.redis_url is None:
        Console(stderr=True).print(
            "[bold red]error:[/] batcher watch reads a running deployment: set "
            "BATCHER_REDIS_URL (and the deployment's BATCHER_KEY_PREFIX / BATCHER_BUCKETS)"
        )
        return 2
    url, console = settings.redis_url.get_secret_value(), console or Console()
    top, interval = max(1, args.top), max(0.05, args.interval)
    try:
        return asyncio.run(
            watch(url, settings, console, once=args.once, top=top, interval_s=interval)
        )
    except KeyboardInterrupt:  # before the handlers were installed
        return 0
