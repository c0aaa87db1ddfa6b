"""The soak's verdict is only as good as its reconciliation: check that it sees
each kind of failure in small hand-made records (no Redis, no processes)."""

from __future__ import annotations

import json

from service.tooling.chaos.driver import Sent
from service.tooling.chaos.faults import Fault
from service.tooling.chaos.report import Leftovers, Timing, reconcile
from service.tooling.sink import Received

TIMING = Timing(idle_s=0.3, forward_timeout_s=1.0, lease_s=3.0, recovery_window_s=2.0)
CHAT = "wa:1:555"


def msgs(n: int, chat: str = CHAT, acked_from: float = 1.0) -> list[Sent]:
    return [
        Sent(f"{chat}.m{i}", chat, i, acked_from + i * 0.1, acked_from + i * 0.1) for i in range(n)
    ]


def post(batch: str, ids: list[str], arrived: float, answered: float | None = None,
         status: int | None = 200, chat: str = CHAT) -> Received:  # fmt: skip
    doc = {"batch_id": batch, "chat_id": chat, "attempt": 1,
           "messages": [{"id": i, "text": None} for i in ids]}  # fmt: skip
    return Received(
        n=0, path="/hook", headers={}, body=json.dumps(doc).encode(), json=doc,
        signature_valid=True, arrived=arrived, status=status,
        answered=answered if answered else arrived + 0.01,
    )  # fmt: skip


def run(sent: list[Sent], posts: list[Received], faults: list[Fault] | None = None,
        left: Leftovers | None = None) -> dict:  # fmt: skip
    return reconcile(sent, posts, faults or [], left or Leftovers(), TIMING, 0.0)


def test_clean_run_passes_and_measures_lag() -> None:
    m = msgs(4)
    posts = [post("b1", [m[0].wamid, m[1].wamid], 1.45), post("b2", [m[2].wamid, m[3].wamid], 1.65)]
    r = run(m, posts)
    assert r["verdict"] == "PASS"
    assert r["messages"]["acknowledged"] == r["messages"]["delivered"] == 4
    assert r["messages"]["lost"] == r["order_violations"] == r["overlaps"] == 0
    assert r["batches"]["duplicate_deliveries"] == 0
    # b1: last ack 1.1 + idle 0.3 -> deadline 1.4, arrived 1.45: 50 ms
    assert r["lag_ms"]["calm"]["n"] == 2 and r["lag_ms"]["calm"]["max"] == 50


def test_a_missing_acknowledged_message_is_lost_unless_dead_lettered() -> None:
    m = msgs(3)
    posts = [post("b1", [m[0].wamid, m[1].wamid], 1.5)]
    r = run(m, posts, left=Leftovers(where={m[2].wamid: "buf"}))
    assert r["verdict"] == "FAIL"
    assert r["messages"]["lost"] == 1 and r["messages"]["lost_where"] == {"buf": 1}
    dead = Leftovers(dead={"b2": {"ids": [m[2].wamid], "error": "HTTP 500"}})
    r = run(m, posts, left=dead)
    assert r["verdict"] == "PASS" and r["messages"]["dead_lettered"] == 1


def test_unacknowledged_messages_need_not_arrive() -> None:
    m = msgs(2)
    m[1].acked = None
    r = run(m, [post("b1", [m[0].wamid], 1.5)])
    assert r["verdict"] == "PASS" and r["messages"]["never_acknowledged"] == 1


def test_order_violations_within_and_across_batches() -> None:
    m = msgs(4)
    inside = [post("b1", [m[1].wamid, m[0].wamid], 1.5), post("b2", [m[2].wamid, m[3].wamid], 2)]
    assert run(m, inside)["order_violations"] == 1
    across = [post("b2", [m[2].wamid, m[3].wamid], 1.5), post("b1", [m[0].wamid, m[1].wamid], 2)]
    r = run(m, across)
    assert r["order_violations"] == 2 and r["verdict"] == "FAIL"


def test_overlapping_batches_of_one_chat() -> None:
    m = msgs(2)
    # b2 arrives while b1 is still unanswered (answered at 2.0)
    posts = [post("b1", [m[0].wamid], 1.5, answered=2.0), post("b2", [m[1].wamid], 1.8)]
    r = run(m, posts)
    assert r["overlaps"] == 1 and r["verdict"] == "FAIL"
    # a hung POST is open only until the service's forward timeout (1 s)
    posts = [post("b1", [m[0].wamid], 1.5, answered=9.0, status=503),
             post("b1", [m[0].wamid], 2.6), post("b2", [m[1].wamid], 2.7)]  # fmt: skip
    assert run(m, posts)["overlaps"] == 0
    # other chats never overlap with this one
    other = msgs(1, chat="wa:1:777")
    posts = [post("b1", [m[0].wamid], 1.5, answered=2.0), post("c1", [other[0].wamid], 1.6,
             chat="wa:1:777"), post("b2", [m[1].wamid], 2.1)]  # fmt: skip
    assert run(m + other, posts)["overlaps"] == 0


def test_redeliveries_are_counted_and_attributed_splits_fail() -> None:
    m = msgs(2)
    kill = Fault("svc_kill", start=1.45, end=3.0, target="svc0")
    posts = [post("b1", [m[0].wamid, m[1].wamid], 1.5), post("b1", [m[0].wamid, m[1].wamid], 4.6)]
    r = run(m, posts, faults=[kill])
    assert r["verdict"] == "PASS"
    assert r["batches"]["duplicate_deliveries"] == 1
    assert r["batches"]["duplicate_causes"] == {"svc_kill": 1}
    assert r["lag_ms"]["during_faults"]["n"] == 1
    split = [post("b1", [m[0].wamid], 1.5), post("b2", [m[0].wamid, m[1].wamid], 2.0)]
    r = run(m, split)
    assert r["messages"]["in_two_batches"] == 1 and r["verdict"] == "FAIL"


def test_late_redelivery_after_the_next_batch_is_reported() -> None:
    m = msgs(2)
    posts = [post("b1", [m[0].wamid], 1.5), post("b2", [m[1].wamid], 2.0),
             post("b1", [m[0].wamid], 5.0)]  # fmt: skip
    r = run(m, posts)
    assert r["batches"]["late_redeliveries"] == 1
    assert r["order_violations"] == 0  # order is judged on each batch's first delivery


def test_recovery_figures() -> None:
    m = msgs(3, acked_from=1.0)  # acked at 1.0, 1.1, 1.2
    fault = Fault("sink_fail", start=0.5, end=1.15)
    posts = [post("b1", [m[0].wamid, m[1].wamid], 1.5, answered=1.6), post("b2", [m[2].wamid], 2.0)]
    row = run(m, posts, faults=[fault])["recovery"]["sink_fail"]
    assert row["count"] == 1
    assert row["sent_around"] == 3  # first sent at 1.0, 1.1, 1.2: from 0.5 to 1.15 + 2 s
    assert row["first_ack_s"]["max"] == 0.05  # 1.2 - 1.15
    assert row["first_delivery_s"]["max"] == 0.45  # 1.6 - 1.15
    assert row["backlog_drained_s"]["max"] == 0.45  # everything acked by 1.15 was in by 1.6
