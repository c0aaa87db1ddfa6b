"""``batcher serve``: the HTTP app, listener, nudger and sweeper in one process.

With no ``BATCHER_REDIS_URL`` it first starts an embedded Redis-compatible
server (data under ``BATCHER_DATA_DIR``), on the main thread, so that the
server dies with this process.

With ``--workers N`` (``BATCHER_WORKERS``) above 1 this process is uvicorn's
supervisor of N worker processes on the one port, each with its own app and
engine (``worker_app``); the engines share the buckets between them
(``service/engine/ownership.py``) as separate services would.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import logging
import multiprocessing
import os
import signal
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr
from rich.console import Console

from service.cli import runtime
from service.cli.setup import with_settings
from service.errors import BatcherError
from service.logs import emit
from service.settings import MAX_WORKERS, Settings

if TYPE_CHECKING:
    from starlette.applications import Starlette

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve", help="run the service (embedded Redis when BATCHER_REDIS_URL is unset)"
    )
    p.add_argument(
        "--workers",
        type=_worker_count,
        metavar="N",
        help="worker processes on the one port, each with its own engine "
        "(default: BATCHER_WORKERS, else 1)",
    )
    p.set_defaults(run=with_settings(run_serve))


def _worker_count(value: str) -> int:
    """``--workers``: an int within Settings.workers' limits."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 1 <= n <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"{n} is not between 1 and {MAX_WORKERS}")
    return n


def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Everything that can be refused is refused before anything starts: the
    settings, the handler, the HTTP port, the data directory's lock."""
    if getattr(args, "workers", None) is not None:
        settings = settings.model_copy(update={"workers": args.workers})
    problem = settings.serving_problem()
    if problem is not None:
        raise BatcherError(f"batcher serve: {problem}")
    with contextlib.ExitStack() as stack:
        if settings.redis_url is None:  # the embedded server: its data directory first
            stack.enter_context(runtime.hold(Path(settings.data_dir).absolute()))
        if settings.handler:
            from service.engine.handlers import load_handler

            # The current directory is importable, as for `python -m`.
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            load_handler(settings.handler)
        ensure_port_free(settings.host, settings.port)
        with redis_url_for(settings) as url:
            serve(settings, url)
    return 0


