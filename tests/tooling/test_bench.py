"""``batcher bench``: every scenario at toy size, and proof that each baseline
is what it claims to be (the naive design really keeps a TTL on its data and
runs no nudger, the polling loop really polls once a second, ...)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from service.cli.main import main
from service.store.scripts import APPEND
from service.tooling.bench.http import run_http
from service.tooling.bench.ingest import IngestOptions, benchmark_command, parse_rps, run_ingest
from service.tooling.bench.lag import LagOptions, run_lag
from service.tooling.bench.memory import run_memory
from service.tooling.bench.scale import ScaleOptions, run_scale
from service.tooling.bench.typist import TypistOptions, run_typist


def console() -> Console:
    return Console(file=io.StringIO(), width=200)


def text(c: Console) -> str:
    assert isinstance(c.file, io.StringIO)
    return c.file.getvalue()


TOY = LagOptions(ns=(150,), window_s=0.5, idle_ms=1_000, wait_s=3.0)


async def test_lag_all_variants_side_by_side(redis_url: str) -> None:
    out = console()
    results = {r.variant: r for r in await run_lag(TOY, redis_url, out)}
    assert list(results) == ["service", "events-only", "naive", "polling"]
    assert "flush lag" in text(out) and "p99 vs service" in text(out)

    service = results["service"]
    assert (service.delivered, service.late, service.lost) == (150, 0, 0)
    assert service.checks["nudger"] and service.checks["nudged"] > 0
    assert service.p50_ms < results["polling"].p50_ms

    events_only = results["events-only"]
    assert events_only.delivered == 150
    assert events_only.checks["nudged"] == 0 and events_only.checks["recovered"] == 0
    assert events_only.checks["events"] == 150

    naive = results["naive"]
    assert naive.delivered + naive.lost == 150
    # Its data keys really carry a TTL mid-run (as do its timers) ...
    assert all(0 < t <= 60_000 for t in naive.checks["data_pttl_ms_mid_run"])
    assert all(0 < t <= TOY.idle_ms for t in naive.checks["timer_pttl_ms_mid_run"])
    # ... the server runs at the default hz, and nothing ran a script (no nudge,
    # no claim script: only plain commands).
    assert naive.checks["hz"] == "10" and naive.checks["active-expire-effort"] == "1"
    assert naive.checks["scripts_run"] == 0 and not naive.checks["nudger"]
    assert naive.checks["events"] >= naive.delivered + naive.checks["lost_data_expired"]

    polling = results["polling"]
    assert (polling.delivered, polling.late, polling.lost) == (150, 0, 0)
    assert polling.checks["scripts_run"] == 0 and polling.checks["events"] == 0
    assert polling.checks["data_pttl_ms_mid_run"] == -1  # no TTL anywhere
    # It really polls once a second: lags spread over the second between polls.
    assert 0.9 <= polling.checks["mean_poll_gap_s"] <= 1.5  # 1 s sleep + the poll itself
    assert polling.mean_ms >= 250
    assert polling.max_ms >= 500


async def test_naive_loses_batches_when_the_data_ttl_beats_the_event(redis_url: str) -> None:
    """The seed incident in miniature: the data key's TTL runs out before
    the (late) timer event, and the batch is gone; the service loses none."""
    opts = LagOptions(
        ns=(200,), window_s=0.3, idle_ms=500, wait_s=1.0, naive_ttl_ms=520,
        variants=("service", "naive"),
    )  # fmt: skip
    results = {r.variant: r for r in await run_lag(opts, redis_url, console())}
    naive = results["naive"]
    assert naive.lost > 0 and naive.late == 0  # gone for good, not merely late
    assert naive.lost == naive.checks["lost_data_expired"] + naive.checks["lost_no_event"]
    assert (results["service"].delivered, results["service"].lost) == (200, 0)


async def test_ingest_against_redis_benchmark(redis_url: str) -> None:
    out = console()
    opts = IngestOptions(n=3_000, producers=16, chats=300, pipeline=8, no_coalesce=True)
    rows = await run_ingest(opts, redis_url, out)
    python = [r for r in rows if r["client"].startswith("Batcher.add")]
    assert len(python) == 2
    for r in python:
        assert r["per_s"] > 0
        assert r["detail"]["messages_stored"] == 3_000  # every add() stored its message
    coalesced, direct = python
    assert coalesced["calls_per_round_trip"] > 1.5  # concurrent adds shared pipelines
    assert direct["calls_per_round_trip"] == 1.0
    if shutil.which("redis-benchmark") is None:
        assert "redis-benchmark is not installed" in text(out)
        return
    bench = [r for r in rows if r["client"].startswith("redis-benchmark")]
    assert [r["calls_per_round_trip"] for r in bench] == [8.0, 1.0]
    for r in bench:
        # The same script really ran and appended (few ids collide at random).
        assert r["detail"]["messages_stored"] >= 0.97 * 3_000
    assert "vs limit" in text(out)


def test_benchmark_command_runs_the_services_append_call() -> None:
    cmd = benchmark_command("redis://127.0.0.1:1/0", IngestOptions(chats=77), 4)
    i = cmd.index("EVALSHA")
    assert cmd[i + 1] == APPEND.sha and cmd[i + 2] == "10"
    assert cmd[cmd.index("-r") + 1] == "77" and cmd[cmd.index("-P") + 1] == "4"
    keys = cmd[i + 3 : i + 13]
    assert all("__rand_int__" in k for k in keys[:3])  # buf, timer, meta of a random chat
    assert all(":seen:0:" in k for k in keys[5:])  # one ring of the dedupe index
    assert "__rand_int____rand_int__" in cmd[i + 14]  # a unique dedupe entry per call
    line = '"EVALSHA x 5 {"id":"1","text":"a, b"} 3","48508.00",' + ",".join(['"1.5"'] * 6)
    assert parse_rps("header\n" + line) == 48508.0


async def test_memory_and_idle_cpu(redis_url: str) -> None:
    out = console()
    got = await run_memory(1_500, 1.0, redis_url, out)
    rows = got["memory"]
    assert isinstance(rows, list) and len(rows) == 2
    generic, whatsapp = rows
    for r in rows:
        assert r["open_bytes"] > r["payload_bytes"] > 0
        assert r["naive_bytes"] > r["payload_bytes"]
        assert r["inflight_bytes"] > 0
        assert 0 < r["after_ack_bytes"] < r["open_bytes"]
        assert {"buf", "meta", "timer", "due (per entry)", "seen (per entry)"} <= set(
            r["breakdown"]
        )
    assert whatsapp["payload_bytes"] > generic["payload_bytes"]  # the data object
    cpu = got["idle_cpu_pct"]
    assert isinstance(cpu, dict) and len(cpu) == 2
    assert all(0 <= v < 100 for v in cpu.values())
    assert "bytes per batch" in text(out)


async def test_typing_events_keep_a_slow_typist_in_one_batch(redis_url: str) -> None:
    """Every gap is longer than the idle timeout: without typing events each
    message is a batch of its own; with them, each user's messages are one."""
    opts = TypistOptions(
        users=6, messages=3, idle_ms=80, typing_ms=400, typing_min_ms=300, typing_max_ms=340
    )
    out = console()
    without, with_typing = await run_typist(opts, redis_url, out)
    assert (without.variant, without.split, without.batches_per_user) == ("no typing events", 6, 3)
    assert (with_typing.split, with_typing.batches_per_user) == (0, 1)
    assert without.lost == with_typing.lost == 0
    assert "split rate" in text(out)


