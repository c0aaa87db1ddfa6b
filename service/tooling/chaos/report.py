"""Reconciliation of a chaos soak: what was acknowledged against what the bot got.

Pure functions over the harness's records (all times ``time.monotonic()``):
the driver's messages, the sink's POSTs, the dead-letter store and what was
left in Redis, and the faults. The verdict fails on any acknowledged message
lost, any order violation, any overlap of two batches of one chat at the bot,
and any message delivered in two different batches.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from service.stats import percentile
from service.tooling.chaos.driver import Sent
from service.tooling.chaos.faults import Fault
from service.tooling.sink import Received

EXAMPLES = 10
STALL_S = 30.0  # an acknowledged message still not at the bot this long after: "stalled"


@dataclass
class Leftovers:
    """What the end of the run found outside the bot."""

    dead: dict[str, dict[str, Any]] = field(default_factory=dict)  # batch id -> info + "ids"
    where: dict[str, str] = field(default_factory=dict)  # message id -> "buf" | "proc"
    due: int = 0
    inflight: int = 0
    drained: bool = True
    drain_s: float = 0.0


@dataclass(frozen=True)
class Timing:
    idle_s: float
    forward_timeout_s: float
    lease_s: float
    recovery_window_s: float = 2.0


def _stats(values: list[float]) -> dict[str, Any]:
    p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
    r = {"n": len(values), "p50": p50, "p99": p99, "max": None}
    if values:
        r["max"] = max(values)
    return {k: (round(v * 1000) if isinstance(v, float) else v) for k, v in r.items()}


def _overlaps(a0: float, a1: float, windows: Iterable[tuple[float, float]]) -> bool:
    return any(a0 <= w1 and w0 <= a1 for w0, w1 in windows)


def reconcile(
    sent: list[Sent],
    posts: list[Received],
    faults: list[Fault],
    left: Leftovers,
    timing: Timing,
    t0: float,
) -> dict[str, Any]:
    by_id = {s.wamid: s for s in sent}
    ok = [p for p in posts if p.ok]
    delivered_at: dict[str, float] = {}
    batches_of: dict[str, set[str]] = defaultdict(set)
    ok_count: Counter[str] = Counter()
    first_arrival: dict[str, float] = {}
    first_ok: dict[str, Received] = {}
    for p in posts:
        first_arrival[p.batch_id] = min(first_arrival.get(p.batch_id, p.arrived), p.arrived)
    for p in sorted(ok, key=lambda p: p.arrived):
        ok_count[p.batch_id] += 1
        first_ok.setdefault(p.batch_id, p)
        assert p.answered is not None
        for i in p.message_ids:
            batches_of[i].add(p.batch_id)
            delivered_at[i] = min(delivered_at.get(i, p.answered), p.answered)
    dead_ids = {i: b for b, info in left.dead.items() for i in info["ids"]}

    acked = [s for s in sent if s.acked is not None]
    lost = [s for s in acked if s.wamid not in delivered_at and s.wamid not in dead_ids]
    lost_where = Counter(left.where.get(s.wamid, "nowhere") for s in lost)
    split = {i: sorted(b) for i, b in batches_of.items() if len(b) > 1}
    unknown = [i for i in delivered_at if i not in by_id]

    order, overlaps, late = _order_and_overlaps(ok, posts, by_id, first_arrival, timing)
    dup_causes = _duplicates(ok, first_ok, ok_count, faults, timing, t0)
    lag = _lag(first_ok, first_arrival, by_id, faults, timing)
    recovery = _recovery(sent, acked, delivered_at, ok, faults, timing)

    waits = [delivered_at[s.wamid] - (s.acked or 0.0) for s in acked if s.wamid in delivered_at]
    verdict_fail = bool(lost or order or overlaps or split)
    return {
        "verdict": "FAIL" if verdict_fail else "PASS",
        "messages": {
            "sent": len(sent),
            "acknowledged": len(acked),
            "never_acknowledged": len(sent) - len(acked),
            "delivered": sum(1 for s in acked if s.wamid in delivered_at),
            "delivered_unacknowledged": sum(
                1 for s in sent if s.acked is None and s.wamid in delivered_at
            ),
            "dead_lettered": sum(1 for s in acked if s.wamid in dead_ids),
            "wait_s": {
                "p99": _round(percentile(waits, 0.99) or 0.0),
                "max": _round(max(waits, default=0)),
            },
            "stalled": sum(1 for w in waits if w > STALL_S),
            "lost": len(lost),
            "lost_where": dict(lost_where),
            "lost_examples": [
                {"id": s.wamid, "acked_at_s": round((s.acked or 0) - t0, 3)}
                for s in lost[:EXAMPLES]
            ],
            "unknown_delivered": len(unknown),
            "in_two_batches": len(split),
            "in_two_batches_examples": dict(list(split.items())[:EXAMPLES]),
        },
        "batches": {
            "delivered": len(first_ok),
            "posts": len(posts),
            "posts_ok": len(ok),
            "posts_failed": sum(1 for p in posts if p.status is not None and not p.ok),
            "posts_hung": sum(1 for p in posts if p.hung),
            "posts_unanswered": sum(1 for p in posts if p.status is None),
            "bad_signatures": sum(1 for p in posts if not p.signature_valid),
            "dead_lettered": len(left.dead),
            "dead_reasons": dict(Counter(str(i.get("error", ""))[:80] for i in left.dead.values())),
            "duplicate_deliveries": sum(n - 1 for n in ok_count.values()),
            "duplicate_causes": dict(dup_causes),
            "late_redeliveries": late,
        },
        "order_violations": len(order),
        "order_examples": order[:EXAMPLES],
        "overlaps": len(overlaps),
        "overlap_examples": overlaps[:EXAMPLES],
        "lag_ms": lag,
        "recovery": recovery,
        "slowest": _slowest(acked, delivered_at, batches_of, posts, t0),
        "leftovers": {
            "due": left.due,
            "inflight": left.inflight,
            "drained": left.drained,
            "drain_s": round(left.drain_s, 2),
        },
    }


def _order_and_overlaps(
    ok: list[Received],
    posts: list[Received],
    by_id: dict[str, Sent],
    first_arrival: dict[str, float],
    timing: Timing,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    order: list[dict[str, Any]] = []
    overlaps: list[dict[str, Any]] = []
    late = 0
    per_chat: dict[str, list[Received]] = defaultdict(list)
    for p in posts:
        per_chat[p.chat_id].append(p)
    for chat, chat_posts in per_chat.items():
        chat_posts.sort(key=lambda p: p.arrived)
        # Order: the chat's delivered batches, each once, in the order the bot took them.
        seen: set[str] = set()
        last_index, last_id = -1, ""
        delivered = [p for p in chat_posts if p.ok]
        for p in delivered:
            if p.batch_id in seen:
                continue
            seen.add(p.batch_id)
            for i in p.message_ids:
                s = by_id.get(i)
                if s is None:
                    continue
                if s.index <= last_index:
                    order.append({"chat": chat, "batch": p.batch_id, "id": i, "after": last_id})
                last_index, last_id = max(last_index, s.index), i
        # Overlaps: two POSTs of different batches of one chat open at once (a POST is
        # open from its arrival until answered, or until the service's forward timeout).
        ends = [
            min(
                p.answered if p.answered is not None else math.inf,
                p.arrived + timing.forward_timeout_s,
            )
            for p in chat_posts
        ]
        for a, pa in enumerate(chat_posts):
            for b in range(a + 1, len(chat_posts)):
                pb = chat_posts[b]
                if pb.arrived >= ends[a]:
                    break
                if pb.batch_id != pa.batch_id:
                    overlaps.append(
                        {"chat": chat, "first": pa.batch_id, "second": pb.batch_id,
                         "by_ms": round((ends[a] - pb.arrived) * 1000, 1)}
                    )  # fmt: skip
        # Late redeliveries: a POST of a batch after the chat's next batch first arrived.
        order_of = sorted({p.batch_id for p in chat_posts}, key=first_arrival.__getitem__)
        next_start = {b: first_arrival[order_of[k + 1]] for k, b in enumerate(order_of[:-1])}
        late += sum(1 for p in chat_posts if p.arrived > next_start.get(p.batch_id, math.inf))
    return order, overlaps, late


def _slowest(
    acked: list[Sent],
    delivered_at: dict[str, float],
    batches_of: dict[str, set[str]],
    posts: list[Received],
    t0: float,
) -> list[dict[str, Any]]:
    """The acknowledged messages that waited longest for the bot, with their batch's POSTs."""
    waits = sorted(
        ((delivered_at[s.wamid] - (s.acked or 0.0), s) for s in acked if s.wamid in delivered_at),
        key=lambda ws: -ws[0],
    )
    out = []
    for wait, s in waits[:EXAMPLES]:
        batches = batches_of.get(s.wamid, set())
        out.append(
            {
                "id": s.wamid,
                "wait_s": round(wait, 3),
                "acked_s": round((s.acked or 0.0) - t0, 3),
                "posts": [
                    (p.batch_id[:8], p.attempt, round(p.arrived - t0, 3), p.status)
                    for p in posts
                    if p.batch_id in batches
                    or (p.chat_id == s.chat_id and s.wamid in p.message_ids)
                ],
            }
        )
    return out