def ensure_port_free(host: str, port: int) -> None:
    """Refuse a busy HTTP port now, not after Redis and the checks have run."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise BatcherError(f"batcher serve: cannot listen on {host}:{port}: {exc}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise BatcherError(
                f"batcher serve: {host}:{port} is busy ({exc.strerror}); stop what "
                "listens there or set BATCHER_PORT"
            ) from None


@contextmanager
def redis_url_for(settings: Settings) -> Iterator[str]:
    """BATCHER_REDIS_URL, or the URL of an embedded server started (and
    stopped) here, on the main thread so that it dies with this process. The
    embedded server's data directory is locked first and the running server
    recorded in it, for the other commands to find (``runtime.py``)."""
    if settings.redis_url is not None:
        yield settings.redis_url.get_secret_value()
        return
    from service.store.embedded import RedisServer, find_server_binary

    data_dir = Path(settings.data_dir).absolute()  # held by run_serve (runtime.hold)
    binary = find_server_binary(settings.redis_server)
    server = RedisServer(binary, data_dir=data_dir / "redis")
    server.start()
    runtime.record(data_dir, server.url, server.pid)
    emit(log, "embedded", server=binary.name, url=server.url, data=str(server.data_dir))
    _print_next_steps(data_dir)
    try:
        yield server.url
    finally:
        server.stop()
        emit(log, "embedded_stopped", server=binary.name, url=server.url)


def _print_next_steps(data_dir: Path) -> None:
    """The other commands find this server by themselves while it runs."""
    here = "" if data_dir == Path.cwd() / ".batcher" else f"BATCHER_DATA_DIR={data_dir} "
    Console(stderr=True, highlight=False).print(
        "[dim]in another terminal of this directory:[/]\n"
        f"  {here}uv run batcher check\n"
        f"  {here}uv run batcher watch\n"
        f"  {here}uv run batcher show <chat id>\n"
        f"  {here}uv run batcher dead list",
        soft_wrap=True,
    )


async def _preflight(url: str, settings: Settings) -> None:
    """The start-up checks, before uvicorn: a refusal is a clear error, exit 2."""
    from service.store.checks import ensure_primaries_ready
    from service.store.connections import connect

    redis = await connect(url, settings.redis_cluster)
    try:
        await ensure_primaries_ready(redis, url, settings)
    finally:
        await redis.aclose()


def serve(settings: Settings, url: str) -> None:
    """The HTTP app under uvicorn (uvloop and httptools when installed)."""
    import uvicorn

    from service.web.app import create_app

    environment = worker_environment(settings, url)
    settings = settings.model_copy(update={"redis_url": SecretStr(url)})
    asyncio.run(_preflight(url, settings))
    if settings.workers > 1:
        serve_workers(settings, environment)
        return
    app = create_app(settings, log_checks=False)
    _emit_started(settings)
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again
    # with the handler it found: make that one a no-op, so that we return and
    # stop the embedded server cleanly (exit status 0).
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    # Everything imported so far lives as long as the process: keep it out of
    # the collector's full passes (they would walk it on every gen-2 pass).
    gc.freeze()
    uvicorn.run(app, **uvicorn_options(settings))


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """How uvicorn serves, in one process or as N workers: our logging, no access log."""
    return {
        "host": settings.host,
        "port": settings.port,
        "loop": "auto",
        "http": "auto",
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": 15,
    }


def _emit_started(settings: Settings) -> None:
    emit(
        log,
        "started",
        url=f"http://{settings.host}:{settings.port}",
        workers=settings.workers,
        idle_ms=settings.idle_ms,
        max_wait_ms=settings.max_wait_ms,
        max_messages=settings.max_messages,
        redis=settings.redis_url_display,
    )


# --- --workers N ---------------------------------------------------------------------------


def worker_environment(settings: Settings, url: str) -> dict[str, str]:
    """What the worker processes need in their environment to read the
    settings this process serves with (they load ``Settings`` again): the
    Redis URL (the embedded server's when it runs), the worker count given
    by ``--workers``, and the log level chosen for an embedded server."""
    environment = {"BATCHER_REDIS_URL": url, "BATCHER_WORKERS": str(settings.workers)}
    if settings.log_level is None:  # as configure() chose it, before the URL was set
        environment["BATCHER_LOG_LEVEL"] = "DEBUG" if settings.redis_url is None else "INFO"
    return environment


def serve_workers(settings: Settings, environment: dict[str, str]) -> None:
    """uvicorn's supervisor of ``settings.workers`` processes, on one socket
    bound here. It returns once they have all ended (SIGTERM or SIGINT here:
    it SIGTERMs them and waits, each one shutting down gracefully); a worker
    whose start-up failed stops them all and exits 3, as one process does."""
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    os.environ.update(environment)  # before any worker is spawned
    config = uvicorn.Config(
        f"{__name__}:worker_app",
        factory=True,
        workers=settings.workers,
        **uvicorn_options(settings),
    )
    supervisor = Multiprocess(config, sockets=[config.bind_socket()])  # its signal handlers
    _emit_started(settings)
    supervisor.run()
    if any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes):
        raise SystemExit(STARTUP_FAILURE)


def worker_app() -> Starlette:
    """The app of one worker process (uvicorn calls this factory in each
    process it spawns): the settings serve put in the environment, logging
    set up as serve's, the start-up checks already run by the supervisor."""
    from service.cli.setup import configure
    from service.web.app import create_app

    _die_with_supervisor()
    app = create_app(configure(), log_checks=False)
    gc.freeze()  # as serve does: what is imported by now lives as long as the process
    return app


def _die_with_supervisor() -> None:
    """Linux: the kernel SIGTERMs this worker when its supervisor dies, even
    SIGKILLed (as the embedded server is, ``embedded._pdeathsig_preexec``)."""
    parent = multiprocessing.parent_process()
    if sys.platform != "linux" or parent is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PDEATHSIG
    if os.getppid() != parent.pid:  # the supervisor died before prctl took effect
        os._exit(1)
