"""``batcher serve --workers 2``: two uvicorn worker processes on one port, each
with its own engine, sharing the buckets (``service/engine/ownership.py``).

A real ``batcher serve`` process (``service.tooling.procs.ServiceProc``)
forwards to a ``Sink`` served in the test's event loop, on the shared test
server or on its own embedded one; messages go in through ``POST
/v1/messages``. The service's log is printed at teardown (pytest shows it
for failed tests only).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from service.cli.runtime import find_running
from service.store.keyspace import Keyspace
from service.tooling.procs import ServiceProc
from service.tooling.sink import Sink
from tests.conftest import DockerImage
from tests.helpers import poll, wait_until
from tests.web.test_e2e import FORWARD_SECRET

KEYS = Keyspace()  # the service's defaults: prefix "batcher", 16 buckets
CHATS, PER_CHAT = 12, 3


@pytest.fixture
def services() -> Iterator[list[ServiceProc]]:
    """The services a test started: stopped at teardown, their logs printed."""
    started: list[ServiceProc] = []
    yield started
    for svc in started:
        svc.stop_now()
        print(f"===== {svc.log_path.name} (pid {svc.pid}) =====")
        print(svc.log_tail(200))


def children(pid: int) -> dict[int, str]:
    """The live (not zombie) child processes of ``pid``: pid -> command line (Linux /proc)."""
    out: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue  # gone meanwhile
        if int(ppid) == pid and state != "Z":
            out[int(entry.name)] = cmdline
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


async def live_members(redis: Redis) -> list[str]:
    """The process ids in the deployment's members zset whose lease runs."""
    seconds, micros = await redis.time()
    now_ms = seconds * 1000 + micros // 1000
    members = await redis.zrangebyscore(KEYS.members, f"({now_ms}", "+inf")
    return [m.decode() if isinstance(m, bytes) else str(m) for m in members]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
@pytest.mark.parametrize(
    ("sig", "embedded"),
    [(signal.SIGTERM, False), (signal.SIGINT, True)],
    ids=["sigterm-redis-url", "sigint-embedded"],
)
async def test_two_workers_share_the_work_and_stop_with_the_server(
    sig: signal.Signals,
    embedded: bool,
    request: pytest.FixtureRequest,
    redis_binary: Path | DockerImage,
    tmp_path: Path,
    sink: Sink,
    client: httpx.AsyncClient,
    services: list[ServiceProc],
) -> None:
    env = {
        "BATCHER_FORWARD_URL": sink.url,
        "BATCHER_FORWARD_SECRET": FORWARD_SECRET,
        "BATCHER_IDLE_MS": "200",
        "BATCHER_MAX_WAIT_MS": "5000",
        "BATCHER_SWEEP_INTERVAL_MS": "200",
        "BATCHER_SWEEP_GRACE_MS": "300",
        "BATCHER_LOG_FORMAT": "json",
    }
    data_dir = tmp_path / "data"
    if embedded:  # no URL: serve starts its own server, and hands its URL to the workers
        if isinstance(redis_binary, DockerImage):
            pytest.skip("the embedded server needs a local server binary")
        env |= {"BATCHER_DATA_DIR": str(data_dir), "BATCHER_REDIS_SERVER": str(redis_binary)}
    else:
        env["BATCHER_REDIS_URL"] = request.getfixturevalue("redis_url")
    svc = ServiceProc("serve-workers", env, tmp_path / "serve.log", tmp_path, ("--workers", "2"))
    services.append(svc)
    svc.start()
    await svc.wait_ready(client)
    assert svc.pid is not None

    if embedded:
        running = find_running(data_dir)
        assert running is not None and running.serve_pid == svc.pid
        url = running.url
    else:
        url = env["BATCHER_REDIS_URL"]
    redis = Redis.from_url(url)
    try:
        # (b) two worker processes, each with its own engine in the members zset
        async def two_members() -> bool:
            return len(await live_members(redis)) == 2

        await poll(two_members, timeout_s=15)
        kids = children(svc.pid)
        workers = [pid for pid, cmd in kids.items() if "spawn_main" in cmd]
        assert len(workers) == 2, kids
        assert [e["workers"] for e in svc.events("started")] == [2]

        # (a) every message delivered, every batch exactly once
        expected = {f"chat-{c}": [f"chat-{c}#{i}" for i in range(PER_CHAT)] for c in range(CHATS)}

        async def post_chat(chat: str, ids: list[str]) -> None:
            for mid in ids:  # in order within a chat; the chats side by side
                r = await client.post(
                    svc.url + "/v1/messages", json={"chat_id": chat, "id": mid, "text": mid}
                )
                assert r.status_code == 202, r.text

        await asyncio.gather(*(post_chat(chat, ids) for chat, ids in expected.items()))
        total = CHATS * PER_CHAT
        await sink.wait_for(
            lambda: sum(len(r.message_ids) for r in sink.acked()) >= total, timeout_s=15
        )
    finally:
        await redis.aclose()

    assert await svc.signal_and_wait(sig, timeout_s=30) == 0
    await wait_until(lambda: not any(alive(pid) for pid in kids), timeout_s=10)

    posts = sink.batches()
    assert all(p.ok and p.signature_valid for p in posts), posts
    batch_ids = [p.batch_id for p in posts]
    assert len(batch_ids) == len(set(batch_ids)), "a batch was delivered twice"
    delivered: dict[str, list[str]] = {}
    for p in posts:
        delivered.setdefault(p.chat_id, []).extend(p.message_ids)
    assert delivered == expected
    if not embedded:  # both engines left the deployment as they stopped
        redis = Redis.from_url(url)
        try:
            assert await redis.zcard(KEYS.members) == 0
        finally:
            await redis.aclose()
