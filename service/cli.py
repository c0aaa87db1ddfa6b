"""The ``batcher`` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError
from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table

from .checks import run_checks
from .console import setup_logging
from .errors import BatcherError
from .handlers import ConsoleHandler, Handler, load_handler
from .settings import Settings

if TYPE_CHECKING:
    from .embedded import RedisServer

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
async def redis_for(settings: Settings, *, embedded: bool) -> AsyncIterator[Redis]:
    """A client for BATCHER_REDIS_URL, or for an embedded server started here."""
    if settings.redis_url is not None:
        client = Redis.from_url(settings.redis_url.get_secret_value())
        try:
            yield client
        finally:
            await client.aclose()
        return
    if not embedded:
        raise SystemExit("BATCHER_REDIS_URL is not set")
    server = await asyncio.to_thread(start_embedded, settings)
    binary = server.binary
    log.info(
        "embedded Redis-compatible server %s at %s (data in %s)",
        binary.name,
        server.url,
        server.data_dir,
        extra={"event": "embedded", "url": server.url},
    )
    client = Redis.from_url(server.url)
    try:
        yield client
    finally:
        await client.aclose()
        await asyncio.to_thread(server.stop)


def start_embedded(settings: Settings) -> RedisServer:
    from .embedded import RedisServer, find_server_binary

    binary = find_server_binary(settings.redis_server)
    server = RedisServer(binary, data_dir=Path(settings.data_dir).absolute() / "redis")
    server.start()
    return server


async def serve(settings: Settings) -> None:
    from .engine import Engine

    handler: Handler = load_handler(settings.handler) if settings.handler else ConsoleHandler()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with redis_for(settings, embedded=True) as redis, Engine(redis, settings, handler):
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
    async with redis_for(settings, embedded=False) as redis:
        checks = await run_checks(redis, settings, fix=False)
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
            asyncio.run(serve(settings))
        elif args.command == "check":
            sys.exit(asyncio.run(check(settings, Console())))
    except BatcherError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}")
        sys.exit(2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
