"""The ``batcher`` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table

from .checks import run_checks
from .console import setup_logging
from .embedded import EmbeddedRedisError
from .errors import BatcherError
from .handlers import ConsoleHandler, Handler, load_handler
from .settings import Settings

log = logging.getLogger("service.cli")


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        lines = [
            f"  BATCHER_{'_'.join(map(str, e['loc'])).upper() or '?'}: {e['msg']}"
            for e in exc.errors()
        ]
        raise SystemExit("invalid configuration:\n" + "\n".join(lines)) from None


@contextlib.asynccontextmanager
async def redis_client(url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(url)
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
    log.info(
        "embedded Redis-compatible server %s at %s (data in %s)",
        binary.name,
        server.url,
        server.data_dir,
        extra={"event": "embedded", "url": server.url},
    )
    try:
        yield server.url
    finally:
        server.stop()


async def serve(settings: Settings, url: str) -> None:
    from .engine import Engine

    handler: Handler = load_handler(settings.handler) if settings.handler else ConsoleHandler()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with redis_client(url) as redis, Engine(redis, settings, handler):
        log.info(
            "batcher running: idle %dms, max wait %dms, max %d messages, redis %s",
            settings.idle_ms,
            settings.max_wait_ms,
            settings.max_messages,
            settings.redis_url_display,
            extra={"event": "started"},
        )
        await stop.wait()
        log.info("stopping", extra={"event": "stopping"})


async def check(settings: Settings, console: Console) -> int:
    if settings.redis_url is None:
        raise SystemExit("batcher check: set BATCHER_REDIS_URL to the server to check")
    async with redis_client(settings.redis_url.get_secret_value()) as redis:
        try:
            checks = await run_checks(redis, settings, fix=False)
        except (RedisError, OSError) as exc:
            console.print(f"[bold red]FAIL[/] cannot reach {settings.redis_url_display}: {exc}")
            return 2
    table = Table(title=f"Redis at {settings.redis_url_display}")
    for col in ("check", "status", "detail", "redis.conf fix"):
        table.add_column(col)
    style = {"ok": "green", "warn": "yellow", "fail": "bold red"}
    for c in checks:
        table.add_row(
            c.name,
            f"[{style[c.status]}]{c.status.upper()}[/]",
            c.detail,
            c.fix if c.status != "ok" else "",
        )
    console.print(table)
    if any(c.status == "fail" for c in checks):
        return 2
    return 1 if any(c.status == "warn" for c in checks) else 0


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
    args = parser.parse_args(argv)
    settings = load_settings()
    setup_logging(settings.log_format, settings.log_level)
    try:
        if args.command == "serve":
            with redis_url_for(settings) as url:
                asyncio.run(serve(settings, url))
        elif args.command == "check":
            sys.exit(asyncio.run(check(settings, Console())))
    except (BatcherError, EmbeddedRedisError) as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}")
        sys.exit(2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