def _cause(faults: list[Fault], at: float, timing: Timing) -> str:
    """The latest fault whose window (start .. end + lease + recovery) holds ``at``."""
    slack = timing.lease_s + timing.recovery_window_s
    hits = [f for f in faults if f.start - 0.5 <= at <= f.end + slack]
    return max(hits, key=lambda f: f.start).kind if hits else "unattributed"


def _duplicates(
    ok: list[Received],
    first_ok: dict[str, Received],
    ok_count: Counter[str],
    faults: list[Fault],
    timing: Timing,
    t0: float,
) -> Counter[str]:
    causes: Counter[str] = Counter()
    for batch_id, n in ok_count.items():
        if n > 1:
            first = first_ok[batch_id]
            causes[_cause(faults, first.answered or first.arrived, timing)] += n - 1
    return causes


def _lag(
    first_ok: dict[str, Received],
    first_arrival: dict[str, float],
    by_id: dict[str, Sent],
    faults: list[Fault],
    timing: Timing,
) -> dict[str, Any]:
    active = [(f.start, f.end) for f in faults]
    recovering = [(f.end, f.end + timing.recovery_window_s) for f in faults]
    classes: dict[str, list[float]] = {"all": [], "during_faults": [], "recovery": [], "calm": []}
    for batch_id, post in first_ok.items():
        acks = [s.acked for i in post.message_ids if (s := by_id.get(i)) and s.acked is not None]
        if not acks:
            continue
        deadline = max(acks) + timing.idle_s
        arrival = first_arrival[batch_id]
        lag = arrival - deadline
        classes["all"].append(lag)
        if _overlaps(deadline, arrival, active):
            classes["during_faults"].append(lag)
        elif _overlaps(deadline, arrival, recovering):
            classes["recovery"].append(lag)
        else:
            classes["calm"].append(lag)
    return {k: _stats(v) for k, v in classes.items()}


