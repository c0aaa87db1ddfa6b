"""The ``batcher`` command: check verdicts and serve on the embedded server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from service.store.embedded import free_port
from tests.helpers import fast_settings


def run_batcher(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        env={**os.environ, "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_passes_on_the_repo_config(redis_url: str) -> None:
    r = run_batcher("check", env={"BATCHER_REDIS_URL": redis_url})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "notifications" in r.stdout and "OK" in r.stdout


def test_check_fails_without_notifications_and_names_the_fix(redis_url: str) -> None:
    Redis.from_url(redis_url).config_set("notify-keyspace-events", "")
    r = run_batcher("check", env={"BATCHER_REDIS_URL": redis_url})
    assert r.returncode == 2
    assert "notify-keyspace-events Ex" in r.stdout
    # check only reports: it does not change the server
    assert Redis.from_url(redis_url).config_get("notify-keyspace-events") == {
        "notify-keyspace-events": ""
    }


def test_check_fails_on_an_eviction_policy(redis_url: str) -> None:
    Redis.from_url(redis_url).config_set("maxmemory-policy", "volatile-lru")
    r = run_batcher("check", env={"BATCHER_REDIS_URL": redis_url})
    assert r.returncode == 2
    assert "maxmemory-policy noeviction" in r.stdout


def test_check_unreachable_server() -> None:
    r = run_batcher("check", env={"BATCHER_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert r.returncode == 2
    assert "cannot reach" in r.stdout


def test_invalid_settings_are_reported_by_name() -> None:
    r = run_batcher("check", env={"BATCHER_IDLE_MS": "9000", "BATCHER_MAX_WAIT_MS": "100"})
    assert r.returncode != 0
    assert "BATCHER_IDLE_MS" in r.stderr


async def test_engine_refuses_an_eviction_policy(redis_url: str) -> None:
    from redis.asyncio import Redis as AsyncRedis

    from service.engine.engine import Engine
    from service.errors import ServerConfigError

    client = AsyncRedis.from_url(redis_url)
    await client.config_set("maxmemory-policy", "allkeys-lru")
    with pytest.raises(ServerConfigError, match="maxmemory-policy noeviction"):
        await Engine(client, fast_settings(redis_url)).start()
    await client.aclose()


async def test_engine_enables_notifications_when_allowed(redis_url: str) -> None:
    from redis.asyncio import Redis as AsyncRedis

    from service.engine.engine import Engine

    client = AsyncRedis.from_url(redis_url)
    await client.config_set("notify-keyspace-events", "")
    engine = Engine(client, fast_settings(redis_url))
    await engine.start()
    await engine.stop()
    flags = str((await client.config_get("notify-keyspace-events"))["notify-keyspace-events"])
    assert "E" in flags and "x" in flags
    assert any(c.name == "notifications" and c.status == "warn" for c in engine.checks)
    await client.aclose()


def test_serve_runs_on_the_embedded_server(tmp_path: Path) -> None:
    """`batcher serve` with no BATCHER_REDIS_URL: embedded server, HTTP up,
    a message in, a batch out (logged), the server stopped on exit."""
    port = free_port()
    env = {
        **os.environ,
        "BATCHER_PORT": str(port),
        "BATCHER_DATA_DIR": str(tmp_path / "data"),
        "BATCHER_IDLE_MS": "200",
        "BATCHER_LOG_FORMAT": "json",
    }
    env.pop("BATCHER_REDIS_URL", None)
    log = (tmp_path / "serve.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve"], env=env, stdout=log, stderr=log
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=2) as client:
            _wait_ready(client, proc)
            r = client.post("/v1/messages", json={"chat_id": "cli", "id": "1", "text": "hello"})
            assert r.status_code == 202
            _wait_for_line(log, '"event": "delivered"', proc)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    text = Path(log.name).read_text()
    assert '"event": "embedded"' in text
    assert '"event": "appended"' in text
    assert proc.returncode == 0
    assert (tmp_path / "data" / "redis").is_dir()  # data under BATCHER_DATA_DIR
    # the embedded server went away with the service
    with pytest.raises(RedisConnectionError):
        Redis(port=_embedded_port(text), socket_connect_timeout=0.5).ping()


def _embedded_port(log_text: str) -> int:
    for line in log_text.splitlines():
        if '"event": "embedded"' in line:
            return int(line.split('"url": "redis://127.0.0.1:')[1].split("/")[0])
    raise AssertionError("no embedded line")


def _wait_ready(client: httpx.Client, proc: subprocess.Popen[bytes]) -> None:
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, "serve exited early"
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError("serve never became ready")


def _wait_for_line(log: object, needle: str, proc: subprocess.Popen[bytes]) -> None:
    import time

    path = Path(log.name)  # type: ignore[attr-defined]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if needle in path.read_text():
            return
        assert proc.poll() is None, path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{needle} never logged:\n{path.read_text()}")


def test_check_warns_on_a_small_pubsub_buffer_and_probes_event_lag(redis_url: str) -> None:
    Redis.from_url(redis_url).config_set("client-output-buffer-limit", "pubsub 32mb 8mb 60")
    r = run_batcher("check", env={"BATCHER_REDIS_URL": redis_url})
    assert r.returncode == 1, r.stdout
    assert "client-output-buffer-limit pubsub 256mb 128mb 120" in r.stdout
    assert "events alone: p50" in r.stdout and "nudged: p50" in r.stdout
    assert "permissions" in r.stdout


def test_serve_refuses_a_public_host_without_an_app_secret(tmp_path: Path) -> None:
    env = {"BATCHER_HOST": "0.0.0.0", "BATCHER_DATA_DIR": str(tmp_path)}
    r = run_batcher("serve", env=env)
    assert r.returncode != 0
    assert "BATCHER_WHATSAPP_APP_SECRET" in r.stderr
    assert not (tmp_path / "redis").exists()  # refused before starting anything
