"""Logging set-up for the command line (the library itself only emits).

``rich``: one aligned, coloured line per event, for people::

    16:49:45.269  + appended     web:42              size=2  flush in 1.0s  max wait 59.0s
    16:49:46.274  > claimed      web:42              2 msgs  idle  open 1.0s  lag 6ms
    16:49:46.279  ✓ delivered    web:42              2 msgs  in 3ms

``json``: one JSON object per line with the same fields, for log shippers.
Per-message lines (``appended``, ``duplicate``) are DEBUG: shown in
development (embedded server), quiet in production unless asked for.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.text import Text

# Attributes every LogRecord has; anything else was passed with ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

CHAT_WIDTH = 22

# event -> (glyph, style)
STYLES: dict[str, tuple[str, str]] = {
    "appended": ("+", "cyan"),
    "duplicate": ("=", "dim"),
    "typing": ("…", "dim cyan"),
    "paused": ("…", "dim"),
    "edited": ("~", "cyan"),
    "revoked": ("-", "cyan"),
    "emptied": ("-", "cyan"),
    "rejected": ("✗", "yellow"),
    "provider_error": ("!", "yellow"),
    "claimed": (">", "blue"),
    "delivered": ("✓", "green"),
    "batch": ("»", "bold green"),
    "failed": ("!", "yellow"),
    "dead": ("✗", "bold red"),
    "recovering": ("↺", "magenta"),
    "redelivering": ("↺", "magenta"),
    "lease_lost": ("!", "yellow"),
    "subscribed": ("~", "green"),
    "listener_lost": ("~", "yellow"),
    "redis_retry": ("!", "yellow"),
    "check": ("✓", "white"),  # the glyph and style follow the check's status
    "embedded": ("*", "white"),
    "embedded_stopped": ("*", "white"),
    "refused": ("✗", "yellow"),
    "admin": ("#", "magenta"),
    "ownership": ("⇄", "blue"),
    "topology": ("~", "blue"),
    "started": ("*", "bold white"),
}


def clean(value: object, *, newlines: bool = False) -> Text:
    """Outside text, never parsed as markup, control characters made visible:
    no escape sequence in a chat id or a message reaches the terminal."""
    keep = "\n\t" if newlines else ""
    return Text("".join(c if c.isprintable() or c in keep else repr(c)[1:-1] for c in str(value)))


def plural(n: Any, word: str) -> str:
    """``1 message``, ``2 messages``."""
    return f"{n} {word}" if str(n) == "1" else f"{n} {word}s"


def batch_text(
    chat: str, seq: Any, texts: list[str], reason: str, attempt: Any = 1, *, stamp: str = ""
) -> Text:
    """A batch handed to the bot, in the console's one style: an event line,
    then one indented line per message. ``serve`` (the default handler) and
    ``demo`` both print batches this way."""
    line = Text(stamp + "  " if stamp else "", style="dim")
    glyph, style = STYLES["batch"]
    line.append(f"{glyph} {'batch':<12} ", style=style)
    line.append(f"{shorten(chat):<{CHAT_WIDTH}}  ", style="bold")
    line.append(f"#{seq}  {plural(len(texts), 'message')}  {reason}")
    if str(attempt) != "1":
        line.append(f"  attempt {attempt}", style="yellow")
    indent = " " * (len(stamp) + 2 if stamp else 0) + "  "
    for text in texts:
        line.append(f"\n{indent}• ", style="dim")
        line.append(text)
    return line


CHECK_STYLES = {"ok": ("✓", "green"), "warn": ("!", "yellow"), "fail": ("✗", "bold red")}


def shorten(text: str, width: int = CHAT_WIDTH) -> str:
    """``wa:105512345678:447700900123`` -> ``wa:1055123…47700900123``."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return text[:head] + "…" + text[-(width - 1 - head) :]


def duration(ms: Any) -> str:
    """A span of time for people, from milliseconds (sign dropped):
    ``5ms``, ``2.4s``, ``1m05s``, ``2h03m``, ``3d04h``."""
    ms = abs(float(ms))
    if ms < 1000:
        return f"{ms:.0f}ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f}s"
    for unit_ms, unit, sub_ms, sub in (
        (86_400_000, "d", 3_600_000, "h"),
        (3_600_000, "h", 60_000, "m"),
        (60_000, "m", 1000, "s"),
    ):
        if ms >= unit_ms:
            return f"{int(ms // unit_ms)}{unit}{int(ms % unit_ms // sub_ms):02d}{sub}"
    raise AssertionError("unreachable")  # pragma: no cover