def _recovery(
    sent: list[Sent],
    acked: list[Sent],
    delivered_at: dict[str, float],
    ok: list[Received],
    faults: list[Fault],
    timing: Timing,
) -> dict[str, Any]:
    """Per fault, from its end: the first acknowledgement, the first delivery, and
    when the backlog it caused was drained (every message acknowledged from just
    before the fault began until its end is at the bot). Per kind, also the
    messages first sent from a fault's start until ``recovery_window_s`` after
    its end (``sent_around``): proof that the fault met traffic, whatever the
    machine's speed, even for a fault that lasts a few milliseconds."""
    first_sent = sorted(s.first_sent for s in sent)
    ack_times = sorted(s.acked for s in acked if s.acked is not None)
    ok_times = sorted(p.answered for p in ok if p.answered is not None)
    by_ack = sorted(acked, key=lambda s: s.acked or 0.0)
    ack_keys = [s.acked or 0.0 for s in by_ack]
    lead_s = timing.idle_s + timing.forward_timeout_s  # what was on its way at the start
    per_kind: dict[str, dict[str, Any]] = {}
    for f in faults:
        e = f.end
        i = bisect.bisect_left(ack_times, e)
        j = bisect.bisect_left(ok_times, e)
        exposed = by_ack[
            bisect.bisect_left(ack_keys, f.start - lead_s) : bisect.bisect_right(ack_keys, e)
        ]
        last = max((delivered_at.get(s.wamid, math.inf) for s in exposed), default=e)
        row = per_kind.setdefault(
            f.kind,
            {"count": 0, "sent_around": 0, "duration_s": [], "first_ack_s": [],
             "first_delivery_s": [], "backlog_drained_s": []},
        )  # fmt: skip
        row["count"] += 1
        row["sent_around"] += bisect.bisect_right(
            first_sent, e + timing.recovery_window_s
        ) - bisect.bisect_left(first_sent, f.start)
        row["duration_s"].append(e - f.start)
        row["first_ack_s"].append(ack_times[i] - e if i < len(ack_times) else math.inf)
        row["first_delivery_s"].append(ok_times[j] - e if j < len(ok_times) else math.inf)
        row["backlog_drained_s"].append(max(0.0, last - e))
    out: dict[str, Any] = {}
    for kind, row in sorted(per_kind.items()):
        out[kind] = {"count": row["count"], "sent_around": row["sent_around"]}
        for key in ("duration_s", "first_ack_s", "first_delivery_s", "backlog_drained_s"):
            vals = row[key]
            out[kind][key] = {
                "max": _round(max(vals)),
                "mean": _round(sum(vals) / len(vals)),
            }
    return out


def _round(v: float) -> float | None:
    return None if math.isinf(v) else round(v, 3)
