"""One service process driven over stdin: an Engine and its report.

    python -m service.tooling.bench.worker <redis_url> [--nudge-ms 2] [--concurrency 64]
        [--set NAME=VALUE ...] [--hang-marker KEY]

Used by ``batcher bench scale`` (several of them on one Redis) and by the
tests that kill a worker mid-handler. Prints ``ready`` once its listener is
subscribed. Each ``report`` line on stdin is answered with one JSON line:
the engine's counters (cumulative) and the flush lags and handler start
times since the previous report. Exits on ``stop`` or when stdin closes
(the process that started it went away).

``--set`` overrides a setting (``--set lease_ms=1000``). With
``--hang-marker`` the handler records the batch it was given in that Redis
hash (batch_id, attempt, chat_id, the message ids as JSON, pid) and then
hangs, as a handler stuck mid-delivery does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from typing import Any

from redis.asyncio import Redis

from service.engine.engine import Engine
from service.engine.handlers import Handler
from service.models import Batch
from service.store.connections import connect
from service.tooling.bench.common import bench_settings, run_async


class Recorder:
    """The handler: acks at once, noting when it started and how late."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.starts: list[float] = []

    async def __call__(self, batch: Batch) -> None:
        now = time.time()
        self.starts.append(now)
        self.lags.append(round((now - batch.deadline_at) * 1000, 2))

    def take(self) -> tuple[list[float], list[float]]:
        out = self.lags, self.starts
        self.lags, self.starts = [], []
        return out


class Hang:
    """The handler of ``--hang-marker``: note the batch in Redis, then hang."""

    def __init__(self, client: Redis, marker: str) -> None:
        self.client = client
        self.marker = marker

    async def __call__(self, batch: Batch) -> None:
        ids = json.dumps([m.id for m in batch.messages])
        await self.client.hset(
            self.marker,
            mapping={
                "batch_id": batch.batch_id,
                "attempt": batch.attempt,
                "chat_id": batch.chat_id,
                "ids": ids,
                "pid": os.getpid(),
            },
        )
        await asyncio.Event().wait()


async def serve(url: str, overrides: dict[str, Any], hang_marker: str | None) -> None:
    recorder = Recorder()
    values: dict[str, Any] = {"idle_ms": 1_000, "max_wait_ms": 600_000, **overrides}
    settings = bench_settings(url, **values)
    client = await connect(url)
    handler: Handler = recorder if hang_marker is None else Hang(client, hang_marker)
    engine = Engine(client, settings, handler, shutdown_timeout_s=2)
    await engine.start()
    for _ in range(500):  # the listener subscribes in the background
        if engine.healthy():
            break
        await asyncio.sleep(0.02)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print("ready", flush=True)
    try:
        while line := (await reader.readline()).strip():
            if line != b"report":
                break
            s = engine.stats
            lags, starts = recorder.take()
            report = {
                "pid": os.getpid(),
                "events": s.events,
                "claimed": s.claimed,
                "claims_skipped": s.claims_skipped,
                "delivered": s.delivered,
                "recovered": s.recovered,
                "nudged": s.nudged,
                "lags_ms": lags,
                "starts": [round(t, 4) for t in starts],
            }
            print(json.dumps(report), flush=True)
    finally:
        await engine.stop()
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m service.tooling.bench.worker")
    parser.add_argument("url")
    parser.add_argument("--nudge-ms", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--buckets", type=int, default=16)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--hang-marker", help="record each batch in this hash, then hang")
    args = parser.parse_args()
    overrides: dict[str, Any] = {
        "nudge_interval_ms": args.nudge_ms,
        "concurrency": args.concurrency,
        "buckets": args.buckets,
    }
    overrides.update(item.split("=", 1) for item in args.set)
    # The orchestrator reports; per-batch warnings ("recovering ...") would
    # only flood its terminal. The counts come back in each report.
    logging.getLogger("service").setLevel(logging.ERROR)
    run_async(serve(args.url, overrides, args.hang_marker))


if __name__ == "__main__":
    main()
