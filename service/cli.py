"""The ``batcher`` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

from pydantic import SecretStr, ValidationError
from redis.asyncio import Redis
from rich.console import Console

from .bench_cli import add_bench_parser, run_bench
from .chaos import add_chaos_parser, run_chaos
from .checks import ensure_ready
from .connections import create_redis
from .console import setup_logging
from .dead import add_dead_parser, run_dead
from .demo import add_demo_parser, run_demo
from .embedded import EmbeddedRedisError
from .errors import BatcherError
from .events import emit
from .settings import Settings
from .watch import add_watch_parser, run_watch

log = logging.getLogger("service.cli")


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        lines = []
        for e in exc.errors():
            name = "_".join(map(str, e["loc"])).upper()
            msg = str(e["msg"]).removeprefix("Value error, ")
            lines.append(f"  BATCHER_{name}: {msg}" if name else f"  {msg}")
        raise SystemExit("invalid configuration:\n" + "\n".join(lines)) from None


@contextlib.asynccontextmanager
async def redis_client(url: str) -> AsyncIterator[Redis]:
    client = create_redis(url)
    try:
        yield client
    finally:
        await client.aclose()


@contextlib.contextmanager
def redis_url_for(settings: Settings) -> Iterator[str]:
    """BATCHER_REDIS_URL, or the URL of an embedded server started (and
    stopped) here, on the main thread so that it dies with this process."""
    if settings.redis_url is not None:
        yield settings.redis_url.get_secret_value()
        return
    from .embedded import RedisServer, find_server_binary

    binary = find_server_binary(settings.redis_server)
    server = RedisServer(binary, data_dir=Path(settings.data_dir).absolute() / "redis")
    server.start()
    emit(log, "embedded", server=binary.name, url=server.url, data=str(server.data_dir))
    try:
        yield server.url
    finally:
        server.stop()


async def _preflight(url: str, settings: Settings) -> None:
    """The start-up checks, before uvicorn: a refusal is a clear error, exit 2."""
    async with redis_client(url) as redis:
        await ensure_ready(redis, settings)


def serve(settings: Settings, url: str) -> None:
    """The HTTP app under uvicorn (uvloop and httptools when installed)."""
    import uvicorn

    from .app import create_app

    settings = settings.model_copy(update={"redis_url": SecretStr(url)})
    asyncio.run(_preflight(url, settings))
    app = create_app(settings)
    emit(
        log,
        "started",
        url=f"http://{settings.host}:{settings.port}",
        idle_ms=settings.idle_ms,
        max_wait_ms=settings.max_wait_ms,
        max_messages=settings.max_messages,
        redis=settings.redis_url_display,
    )
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again
    # with the handler it found: make that one a no-op, so that we return and
    # stop the embedded server cleanly (exit status 0).
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    # Everything imported so far lives as long as the process: keep it out of
    # the collector's full passes (they would walk it on every gen-2 pass).
    gc.freeze()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop="auto",
        http="auto",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=15,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="batcher",
        description="Batches rapid-fire chat messages per chat in Redis; delivers each "
        "batch once the chat has gone quiet.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "serve",
        help="run the service (embedded Redis when BATCHER_REDIS_URL is unset)",
    )
    sub.add_parser(
        "check",
        help="check the Redis at BATCHER_REDIS_URL; exit 0 OK, 1 warnings, 2 failures",
    )
    add_dead_parser(sub)
    add_watch_parser(sub)
    add_demo_parser(sub)
    add_bench_parser(sub)
    add_chaos_parser(sub)
    args = parser.parse_args(argv)
    settings = load_settings()
    if args.command == "bench":
        setup_logging(settings.log_format, "WARNING")
    else:
        # Development (embedded server): a line per message. Production: quiet.
        dev = settings.redis_url is None
        level = settings.log_level or ("DEBUG" if dev else "INFO")
        setup_logging(settings.log_format, "INFO", service_level=level)
    try:
        if args.command == "serve":
            problem = settings.serving_problem()
            if problem is not None:
                raise SystemExit(f"batcher serve: {problem}")
            with redis_url_for(settings) as url:
                serve(settings, url)
        elif args.command == "bench":
            sys.exit(run_bench(args))
        elif args.command == "chaos":
            sys.exit(run_chaos(args))
        elif args.command == "dead":
            sys.exit(run_dead(args, settings))
        elif args.command == "watch":
            sys.exit(run_watch(args, settings))
        elif args.command == "demo":
            sys.exit(run_demo(args, settings))
        elif args.command == "check":
            from .doctor import doctor

            sys.exit(asyncio.run(doctor(settings, Console(width=160))))
    except (BatcherError, EmbeddedRedisError) as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}")
        sys.exit(2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
