"""One service process for ``batcher bench scale``: an Engine and a report.

    python -m service.bench_worker <redis_url> [--nudge-ms 10] [--concurrency 64]

Prints ``ready`` once its listener is subscribed. Each ``report`` line on
stdin is answered with one JSON line: the engine's counters (cumulative)
and the flush lags and handler start times since the previous report. Exits
on ``stop`` or when stdin closes (the orchestrator went away).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time

from pydantic import SecretStr

from .bench import run_async
from .connections import create_redis
from .engine import Engine
from .models import Batch
from .settings import Settings


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


async def serve(url: str, nudge_ms: int, concurrency: int, buckets: int) -> None:
    recorder = Recorder()

    settings = Settings(
        redis_url=SecretStr(url),
        idle_ms=1_000,
        max_wait_ms=600_000,
        nudge_interval_ms=nudge_ms,
        concurrency=concurrency,
        buckets=buckets,
    )
    client = create_redis(url)
    engine = Engine(client, settings, recorder, shutdown_timeout_s=2)
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
    parser = argparse.ArgumentParser(prog="python -m service.bench_worker")
    parser.add_argument("url")
    parser.add_argument("--nudge-ms", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--buckets", type=int, default=16)
    args = parser.parse_args()
    # The orchestrator reports; per-batch warnings ("recovering ...") would
    # only flood its terminal. The counts come back in each report.
    logging.getLogger("service").setLevel(logging.ERROR)
    run_async(serve(args.url, args.nudge_ms, args.concurrency, args.buckets))


if __name__ == "__main__":
    main()
