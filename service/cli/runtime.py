"""The data directory of ``batcher serve`` on the embedded server: a lock, and
a record of the running server that the other commands find it by.

``serve`` takes an exclusive ``flock`` on ``<data_dir>/serve.lock`` before it
starts anything and holds it for its whole life (the kernel drops it when the
process dies, however it dies): a second ``serve`` on the same directory is
refused at once, naming the holder's pid, instead of starting a second Redis
on the same AOF files. Once the server is up, ``serve`` writes its URL and
pids to ``<data_dir>/server.json``. ``check``, ``watch``, ``show``, ``dead``
and the chat actions use that URL when no other is given, but only while the
lock is held: a record left behind by a crash is never trusted.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from service.errors import BatcherError

LOCK_FILE = "serve.lock"
RECORD_FILE = "server.json"


class DataDirBusy(BatcherError):
    """Another ``batcher serve`` holds the data directory."""


@dataclass(frozen=True, slots=True)
class Running:
    """What ``serve`` recorded about its embedded server."""

    url: str
    serve_pid: int
    server_pid: int | None
    data_dir: Path


@contextlib.contextmanager
def hold(data_dir: Path) -> Iterator[Path]:
    """Hold the data directory's lock, or raise ``DataDirBusy`` at once."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise DataDirBusy(
                f"{data_dir} is in use by another batcher serve (pid {holder}); stop it, "
                "or give this one its own BATCHER_DATA_DIR"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield data_dir
        finally:
            with contextlib.suppress(FileNotFoundError):
                (data_dir / RECORD_FILE).unlink()
    finally:
        os.close(fd)  # releases the lock


def record(data_dir: Path, url: str, server_pid: int | None) -> None:
    """Note the running server (called while holding the lock)."""
    doc = {"url": url, "serve_pid": os.getpid(), "server_pid": server_pid}
    tmp = data_dir / f".{RECORD_FILE}.tmp"
    tmp.write_text(json.dumps(doc) + "\n", encoding="utf-8")
    tmp.replace(data_dir / RECORD_FILE)


def find_running(data_dir: Path) -> Running | None:
    """The server a live ``serve`` recorded in ``data_dir``, else None."""
    lock, path = data_dir / LOCK_FILE, data_dir / RECORD_FILE
    if not lock.is_file() or not path.is_file() or not _locked(lock):
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return Running(str(doc["url"]), int(doc["serve_pid"]), doc.get("server_pid"), data_dir)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _locked(lock: Path) -> bool:
    """Whether some process holds the lock (probed without keeping it)."""
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
