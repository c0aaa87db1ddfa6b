"""What a chaos soak reads back at its end: Redis's leftovers, the services' logs,
and the raw records dumped for analysis after the fact."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from service.store.backlog import read_backlog
from service.store.keyspace import Keyspace
from service.tooling.chaos.driver import Driver
from service.tooling.chaos.faults import Rig, admin_call
from service.tooling.chaos.report import Leftovers
from service.tooling.procs import ServiceProc
from service.tooling.sink import Sink

COUNTED_EVENTS = (
    "failed", "dead", "recovering", "redelivering", "lease_lost", "listener_lost",
    "redis_retry", "subscribed",
)  # fmt: skip


async def drain(rig: Rig, driver: Driver, bound_s: float) -> Leftovers:
    """Wait (bounded) until every acknowledged message is at the bot or dead, and
    Redis holds nothing due or in flight; then take stock of what is left."""
    keys = Keyspace()
    start = time.monotonic()
    left = Leftovers(drained=False)
    while True:
        backlog = await admin_call(lambda: read_backlog(rig.admin, keys))
        if backlog.pending == 0:
            delivered = {i for p in rig.sink.acked() for i in p.message_ids}
            left.dead = await admin_call(lambda: read_dead(rig.admin, keys))
            dead = {i for info in left.dead.values() for i in info["ids"]}
            missing = [s for s in driver.sent if s.acked is not None and s.wamid not in delivered]
            if all(s.wamid in dead for s in missing):
                left.drained = True
                break
        if time.monotonic() - start > bound_s:
            break
        await asyncio.sleep(0.25)
    left.drain_s = time.monotonic() - start
    backlog = await admin_call(lambda: read_backlog(rig.admin, keys))
    left.due, left.inflight = backlog.open, backlog.inflight
    left.dead = await admin_call(lambda: read_dead(rig.admin, keys))
    left.where = await admin_call(lambda: read_open(rig.admin, keys))
    return left


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def item_id(item: Any) -> str:
    raw = item if isinstance(item, bytes) else str(item).encode()
    return str(json.loads(raw.partition(b"\t")[2])["id"])


async def read_dead(admin: Redis, keys: Keyspace) -> dict[str, dict[str, Any]]:
    """Every dead-lettered batch: its deadinfo fields plus ``ids`` of its messages."""
    out: dict[str, dict[str, Any]] = {}
    for bk in keys.all_buckets():
        for raw in await admin.zrange(bk.dead, 0, -1):
            batch_id = _text(raw)
            info = await admin.hgetall(keys.dead_info(bk.bucket, batch_id))
            items = await admin.lrange(keys.dead_batch(bk.bucket, batch_id), 0, -1)
            doc: dict[str, Any] = {_text(k): _text(v) for k, v in info.items()}
            doc["ids"] = [item_id(i) for i in items]
            out[batch_id] = doc
    return out


async def read_open(admin: Redis, keys: Keyspace) -> dict[str, str]:
    """Message id -> "buf" (an open batch) or "proc" (a claimed one) for what is left."""
    where: dict[str, str] = {}
    for kind in ("buf", "proc"):
        prefixes = tuple(f"{keys.prefix}:{{b{b}}}:{kind}:".encode() for b in range(keys.buckets))
        async for key in admin.scan_iter(match=keys.pattern(), count=1000):
            if key.startswith(prefixes):
                for item in await admin.lrange(key, 0, -1):
                    where[item_id(item)] = kind
    return where


def service_events(services: list[ServiceProc]) -> dict[str, Any]:
    counts: dict[str, dict[str, int]] = {}
    for svc in services:
        c: Counter[str] = Counter()
        with contextlib.suppress(OSError):
            for line in svc.log_path.read_text(errors="replace").splitlines():
                if not line.startswith("{"):
                    c["non_json_lines"] += 1
                    continue
                with contextlib.suppress(ValueError):
                    doc = json.loads(line)
                    if doc.get("event") in COUNTED_EVENTS:
                        c[doc["event"]] += 1
                    if doc.get("level") in ("error", "critical"):
                        c["errors"] += 1
        counts[svc.name] = dict(c)
    return counts


def dump(run_dir: Path, t0: float, driver: Driver, sink: Sink) -> None:
    """Raw records for analysis after the fact (times relative to the start)."""
    with (run_dir / "sent.jsonl").open("w") as out:
        for m in driver.sent:
            acked = None if m.acked is None else round(m.acked - t0, 4)
            row = [m.wamid, m.chat_id, m.index, round(m.first_sent - t0, 4), acked, m.posts]
            out.write(json.dumps(row) + "\n")
    with (run_dir / "posts.jsonl").open("w") as out:
        for p in sink.batches():
            answered = None if p.answered is None else round(p.answered - t0, 4)
            row = [p.batch_id, p.chat_id, p.attempt, p.message_ids, round(p.arrived - t0, 4),
                   answered, p.status, p.hung]  # fmt: skip
            out.write(json.dumps(row) + "\n")