async def test_scale_every_process_hears_every_event_one_claims(redis_url: str) -> None:
    opts = ScaleOptions(procs=(1, 2), burst=600, rate=300, seconds=1.0)
    rows = await run_scale(opts, redis_url, console())
    assert [(r["procs"], r["phase"]) for r in rows] == [
        (1, "steady 300/s"), (1, "burst"), (2, "steady 300/s"), (2, "burst"),
    ]  # fmt: skip
    for r in rows:
        assert r["delivered"] == r["batches"]
        assert r["claimed"] == r["batches"]
        assert 0 <= r["swept"] <= r["claimed"]
        assert r["batches_per_s"] > 0
    one, two = rows[0], rows[2]
    assert one["lost_claims"] == 0
    # Two processes hear every event, but only the bucket's owner claims it.
    assert two["events"] >= 1.8 * two["batches"]
    assert two["lost_claims"] <= 0.05 * two["batches"]
    assert two["scripts_per_batch"] <= 1.3 * one["scripts_per_batch"]


async def test_scale_on_a_local_cluster(redis_binary: object) -> None:
    """``bench scale --cluster``: the same rows, Redis CPU per primary."""
    opts = ScaleOptions(procs=(1, 2), burst=600, rate=300, seconds=1.0, cluster=True)
    rows = await run_scale(opts, None, console())
    assert [(r["procs"], r["phase"]) for r in rows] == [
        (1, "steady 300/s"), (1, "burst"), (2, "steady 300/s"), (2, "burst"),
    ]  # fmt: skip
    for r in rows:
        assert r["delivered"] == r["batches"] and len(r["redis_cpu_pct_by_primary"]) == 3
        assert r["scripts_per_batch"] > 0 and r["batches_per_s"] > 0
    assert rows[2]["lost_claims"] <= 0.05 * rows[2]["batches"]


def test_http_builtin_client() -> None:
    out = console()
    results = run_http(1, 8, out, client="builtin")
    assert [r.client for r in results] == ["builtin", "builtin"]
    for r in results:
        assert r.requests_per_s > 0 and r.non_2xx == 0
    assert "batcher at" in text(out) and "builtin client" in text(out)


def test_cli_writes_json(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Also: the service's settings are not loaded, so a bad BATCHER_* variable of
    the shell neither breaks the benchmark nor changes what it measures."""
    monkeypatch.setenv("BATCHER_IDLE_MS", "not-a-number")
    monkeypatch.setenv("BATCHER_BUCKETS", "0")
    path = tmp_path / "memory.json"
    args = ["bench", "memory", "--batches", "300", "--seconds", "0"]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--redis-url", redis_url, "--json", str(path)])
    assert exit_info.value.code == 0
    doc = json.loads(path.read_text())
    assert len(doc["memory"]) == 2 and doc["idle_cpu_pct"] == {}


async def test_lag_server_knobs_apply_to_the_run_and_are_put_back(redis_url: str) -> None:
    import redis.asyncio

    opts = LagOptions(
        ns=(50,), window_s=0.2, idle_ms=400, wait_s=2.0, variants=("events-only",), hz=50
    )
    (result,) = await run_lag(opts, redis_url, console())
    assert result.checks["hz"] == "50" and result.delivered == 50
    async with redis.asyncio.Redis.from_url(redis_url) as client:
        assert (await client.config_get("hz"))["hz"] == "10"


def test_http_bench_measures_the_workers_beside_one_process() -> None:
    from service.tooling.bench.http import TARGETS, targets

    assert targets(1) == TARGETS
    names = list(targets(3))
    assert names[1] == "POST /webhooks/whatsapp (batcher, 3 workers)"
    assert targets(3)[names[1]][-2:] == ["--workers", "3"] and len(names) == 3
