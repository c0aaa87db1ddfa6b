"""What every product command starts with: its settings, logging set up, and
(for the commands that read a deployment) the Redis to read.

Only the command line configures logging; the library only emits events.

Exit statuses, the same for every command (``docs/cli.md``): 0 done, 1 done
but with something to report (warnings, nothing found, messages lost), 2 the
command could not do its work (bad settings or arguments, no Redis, refused),
130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from pydantic import SecretStr, ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError
from rich.console import Console

from service.cli.console import clean, setup_logging
from service.cli.runtime import find_running
from service.errors import BatcherError
from service.settings import Settings
from service.store.connections import connect

Run = Callable[[argparse.Namespace, Settings], int]

EXIT_OK, EXIT_FOUND, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 130


class NoRedis(BatcherError):
    """A command that reads a deployment was given no Redis to read."""


def load_settings() -> Settings:
    """Settings from BATCHER_* and .env, or exit 2 with one line per bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        lines = []
        for e in exc.errors():
            name = "_".join(map(str, e["loc"])).upper()
            msg = str(e["msg"]).removeprefix("Value error, ")
            lines.append(f"  BATCHER_{name}: {msg}" if name else f"  {msg}")
        print("invalid configuration:\n" + "\n".join(lines), file=sys.stderr)
        raise SystemExit(EXIT_FAILED) from None


def configure() -> Settings:
    """Load the settings and set up logging as they say.

    Development (embedded server): a line per message. Production: quiet.
    """
    settings = load_settings()
    dev = settings.redis_url is None
    level = settings.log_level or ("DEBUG" if dev else "INFO")
    setup_logging(settings.log_format, "INFO", service_level=level)
    return settings


def add_redis_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis-url",
        help="the deployment's Redis (default: BATCHER_REDIS_URL, else the embedded "
        "server of a batcher serve running in this directory)",
    )


def with_redis(args: argparse.Namespace, settings: Settings) -> Settings:
    """``settings`` with the Redis to read: ``--redis-url``, else
    BATCHER_REDIS_URL, else the embedded server that a running ``batcher
    serve`` recorded in BATCHER_DATA_DIR; ``NoRedis`` when there is none."""
    given: str | None = getattr(args, "redis_url", None)
    if given:
        return settings.model_copy(update={"redis_url": SecretStr(given)})
    if settings.redis_url is not None:
        return settings
    running = find_running(Path(settings.data_dir).absolute())
    if running is None:
        raise no_redis(args.command)
    return settings.model_copy(update={"redis_url": SecretStr(running.url)})


def no_redis(command: str) -> NoRedis:
    return NoRedis(
        f"batcher {command}: no Redis to read. Start `batcher serve` in this "
        "directory, or set BATCHER_REDIS_URL, or pass --redis-url"
    )


def url_of(settings: Settings, command: str) -> str:
    """The Redis URL a reading command was given (``with_redis`` resolved it)."""
    if settings.redis_url is None:
        raise no_redis(command)
    return settings.redis_url.get_secret_value()


def with_settings(run: Run, *, redis: bool = False) -> Callable[[argparse.Namespace], int]:
    """A command's ``run(args, settings)`` as the parser default ``run(args)``;
    with ``redis``, the settings name the Redis to read (``with_redis``)."""

    def runner(args: argparse.Namespace) -> int:
        settings = configure()
        return run(args, with_redis(args, settings) if redis else settings)

    return runner


def on_redis(
    settings: Settings, command: str, work: Callable[[Redis], Awaitable[int]], out: Console
) -> int:
    """Run a command's ``work`` on a client of the deployment's Redis (a cluster
    client when it is one); a Redis error is printed and exits 2."""
    url = url_of(settings, command)

    async def run() -> int:
        redis = await connect(url, settings.redis_cluster)
        try:
            return await work(redis)
        except (RedisError, OSError) as exc:
            out.print(f"[bold red]error:[/] Redis at {settings.redis_url_display}:", clean(exc))
            return EXIT_FAILED
        finally:
            await redis.aclose()

    return asyncio.run(run())
