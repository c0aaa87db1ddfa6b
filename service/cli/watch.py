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
import sys
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from service.cli.console import duration, shorten
from service.cli.setup import add_redis_url, url_of, with_settings
from service.settings import Settings
from service.store.connections import connect
from service.store.keyspace import Keyspace
from service.store.snapshot import RATE_S, TOP, Snapshot, snapshot

REFRESH_S = 0.25  # ~4 frames a second
SNAPSHOT_TIMEOUT_S = 3.0
CHAT_WIDTH = 24
BAR_WIDTH = 14
PIPED_WIDTH = 200  # no terminal to fit: wide enough that no row is cut


# --- rendering ------------------------------------------------------------------


def short(text: str, width: int = CHAT_WIDTH) -> str:
    return shorten(text, width)


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


def _dead_table(snap: Snapshot) -> Table:
    rows = []
    for r in snap.dead:
        error = r.error.splitlines()[0] if r.error else ""
        rows.append([
            Text(short(r.chat_id), style="cyan"), r.batch_id, str(r.attempts),
            duration(snap.now_ms - r.dead_ms), Text(short(error, 60), style="red"),
        ])  # fmt: skip
    columns = ["chat".ljust(CHAT_WIDTH), "batch", ">attempts", ">dead for", "error"]
    title = f"dead letters: {snap.dead_total}  (newest first; batcher dead show|replay|drop)"
    return _table(title, columns, rows, snap.dead_total - len(snap.dead))


def _totals(snap: Snapshot) -> Text:
    text = Text("totals   ", style="bold")
    text.append(f"open {snap.open_total}   in flight {snap.inflight_total}   ")
    text.append(f"dead letters {snap.dead_total}", style="bold red" if snap.dead_total else "")
    if snap.rejected_total:
        text.append(f"   rejected {snap.rejected_total}", style="bold yellow")
        text.append("  (batcher rejected list)", style="dim")
    if snap.provider_errors:
        text.append("\nprovider ", style="bold yellow")
        counts = ", ".join(f"{k} x{n}" for k, n in snap.provider_errors[:5])
        text.append(f"errors {counts}")
        last = snap.last_provider_error
        if last is not None:
            said = short(last.title or last.message or "", 60)
            text.append(
                f"  (latest {duration(snap.now_ms - last.at * 1000)} ago: {said})", style="dim"
            )
    text.append("\nclosing  ", style="bold")
    if snap.expiries_per_s is not None:
        text.append(f"about {snap.expiries_per_s:.1f} batches a second (last {RATE_S} s)")
    else:
        text.append("… (next frame)" if snap.samples else "unknown (the server refuses INFO)")
    why = "counted from the timers Redis expired, for the whole server"
    text.append(f"  ({why})", style="dim")
    lags = sorted(r.closed_ms - r.deadline_ms for r in snap.inflight if r.deadline_ms)
    if lags:
        text.append("\nlate by  ", style="bold")
        text.append(f"median {duration(lags[(len(lags) - 1) // 2])}, most {duration(lags[-1])}")
        text.append(f"  (deadline to claim, of the {len(lags)} in flight shown)", style="dim")
    overdue = [snap.now_ms - r.deadline_ms for r in snap.open if not r.behind]
    overdue = [ms for ms in overdue if ms > 0]
    if overdue:
        text.append("\noverdue  ", style="bold red")
        text.append(f"{len(overdue)} open batches not claimed yet, oldest {duration(max(overdue))}")
    return text


def render(snap: Snapshot) -> RenderableType:
    """One frame: header, open batches, batches in flight, dead letters, totals."""
    where = f"{snap.source}  (idle and max wait: this shell's settings)"
    head = Text.assemble(("batcher watch  ", "bold"), (where, "dim"))
    return Group(head, _open_table(snap), _flight_table(snap), _dead_table(snap), _totals(snap))


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
    redis = await connect(url, settings.redis_cluster)
    keyspace = Keyspace.of(settings)
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
    p = subparsers.add_parser("watch", help="live view of the open, in-flight and dead batches")
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.add_argument("--top", type=int, default=TOP, help="rows per list (%(default)s)")
    p.add_argument("--interval", type=float, default=REFRESH_S, help="seconds between frames")
    p.add_argument("--width", type=int, help="columns (default: the terminal's; 200 when piped)")
    add_redis_url(p)
    return p


def run_watch(args: argparse.Namespace, settings: Settings, console: Console | None = None) -> int:
    """Exit 0 (also on Ctrl-C); 2 without BATCHER_REDIS_URL, or when --once cannot read it."""
    url = url_of(settings, "watch")
    if console is None:
        console = Console(width=args.width or (None if sys.stdout.isatty() else PIPED_WIDTH))
    top, interval = max(1, args.top), max(0.05, args.interval)
    try:
        return asyncio.run(
            watch(url, settings, console, once=args.once, top=top, interval_s=interval)
        )
    except KeyboardInterrupt:  # before the handlers were installed
        return 0


def register(subparsers: Any) -> None:
    add_watch_parser(subparsers).set_defaults(run=with_settings(run_watch, redis=True))
