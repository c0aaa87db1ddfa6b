"""The newcomer's first hour, as real processes in a fresh directory: one
``batcher serve`` on the embedded server, the other commands finding it with
no URL, a second ``serve`` refused at once, a broken handler refused with one
line, and the exit-status convention of every command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.store.embedded import free_port

HANDLER = """
import json
from pathlib import Path

from service import Batch


async def handle(batch: Batch) -> None:
    with Path("delivered.jsonl").open("a") as out:
        out.write(json.dumps({"chat": batch.chat_id, "texts": [m.text for m in batch.messages]}))
        out.write("\\n")
"""


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHER_")}
    return {**env, "COLUMNS": "200", "BATCHER_LOG_FORMAT": "json", **extra}


def batcher(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args], cwd=cwd, env=clean_env(**env),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def wait_ready(url: str, proc: subprocess.Popen[str], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError("serve never became ready:\n" + log.read_text())


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[tuple[Path, str, subprocess.Popen[str]]]:
    """``batcher serve`` on the embedded server in a fresh directory, with a
    handler module of that directory (``BATCHER_HANDLER=handler:handle``)."""
    (tmp_path / "handler.py").write_text(HANDLER)
    port = free_port()
    log = tmp_path / "serve.log"
    env = clean_env(BATCHER_PORT=str(port), BATCHER_IDLE_MS="200",
                    BATCHER_HANDLER="handler:handle")  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve"], cwd=tmp_path, env=env,
            stdout=out, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, log)
        yield tmp_path, f"http://127.0.0.1:{port}", proc
    finally:
        proc.terminate()
        proc.wait(20)


def test_the_other_commands_find_the_running_server(
    serving: tuple[Path, str, subprocess.Popen[str]],
) -> None:
    cwd, url, proc = serving
    r = httpx.post(url + "/v1/messages", json={"chat_id": "web:1", "id": "m1", "text": "hi"})
    assert r.status_code == 202
    delivered = cwd / "delivered.jsonl"
    deadline = time.monotonic() + 10
    while not delivered.exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # the handler's file is the only sign: poll it
    assert json.loads(delivered.read_text()) == {"chat": "web:1", "texts": ["hi"]}

    check = batcher(cwd, "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "notifications" in check.stdout
    watch = batcher(cwd, "watch", "--once")
    assert watch.returncode == 0, watch.stderr
    assert "open batches: 0" in watch.stdout and "dead letters: 0" in watch.stdout
    # Piped, nothing is cut at 80 columns: the header stays on one line.
    assert "(idle and max wait: this shell's settings)" in watch.stdout
    show = batcher(cwd, "show", "web:1", "--json")
    assert show.returncode == 0, show.stderr
    assert json.loads(show.stdout)["seq"] == 1  # one batch delivered
    dead = batcher(cwd, "dead", "list")
    assert (dead.returncode, dead.stdout.strip()) == (0, "no dead batches")

    # A second serve in the same directory: refused at once, no second Redis.
    started = time.monotonic()
    second = batcher(cwd, "serve", BATCHER_PORT=str(free_port()))
    took = time.monotonic() - started
    assert second.returncode == 2
    assert f"in use by another batcher serve (pid {proc.pid})" in " ".join(second.stderr.split())
    assert took < 3.0, f"took {took:.2f} s"  # about 1 s here, most of it interpreter start-up
    assert (cwd / ".batcher" / "redis" / "server.log").read_text().count("Ready to accept") == 1


def test_without_a_running_server_the_commands_say_what_to_do(tmp_path: Path) -> None:
    for args in (("check",), ("watch", "--once"), ("show", "c"), ("dead", "list"), ("flush", "c")):
        r = batcher(tmp_path, *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        line = " ".join(r.stderr.split())
        assert "no Redis to read" in line and "--redis-url" in line, (args, line)


def test_a_handler_that_cannot_be_loaded_is_one_line_and_exit_2(tmp_path: Path) -> None:
    r = batcher(tmp_path, "serve", BATCHER_HANDLER="no_such_module:handle",
                BATCHER_PORT=str(free_port()))  # fmt: skip
    assert r.returncode == 2, r.stdout + r.stderr
    text = " ".join(r.stderr.split())
    assert "BATCHER_HANDLER=no_such_module:handle: cannot import 'no_such_module'" in text
    assert "Traceback" not in r.stderr and "started" not in r.stderr
    assert not (tmp_path / ".batcher" / "redis").exists()  # nothing was started
    (tmp_path / "sync_handler.py").write_text("def handle(batch):\n    pass\n")
    r = batcher(tmp_path, "serve", BATCHER_HANDLER="sync_handler:handle",
                BATCHER_PORT=str(free_port()))  # fmt: skip
    assert r.returncode == 2 and "must be an 'async def' function" in " ".join(r.stderr.split())


def test_a_busy_http_port_is_refused_before_redis_starts(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = batcher(tmp_path, "serve", BATCHER_PORT=str(port))
    assert r.returncode == 2 and "is busy" in r.stderr
    assert not (tmp_path / ".batcher" / "redis").exists()
