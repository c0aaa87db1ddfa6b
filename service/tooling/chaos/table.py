"""The figures table of a chaos soak (``report.py`` computes them)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from service.tooling.chaos.faults import CLUSTER_KINDS, KINDS
from service.tooling.chaos.report import STALL_S


def _ms(v: Any) -> str:
    return "-" if v is None else f"{v:,} ms"


def _s(v: Any) -> str:
    return "never" if v is None else f"{v:.2f} s"


def render(report: dict[str, Any], console: Console) -> None:
    if "messages" not in report:
        console.print(f"[bold red]FAIL[/] rig error: {report.get('rig_error')}")
        return
    m, b, run = report["messages"], report["batches"], report.get("run", {})
    summary = Table(
        title=f"chaos soak, seed {run.get('seed')}, {run.get('minutes')} min of traffic, "
        f"{run.get('chats')} chats, wall {run.get('wall_s')} s"
    )
    summary.add_column("figure")
    summary.add_column("value", justify="right")
    bad = "bold red"
    rows: list[tuple[str, Any, bool]] = [
        ("messages sent", m["sent"], False),
        ("acknowledged (200)", m["acknowledged"], False),
        ("never acknowledged (gave up)", m["never_acknowledged"], False),
        ("acknowledged and delivered", m["delivered"], False),
        ("acknowledged and dead-lettered", m["dead_lettered"], False),
        ("LOST (acknowledged, nowhere)", m["lost"], m["lost"] > 0),
        ("  of which still in Redis / nowhere", _where(m["lost_where"]), m["lost"] > 0),
        ("delivered without an ack (fine)", m["delivered_unacknowledged"], False),
        ("ack -> bot wait, p99 / max", f"{m['wait_s']['p99']} s / {m['wait_s']['max']} s", False),
        (f"stalled (at the bot > {STALL_S:.0f} s after the ack)", m["stalled"], m["stalled"] > 0),
        ("message in two different batches", m["in_two_batches"], m["in_two_batches"] > 0),
        ("order violations", report["order_violations"], report["order_violations"] > 0),
        ("overlapping batches of a chat", report["overlaps"], report["overlaps"] > 0),
        ("batches delivered", b["delivered"], False),
        ("forward POSTs (ok / failed / hung)",
         f"{b['posts']} ({b['posts_ok']} / {b['posts_failed']} / {b['posts_hung']})", False),
        ("duplicate deliveries (same batch_id)", b["duplicate_deliveries"], False),
        ("  late redeliveries (after the next batch)", b["late_redeliveries"], False),
        ("dead-lettered batches", b["dead_lettered"], False),
        ("bad forward signatures", b["bad_signatures"], b["bad_signatures"] > 0),
        ("drained", f"{report['leftovers']['drained']} in {report['leftovers']['drain_s']} s",
         not report["leftovers"]["drained"]),
    ]  # fmt: skip
    for name, value, is_bad in rows:
        summary.add_row(name, f"[{bad}]{value}[/]" if is_bad else str(value))
    console.print(summary)

    if b["duplicate_causes"]:
        dups = Table(title="duplicate deliveries by cause (fault active around the first ack)")
        dups.add_column("cause")
        dups.add_column("duplicates", justify="right")
        for cause, n in sorted(b["duplicate_causes"].items(), key=lambda kv: -kv[1]):
            dups.add_row(cause, str(n))
        console.print(dups)

    lag = Table(title="flush lag = bot arrival - last ack - idle")
    for col in ("when", "batches", "p50", "p99", "max"):
        lag.add_column(col, justify="right" if col != "when" else "left")
    for when, st in report["lag_ms"].items():
        lag.add_row(when, str(st["n"]), _ms(st["p50"]), _ms(st["p99"]), _ms(st["max"]))
    console.print(lag)

    rec = Table(title="recovery after each fault (from its end; max over occurrences)")
    for col in ("fault", "n", "lasted", "first ack", "first delivery", "backlog drained"):
        rec.add_column(col, justify="left" if col == "fault" else "right")
    for kind, row in report["recovery"].items():
        rec.add_row(
            kind,
            str(row["count"]),
            _s(row["duration_s"]["max"]),
            _s(row["first_ack_s"]["max"]),
            _s(row["first_delivery_s"]["max"]),
            _s(row["backlog_drained_s"]["max"]),
        )
    console.print(rec)
    if report.get("fault_kinds_missing"):
        console.print(f"[yellow]fault kinds not injected:[/] {report['fault_kinds_missing']}")
    if report.get("injector_errors"):
        console.print(f"[yellow]injector errors:[/] {report['injector_errors']}")
    if m["stalled"]:
        console.print(f"[yellow]slowest deliveries:[/] {report.get('slowest')}")
    for key in ("lost_examples", "in_two_batches_examples"):
        if m.get(key):
            console.print(f"[{bad}]{key}:[/] {m[key]}")
    for key in ("order_examples", "overlap_examples"):
        if report.get(key):
            console.print(f"[{bad}]{key}:[/] {report[key]}")
    console.print(f"service events: {report.get('events')}")
    health = Table(title="service health (outside faults; loops: longest still counter)")
    for col in ("process", "not ready", "sweeper", "nudger", "listener", "workers"):
        health.add_column(col, justify="left" if col == "process" else "right")
    for name, row in report.get("health", {}).items():
        st = row["stalls"]
        health.add_row(
            name,
            f"{row['not_ready_outside_faults_s']} s",
            *(f"{st.get(k, 0)} s" for k in ("sweeper", "nudger", "listener", "workers")),
        )
    console.print(health)
    for flag in report.get("health_flags", []):
        console.print(f"[yellow]health:[/] {flag}")
    verdict = report["verdict"]
    style = "bold green" if verdict == "PASS" else bad
    order = list({**KINDS, **CLUSTER_KINDS})
    injected = sorted({f["kind"] for f in report.get("faults", [])}, key=order.index)
    console.print(f"[{style}]{verdict}[/]  (faults injected: {', '.join(injected) or 'none'})")


def _where(where: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(where.items())) or "-"
