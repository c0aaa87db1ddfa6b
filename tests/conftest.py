"""Shared Redis fixtures: every server is started with the repo's redis.conf.

- `redis_binary` (session): the server binary ($BATCHER_TEST_REDIS_SERVER, else
  find_server_binary()), or, as a last resort, a Docker image; skips cleanly without either.
- `redis_server` (session): one shared server (DEBUG enabled for local clients).
- `redis_url`: resets the shared server to a clean state, returns its URL.
- `redis_client`: an async redis-py client on that URL (bytes responses).
- `redis_factory`: private servers (own port and data dir) for restart/kill tests.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio

from service.store.embedded import (
    EmbeddedRedisError,
    RedisServer,
    find_server_binary,
    redis_conf_path,
    server_version,
)

TEST_SERVER_ENV = "BATCHER_TEST_REDIS_SERVER"
# DEBUG (e.g. DEBUG SET-ACTIVE-EXPIRE) is off by default since Redis 7; allow it locally.
DEBUG_ARGS = ("--enable-debug-command", "local")
# Settings a test may change with CONFIG SET; `redis_url` puts them back to redis.conf's values.
RESET_SETTINGS = (
    "notify-keyspace-events",
    "maxmemory",
    "maxmemory-policy",
    "hz",
    "active-expire-effort",
    "appendfsync",
    "client-output-buffer-limit",
    "timeout",
)
DOCKER_IMAGE = "redis:7"


def conf_settings(conf: Path) -> dict[str, str]:
    """Directive → value as written in a redis.conf (last occurrence wins)."""
    settings: dict[str, str] = {}
    for line in conf.read_text().splitlines():
        words = shlex.split(line, comments=True)
        if words:
            settings[words[0].lower()] = " ".join(words[1:])
    return settings


@dataclass(frozen=True)
class DockerImage:
    """Stands in for a server binary when the servers run in Docker containers."""

    image: str = DOCKER_IMAGE


class DockerRedisServer(RedisServer):
    """Minimal RedisServer look-alike backed by a container (last resort, no binary found).

    The container listens on 0.0.0.0 inside its own network namespace; the port is published
    on the host's loopback only, so the `bind`/`protected-mode` overrides stay contained.
    """

    def __init__(
        self,
        image: DockerImage,
        *,
        port: int | None = None,
        data_dir: Path,
        conf: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        import docker  # type: ignore[import-untyped]  # lazy: only needed on this path

        # Connections arrive through Docker's proxy, i.e. not from "local" clients.
        args = ["yes" if a == "local" else a for a in extra_args]
        super().__init__(
            Path("redis-server"), port=port, data_dir=data_dir, conf=conf, extra_args=args
        )
        self.image = image.image
        self._docker = docker.from_env()
        self._container: Any = None

    @property
    def pid(self) -> int | None:
        return None  # the process lives in another pid namespace

    @property
    def running(self) -> bool:
        if self._container is None:
            return False
        self._container.reload()
        return bool(self._container.status == "running")

    def start(self, timeout_s: float = 10.0) -> None:
        if self.running:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            "redis-server", "/etc/redis.conf", "--port", "6379", "--bind", "0.0.0.0",
            "--protected-mode", "no", "--dir", "/data", "--daemonize", "no",
            "--logfile", "/data/server.log", "--pidfile", "", *self.extra_args,
        ]  # fmt: skip
        self._container = self._docker.containers.run(
            self.image,
            command=command,
            detach=True,
            ports={"6379/tcp": ("127.0.0.1", self.port)},
            volumes={
                str(self.data_dir): {"bind": "/data", "mode": "rw"},
                str(self.conf): {"bind": "/etc/redis.conf", "mode": "ro"},
            },
            user=f"{os.getuid()}:{os.getgid()}",  # files in data_dir stay ours
        )
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with redis.Redis(port=self.port, socket_timeout=0.5) as client:
                    if client.ping():
                        return
            except redis.RedisError:
                pass
            if not self.running or time.monotonic() > deadline:
                logs = self._container.logs(tail=25).decode(errors="replace")
                self.stop(kill=True)
                raise EmbeddedRedisError(f"container {self.image} failed to start\n{logs}")
            time.sleep(0.05)

    def stop(self, *, kill: bool = False, timeout_s: float = 10.0) -> None:
        container, self._container = self._container, None
        if container is None:
            return
        if kill:
            container.kill()  # SIGKILL: a crash
        else:
            container.stop(timeout=max(1, int(timeout_s)))  # SIGTERM, then SIGKILL
        container.remove(force=True)


def _docker_or_skip(reason: str) -> DockerImage:
    try:
        import docker
    except ImportError:
        pytest.skip(f"{reason}; and the docker SDK is not installed")
    try:
        client = docker.from_env()
        client.ping()
        client.images.pull(DOCKER_IMAGE)
    except Exception as exc:  # docker raises many types (DockerException, requests errors)
        pytest.skip(f"{reason}; and no Docker engine answered: {exc}")
    return DockerImage()


def _new_server(
    launcher: Path | DockerImage,
    data_dir: Path,
    *,
    extra_args: Sequence[str] = (),
    conf: Path | None = None,
) -> RedisServer:
    if isinstance(launcher, DockerImage):
        return DockerRedisServer(launcher, data_dir=data_dir, conf=conf, extra_args=extra_args)
    return RedisServer(launcher, data_dir=data_dir, conf=conf, extra_args=extra_args)


def pytest_report_header() -> str:
    explicit = os.environ.get(TEST_SERVER_ENV)
    try:
        binary = find_server_binary(explicit)
        return f"redis server: {binary} (v{server_version(binary)}), conf: {redis_conf_path()}"
    except EmbeddedRedisError as exc:
        return f"redis server: none found ({exc})"


@pytest.fixture(scope="session")
def redis_binary() -> Path | DockerImage:
    """The server binary every fixture starts (or the Docker image standing in for it)."""
    explicit = os.environ.get(TEST_SERVER_ENV)
    if explicit:
        return find_server_binary(explicit)  # a wrong explicit choice fails loudly
    try:
        return find_server_binary()
    except EmbeddedRedisError as exc:
        return _docker_or_skip(str(exc))


@pytest.fixture(scope="session")
def redis_server(
    redis_binary: Path | DockerImage, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisServer]:
    """One server shared by the whole session, started with the repo's redis.conf."""
    server = _new_server(
        redis_binary, tmp_path_factory.mktemp("redis-shared"), extra_args=DEBUG_ARGS
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The shared server's URL, after resetting it to a clean state for this test."""
    if not redis_server.running:  # a previous test stopped or crashed it
        redis_server.start()
    defaults = conf_settings(redis_server.conf)
    with redis.Redis.from_url(redis_server.url) as client:
        # Leftover connections of earlier tests (pools, subscribers) must not leak into this one.
        client.execute_command("CLIENT", "UNPAUSE")
        client.client_kill_filter(_type="normal", skipme=True)
        client.client_kill_filter(_type="pubsub", skipme=True)
        for name in RESET_SETTINGS:
            client.config_set(name, defaults[name])
        client.execute_command("DEBUG", "SET-ACTIVE-EXPIRE", 1)
        client.flushall()
        client.script_flush()
        client.function_flush()
    return redis_server.url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=False)
    yield client
    await client.aclose()


@pytest.fixture
def redis_factory(
    redis_binary: Path | DockerImage, tmp_path: Path
) -> Iterator[Callable[..., RedisServer]]:
    """make(extra_args=(), conf=None) → a started private server (own port, own data dir)."""
    servers: list[RedisServer] = []

    def make(extra_args: Sequence[str] = (), conf: Path | None = None) -> RedisServer:
        data_dir = tmp_path / f"redis-{len(servers)}"
        server = _new_server(
            redis_binary, data_dir, extra_args=(*DEBUG_ARGS, *extra_args), conf=conf
        )
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.stop(kill=True)  # the data is thrown away: no need for a clean shutdown


# ---- a local Redis Cluster -------------------------------------------------------------
from service.tooling.cluster import LocalCluster  # noqa: E402  (appended after the fixtures)


@pytest.fixture
def redis_cluster(redis_binary: Path | DockerImage, tmp_path: Path) -> Iterator[LocalCluster]:
    """A fresh 3-primary + 3-replica Redis Cluster on loopback ports, killed afterwards."""
    if isinstance(redis_binary, DockerImage):
        pytest.skip("no local server binary for a cluster")
    cluster = LocalCluster(redis_binary, tmp_path / "cluster", primaries=3, replicas_per_primary=1)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
