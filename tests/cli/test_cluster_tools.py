"""The operators' views (watch, dead letters, one chat, rejected) on a Redis Cluster."""

from __future__ import annotations

import io

from rich.console import Console

from service.cli.check import doctor
from service.engine.engine import Engine
from service.models import Batch, Message
from service.store.chats import Chats
from service.store.connections import connect
from service.store.deadletters import count_dead, list_dead, show_dead
from service.store.keyspace import Keyspace
from service.store.snapshot import snapshot
from service.tooling.cluster import LocalCluster
from tests.helpers import fast_settings, wait_until

KS = Keyspace()


async def refuse(batch: Batch) -> None:
    raise RuntimeError("bot down")


async def test_views_read_every_primary(redis_cluster: LocalCluster) -> None:
    client = await connect(redis_cluster.url)
    settings = fast_settings(redis_cluster.url, max_attempts=1)
    engine = Engine(client, settings, refuse, shutdown_timeout_s=2)
    await engine.start()
    try:
        chats = [f"ops-{i}" for i in range(24)]  # spread over every primary
        for chat in chats:
            await engine.add(chat, Message(id=f"{chat}-m", text="hello"))
        await wait_until(lambda: engine.stats.dead == len(chats))
        await engine.add("ops-open", Message(id="still-open", text="later"))
        snap = await snapshot(client, KS, settings)
        assert snap.dead_total == len(chats) and snap.open_total == 1
        assert await count_dead(client, KS) == len(chats)
        dead = await list_dead(client, KS, 100)
        assert {d.chat_id for d in dead} == set(chats)
        shown = await show_dead(client, KS, dead[0].batch_id)
        assert shown is not None and [m.text for m in shown[1]] == ["hello"]
        state = await Chats(client, settings).read("ops-open")
        assert state.open is not None and [m.id for m in state.open.messages] == ["still-open"]
    finally:
        await engine.stop()
        await client.aclose()


async def test_check_names_every_primary(redis_cluster: LocalCluster) -> None:
    out = Console(record=True, width=240, file=io.StringIO())
    code = await doctor(fast_settings(redis_cluster.url), out)
    text = out.export_text()
    assert code in (0, 1), text  # warnings (e.g. appendfsync) are fine; no failure
    for primary in redis_cluster.primaries():
        assert f"127.0.0.1:{primary.port}: " in text
