"""Real ``batcher serve`` processes for the chaos soak and the end-to-end
tests: started on a fixed port (kept across restarts), with a clean
``BATCHER_*`` environment, logging to a file, dying with their parent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from service.store.embedded import _pdeathsig_preexec, free_port


class ServiceProc:
    """One ``python -m service.cli serve`` child on a fixed port (kept across restarts)."""

    def __init__(
        self,
        name: str,
        env: dict[str, str],
        log_path: Path,
        cwd: Path,
        args: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.args = tuple(args)  # after ``serve``, e.g. ("--workers", "2")
        self.env = env
        self.log_path = log_path
        self.cwd = cwd
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.exit_codes: list[int] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHER_")}
        env.update(self.env, BATCHER_PORT=str(self.port), BATCHER_HOST="127.0.0.1")
        with self.log_path.open("ab") as log:
            log.write(f"----- start #{self.starts + 1} at {time.time():.3f} -----\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "service.cli", "serve", *self.args],
                cwd=self.cwd,  # no stray .env is read
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_pdeathsig_preexec(),  # dies with the harness, whatever happens
            )
        self.starts += 1

    async def wait_ready(self, client: httpx.AsyncClient, timeout_s: float = 60.0) -> None:
        """Poll ``GET /readyz`` until 200."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise RuntimeError(
                    f"{self.name} exited ({code}) during start-up:\n{self.log_tail()}"
                )
            try:
                if (await client.get(self.url + "/readyz", timeout=2.0)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not ready after {timeout_s}s:\n{self.log_tail()}")
            await asyncio.sleep(0.05)

    async def signal_and_wait(self, sig: signal.Signals, timeout_s: float = 30.0) -> int:
        """Send ``sig`` and wait for the exit (off the event loop); SIGKILL on timeout."""
        proc = self.proc
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            code = await asyncio.to_thread(proc.wait, timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = await asyncio.to_thread(proc.wait, 10)
        self.exit_codes.append(code)
        return code

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            await self.signal_and_wait(signal.SIGTERM, 30.0)

    def stop_now(self) -> None:
        """SIGTERM and wait, off any event loop (teardown); SIGKILL if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 80) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def events(self, name: str) -> list[dict[str, Any]]:
        """The JSON log lines (``BATCHER_LOG_FORMAT=json``) of one event."""
        out = []
        for line in self.log_text().splitlines():
            with contextlib.suppress(ValueError):
                doc = json.loads(line)
                if isinstance(doc, dict) and doc.get("event") == name:
                    out.append(doc)
        return out
