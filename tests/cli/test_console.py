"""The console's event lines (rendered output asserted) and the JSON format."""

from __future__ import annotations

import io
import json
import logging

import pytest
from rich.console import Console

from service.cli.console import (
    EventHandler,
    JsonFormatter,
    duration,
    plural,
    setup_logging,
    shorten,
)
from service.logs import emit


def render(event: str, **fields: object) -> str:
    record = logging.LogRecord("service.x", logging.INFO, "", 0, event, None, None)
    record.event = event
    record.fields = fields
    console = Console(record=True, width=160, file=io.StringIO(), color_system=None)
    console.print(EventHandler(console).render(record))
    return console.export_text()


def test_shorten_keeps_both_ends() -> None:
    assert shorten("wa:105512345678:447700900123", 22) == "wa:1055123…47700900123"
    assert len(shorten("x" * 100, 22)) == 22
    assert shorten("short") == "short"


@pytest.mark.parametrize(
    ("event", "fields", "expected"),
    [
        (
            "appended",
            {"chat": "web:42", "size": 2, "flush_in_ms": 1000, "max_wait_left_ms": 59000},
            "+ appended     web:42                  size=2  flush in 1.0s  max wait 59.0s",
        ),
        (
            "duplicate",
            {"chat": "web:42", "id": "wamid.1"},
            "= duplicate    web:42                  id=wamid.1",
        ),
        (
            "claimed",
            {
                "chat": "web:42",
                "batch": "b1",
                "size": 3,
                "reason": "idle",
                "open_ms": 2400,
                "lag_ms": 6,
            },
            "> claimed      web:42                  3 messages  idle  open 2.4s  lag 6ms",
        ),
        (
            "delivered",
            {"chat": "web:42", "batch": "b1", "size": 3, "duration_ms": 12.5, "lag_ms": 8},
            "✓ delivered    web:42                  3 messages  in 12ms",
        ),
        (
            "failed",
            {
                "chat": "c",
                "batch": "b",
                "attempt": 2,
                "max_attempts": 5,
                "retry_in_ms": 4000,
                "error": "HTTP 500",
            },
            "! failed       c                       attempt 2 of 5, next in 4.0s: HTTP 500",
        ),
        (
            "dead",
            {"chat": "c", "batch": "b", "attempts": 5, "error": "boom"},
            "✗ dead         c                       after 5 attempts: boom",
        ),
        (
            "recovering",
            {"chat": "c", "why": "overdue, no claim"},
            "↺ recovering   c                       (overdue, no claim)",
        ),
        (
            "subscribed",
            {"channel": "__keyevent@0__:expired", "reconnects": 1},
            "~ subscribed                           channel=__keyevent@0__:expired  reconnects=1",
        ),
    ],
)
def test_event_lines(event: str, fields: dict[str, object], expected: str) -> None:
    text = render(event, **fields)
    assert expected in text
    assert len(text.strip().splitlines()) == 1


def test_columns_align_across_events() -> None:
    a = render("appended", chat="a", size=1, flush_in_ms=1, max_wait_left_ms=1)
    b = render("delivered", chat="a-much-longer-chat-id-that-gets-shortened", size=1, duration_ms=1)
    assert a.index("size=") == b.index("1 message")


def test_json_lines_carry_the_same_fields(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("json", "INFO", service_level="DEBUG")
    try:
        emit(
            logging.getLogger("service.t"),
            "appended",
            chat="c",
            size=1,
            flush_in_ms=5,
            max_wait_left_ms=9,
        )
    finally:
        logging.getLogger().handlers.clear()
    doc = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert doc["event"] == "appended" and doc["chat"] == "c" and doc["size"] == 1
    assert doc["level"] == "debug"


def test_per_message_lines_are_quiet_at_info() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("service.quiet")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        emit(log, "appended", chat="c", size=1, flush_in_ms=1, max_wait_left_ms=1)
        emit(log, "delivered", chat="c", batch="b", size=1, duration_ms=1, lag_ms=1)
    finally:
        log.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert [json.loads(x)["event"] for x in lines] == ["delivered"]


@pytest.mark.parametrize(
    ("ms", "text"),
    [(5, "5ms"), (-999, "999ms"), (2_400, "2.4s"), (65_000, "1m05s"), (7_380_000, "2h03m"),
     (273_600_000, "3d04h")],
)  # fmt: skip
def test_one_duration_format_for_every_view(ms: float, text: str) -> None:
    assert duration(ms) == text


def test_a_batch_is_one_event_line_and_a_line_per_message() -> None:
    text = render("batch", chat="web:42", seq=3, reason="idle", attempt=1, texts=["hi", "<image>"])
    head, first, second = text.splitlines()
    assert head.endswith("» batch        web:42                  #3  2 messages  idle")
    assert first.strip() == "• hi" and second.strip() == "• <image>"
    assert first.index("•") == second.index("•") > head.index("»")
    one = render("batch", chat="c", seq=1, reason="manual", attempt=2, texts=["x"])
    assert "1 message  manual  attempt 2" in one


def test_plurals() -> None:
    assert [plural(n, "message") for n in (0, 1, 2)] == ["0 messages", "1 message", "2 messages"]
