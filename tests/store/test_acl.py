"""The minimal ACL rule of docs/operations.md runs the service's whole happy path."""

from __future__ import annotations

import shlex

from redis.asyncio import Redis

from service.models import Batch
from tests.helpers import REPO_ROOT, Collector, app_client, wait_until

DOC = REPO_ROOT / "docs" / "operations.md"
PASSWORD = "acl-test-pw-5e1f"


def documented_rule(user: str) -> list[str]:
    for line in DOC.read_text().splitlines():
        if not line.startswith(f"ACL SETUSER {user} "):
            continue
        words = shlex.split(line)
        if words[:3] == ["ACL", "SETUSER", user]:
            return [w if not w.startswith(">") else f">{PASSWORD}" for w in words[3:]]
    raise AssertionError(f"no `ACL SETUSER {user}` line in {DOC}")


async def test_service_runs_as_the_documented_acl_user(redis_url: str, redis_client: Redis) -> None:
    await redis_client.execute_command("ACL", "SETUSER", "batcher", *documented_rule("batcher"))
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    url = f"redis://batcher:{PASSWORD}@127.0.0.1:{port}/0"
    collector = Collector(fail=lambda b: b.messages[0].text == "poison")
    try:
        async with app_client(url, collector, max_attempts=2) as (client, engine):
            await wait_until(lambda: engine.listener is not None and engine.listener.subscribed)
            for i in range(3):
                r = await client.post(
                    "/v1/messages", json={"chat_id": f"acl-{i}", "id": "1", "text": f"hello {i}"}
                )
                assert r.status_code == 202
            r = await client.post(
                "/v1/messages", json={"chat_id": "acl-0", "id": "1", "text": "hello 0"}
            )
            assert r.json() == {"accepted": 0, "duplicates": 1}
            await client.post("/v1/messages", json={"chat_id": "acl-dead", "text": "poison"})
            await collector.wait_messages(3)
            await wait_until(lambda: engine.stats.dead == 1)
            await redis_client.script_flush()  # the EVAL fallback must be allowed too
            await client.post("/v1/messages", json={"chat_id": "acl-after", "text": "again"})
            await collector.wait_messages(4)
            assert (await client.get("/readyz")).status_code == 200
            assert (await client.get("/metrics")).status_code == 200
        denied = await redis_client.execute_command("ACL", "LOG")
        refused = [
            e
            for e in denied
            if b"batcher" in str(e).encode() and b"client|setinfo" not in str(e).lower().encode()
        ]
        assert refused == [], refused
    finally:
        await redis_client.execute_command("ACL", "DELUSER", "batcher")
        await redis_client.execute_command("ACL", "LOG", "RESET")
    batches: list[Batch] = collector.batches
    assert sorted(m.text or "" for b in batches for m in b.messages) == [
        "again",
        "hello 0",
        "hello 1",
        "hello 2",
    ]