def _fields(event: str, f: dict[str, Any]) -> str:
    """The human part of an event line; unknown fields fall back to k=v."""
    known: dict[str, Callable[[dict[str, Any]], str]] = {
        "appended": lambda f: (
            f"size={f['size']}  flush in {duration(f['flush_in_ms'])}"
            f"  max wait {duration(f['max_wait_left_ms'])}"
        ),
        "duplicate": lambda f: f"id={f['id']}",
        "typing": lambda f: f"typing  flush in {duration(f['flush_in_ms'])}",
        "paused": lambda f: f"stopped typing  flush in {duration(f['flush_in_ms'])}",
        "edited": lambda f: f"id={f['id']}  size={f['size']}",
        "revoked": lambda f: f"id={f['id']}  size={f['size']}",
        "ownership": lambda f: (
            f"{plural(f['buckets'], 'bucket')} of {plural(f['processes'], 'process')}'s share"
            f"  (+{f['gained']} -{f['lost']})"
        ),
        "emptied": lambda f: f"id={f['id']}  the open batch is gone, nothing to deliver",
        "claimed": lambda f: (
            f"{plural(f['size'], 'message')}  {f['reason']}  open {duration(f['open_ms'])}"
            f"  lag {duration(f['lag_ms'])}"
        ),
        "delivered": lambda f: f"{plural(f['size'], 'message')}  in {duration(f['duration_ms'])}",
        "failed": lambda f: (
            f"attempt {f['attempt']} of {f['max_attempts']}, next in "
            f"{duration(f['retry_in_ms'])}: {f['error']}"
        ),
        "dead": lambda f: f"after {f['attempts']} attempts: {f['error']}",
        "recovering": lambda f: f"({f['why']})",
        "redelivering": lambda f: f"attempt {f['attempt']} ({f['why']})",
        "check": lambda f: (
            f"{f['check']:<17} {str(f['status']).upper():<4}  {f['detail']}"
            + (f"  (redis.conf: {f['fix']})" if f.get("fix") else "")
        ),
    }
    render = known.get(event)
    if render is not None:
        try:
            return render(f)
        except (KeyError, TypeError, ValueError):
            pass
    return "  ".join(f"{k}={v}" for k, v in f.items() if k not in ("chat", "batch"))


class EventHandler(logging.Handler):
    """Renders records as aligned, coloured lines on a rich console."""

    def __init__(self, console: Console | None = None) -> None:
        super().__init__()
        self.console = console or Console(stderr=True, soft_wrap=True)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.console.print(self.render(record), soft_wrap=True, highlight=False)
        except Exception:
            self.handleError(record)

    def render(self, record: logging.LogRecord) -> Text:
        stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        line = Text(stamp + "  ", style="dim")
        event = getattr(record, "event", None)
        fields: dict[str, Any] = getattr(record, "fields", {}) or {}
        if event is None:
            style = (
                "red"
                if record.levelno >= logging.ERROR
                else ("yellow" if record.levelno >= logging.WARNING else "white")
            )
            line.append(f"{record.levelname.lower():<14}", style=style)
            line.append(record.getMessage())
            if record.exc_info:
                line.append("\n" + logging.Formatter().formatException(record.exc_info))
            return line
        if event == "batch":
            return batch_text(
                str(fields.get("chat")), fields.get("seq"), list(fields.get("texts") or []),
                str(fields.get("reason")), fields.get("attempt", 1), stamp=stamp,
            )  # fmt: skip
        glyph, style = STYLES.get(event, ("·", "white"))
        if event == "check":
            glyph, style = CHECK_STYLES.get(str(fields.get("status")), (glyph, style))
        line.append(f"{glyph} {event:<12} ", style=style)
        chat = fields.get("chat")
        line.append(
            f"{shorten(str(chat)) if chat is not None else '':<{CHAT_WIDTH}}  ", style="bold"
        )
        line.append(_fields(event, fields))
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        event = getattr(record, "event", None)
        if event is not None:
            doc["event"] = event
            doc.update(getattr(record, "fields", {}) or {})
        doc["msg"] = record.getMessage()
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in ("event", "fields") and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


def setup_logging(
    fmt: str = "rich",
    level: str = "INFO",
    *,
    service_level: str | None = None,
    console: Console | None = None,
) -> None:
    """Route all logging to one handler; ``service_level`` sets this package's loggers."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler: logging.Handler
    if fmt == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    else:
        handler = EventHandler(console)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("service").setLevel((service_level or level).upper())
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per forward is noise
