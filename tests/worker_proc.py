"""A worker process for tests/test_recovery.py: an Engine whose handler
records the batch it was given in Redis, then hangs (until SIGKILLed).

    python tests/worker_proc.py <redis_url> <lease_ms> <marker_key>

The marker hash gets batch_id, attempt, chat_id and the message ids (JSON).
The process exits by itself if its parent (the test run) goes away.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from redis.asyncio import Redis

from service.engine import Engine
from service.models import Batch
from service.settings import Settings


async def main(url: str, lease_ms: int, marker: str) -> None:
    parent = os.getppid()
    client = Redis.from_url(url)

    async def handler(batch: Batch) -> None:
        await client.hset(
            marker,
            mapping={
                "batch_id": batch.batch_id,
                "attempt": batch.attempt,
                "chat_id": batch.chat_id,
                "ids": json.dumps([m.id for m in batch.messages]),
                "pid": os.getpid(),
            },
        )
        await asyncio.Event().wait()  # hang "forever", mid-handler

    settings = Settings(
        redis_url=url,
        idle_ms=150,
        max_wait_ms=3_000,
        lease_ms=lease_ms,
        nudge_interval_ms=5,
        sweep_interval_ms=200,
        sweep_grace_ms=300,
        listener_ping_ms=100,
        listener_dead_ms=1_000,
    )
    engine = Engine(client, settings, handler)
    await engine.start()
    print("ready", flush=True)
    # Nothing announces the parent's death: poll for it (we are then orphaned).
    while os.getppid() == parent:  # noqa: ASYNC110
        await asyncio.sleep(0.2)
    os._exit(1)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
