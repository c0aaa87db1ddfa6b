"""``batcher bench http``: the webhook under load, next to a bare endpoint.

Both run as real uvicorn processes with the same server settings, on the
same machine, hit by the same load generator in the same run:
``POST /webhooks/whatsapp`` (signed, one text message, stored in Redis before
the 200) against a Starlette endpoint that answers 200 and does nothing.
The load generator is wrk when installed, else the built-in asyncio client
(``load.py``), whose headroom the table shows (``--client both`` runs
the two side by side).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import redis
from rich.console import Console
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from service.models import Batch
from service.store.embedded import RedisServer, free_port
from service.tooling.bench.common import loop_factory, note, table
from service.tooling.bench.load import post_request, run_load
from service.tooling.samples import text_webhook

APP_SECRET = "bench-app-secret"
BODIES = 5_000
TARGET = 0.6


async def discard(batch: Batch) -> None:
    """A handler that acknowledges every batch (BATCHER_HANDLER for the bench)."""


async def _ok(request: Request) -> PlainTextResponse:
    await request.body()
    return PlainTextResponse("OK")


def bare_app() -> Starlette:
    """The baseline: same framework and server, no work."""
    return Starlette(routes=[Route("/webhooks/whatsapp", _ok, methods=["POST"])])


@dataclass
class HttpResult:
    target: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    client: str = "wrk"
    server_cpu_pct: float = float("nan")  # the uvicorn process, % of one core
    redis_cpu_pct: float = float("nan")

    @property
    def cpu_us_per_request(self) -> float:
        """Server + Redis CPU per request (microseconds)."""
        redis_cpu = 0.0 if math.isnan(self.redis_cpu_pct) else self.redis_cpu_pct
        cpu = self.server_cpu_pct + redis_cpu
        return cpu / 100 / self.requests_per_s * 1e6 if self.requests_per_s else float("nan")


def proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` and the
    processes it started (``serve --workers N``), from Linux's /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return float("nan")
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(proc_cpu_s(int(child)) for child in children)


def redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def signed_bodies(n: int) -> list[tuple[str, str]]:
    out = []
    for i in range(n):
        sender = f"1555{i % 500:07d}"
        text = "hi, I need to change my order #4411"
        doc = text_webhook(
            [(sender, f"wamid.BENCH{i:08d}", text)], phone_number_id="200", contact_name="Ana"
        )
        body = json.dumps(doc, separators=(",", ":"))
        sig = hmac.new(APP_SECRET.encode(), body.encode(), hashlib.sha256).hexdigest()
        out.append((body, "sha256=" + sig))
    return out


def wrk_script(path: Path, bodies: list[tuple[str, str]]) -> None:
    """A wrk Lua script cycling through pre-signed bodies (wrk has no HMAC)."""
    lines = ["local bodies = {"]
    lines += [f"  {{{json.dumps(b)}, {json.dumps(s)}}}," for b, s in bodies]
    lines += [
        "}",
        "local i = 0",
        "request = function()",
        "  i = i % #bodies + 1",
        '  local h = {["Content-Type"] = "application/json",'
        ' ["X-Hub-Signature-256"] = bodies[i][2]}',
        '  return wrk.format("POST", "/webhooks/whatsapp", h, bodies[i][1])',
        "end",
    ]
    path.write_text("\n".join(lines))


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early ({proc.returncode})")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} never answered")


def _run_wrk(
    port: int, script: Path, seconds: int, connections: int
) -> tuple[float, float, float, int]:
    wrk = shutil.which("wrk")
    assert wrk is not None
    out = subprocess.run(
        [
            wrk,
            "-t2",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)", out, re.M)
        if m is None:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return rate, pct("50"), pct("99"), int(bad.group(1)) if bad else 0


def _wait_bare(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    """The bare app answers POST only: wait until its port accepts connections."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"baseline server exited early ({proc.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} never accepted a connection")


def _run_builtin(
    port: int, bodies: list[tuple[str, str]], seconds: int, connections: int
) -> tuple[float, float, float, int]:
    requests = [
        post_request(
            "127.0.0.1",
            port,
            "/webhooks/whatsapp",
            body.encode(),
            {"Content-Type": "application/json", "X-Hub-Signature-256": sig},
        )
        for body, sig in bodies
    ]
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        r = runner.run(
            run_load("127.0.0.1", port, requests, connections=connections, seconds=seconds)
        )
    return r.per_s, r.p50_ms, r.p99_ms, r.non_2xx + r.errors


def clients_for(choice: str) -> list[str]:
    have_wrk = shutil.which("wrk") is not None
    if choice == "auto":
        return ["wrk"] if have_wrk else ["builtin"]
    if choice == "both":
        return ["wrk", "builtin"] if have_wrk else ["builtin"]
    if choice == "wrk" and not have_wrk:
        raise SystemExit("wrk is not installed (apt-get install wrk); try --client builtin")
    return [choice]


TARGETS = {
    "POST /webhooks/whatsapp (batcher)": [sys.executable, "-m", "service.cli", "serve"],
    "bare Starlette 200 (baseline)": [
        *(sys.executable, "-m", "uvicorn", "service.tooling.bench.http:bare_app", "--factory"),
        *("--log-level", "warning", "--no-access-log", "--host", "127.0.0.1"),
    ],
}


def targets(workers: int) -> dict[str, list[str]]:
    """The commands measured: the service (also with N workers when N > 1) and the bare app."""
    if workers <= 1:
        return dict(TARGETS)
    serve, bare = TARGETS.items()
    many = (f"{serve[0][:-1]}, {workers} workers)", [*serve[1], "--workers", str(workers)])
    return dict([serve, many, bare])


def run_http(
    seconds: int, connections: int, console: Console, client: str = "auto", workers: int = 1
) -> list[HttpResult]:
    clients = clients_for(client)
    if clients == ["builtin"]:
        console.print("[dim]wrk is not installed: the built-in asyncio client generates load[/]")
    results: list[HttpResult] = []
    bodies = signed_bodies(BODIES)
    with (
        tempfile.TemporaryDirectory(prefix="batcher-http-") as tmp,
        RedisServer(data_dir=Path(tmp) / "redis") as server,
        redis.Redis.from_url(server.url) as rclient,
    ):
        script = Path(tmp) / "post.lua"
        wrk_script(script, bodies)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("BATCHER_")},
            "BATCHER_REDIS_URL": server.url,
            "BATCHER_IDLE_MS": "1000",
            "BATCHER_WHATSAPP_APP_SECRET": APP_SECRET,
            "BATCHER_LOG_LEVEL": "WARNING",
            "BATCHER_HANDLER": "service.tooling.bench.http:discard",
        }
        for name, cmd in targets(workers).items():
            port = free_port()
            env["BATCHER_PORT"] = str(port)
            full = cmd + (["--port", str(port)] if "uvicorn" in cmd else [])
            proc = subprocess.Popen(
                full, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                if "serve" in cmd:
                    _wait_http(f"http://127.0.0.1:{port}/readyz", proc)
                else:
                    _wait_bare(port, proc)
                for gen in clients:
                    if gen == "wrk":
                        _run_wrk(port, script, 2, connections)  # warm-up
                    cpu0, rcpu0, t0 = proc_cpu_s(proc.pid), redis_cpu(rclient), time.monotonic()
                    if gen == "wrk":
                        rate, p50, p99, bad = _run_wrk(port, script, seconds, connections)
                    else:
                        rate, p50, p99, bad = _run_builtin(port, bodies, seconds, connections)
                    wall = time.monotonic() - t0
                    cpu = (proc_cpu_s(proc.pid) - cpu0) / wall * 100
                    rcpu = (redis_cpu(rclient) - rcpu0) / wall * 100
                    results.append(
                        HttpResult(name, round(rate), p50, p99, bad, gen, round(cpu), round(rcpu))
                    )
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    print_http(results, seconds, connections, console)
    return results


def print_http(results: list[HttpResult], seconds: int, connections: int, console: Console) -> None:
    cols = (
        *("target", "client", "requests/s", "p50 ms", "p99 ms", "non-2xx", "vs baseline"),
        *("server CPU %", "Redis CPU %", "CPU us/req"),
    )
    rows: list[list[object]] = []
    for r in results:
        base = next(b for b in results if b.client == r.client and "baseline" in b.target)
        ratio = f"{r.requests_per_s / base.requests_per_s:.0%}" if base.requests_per_s else "-"
        rows.append(
            [
                *(r.target, r.client, r.requests_per_s, r.p50_ms, r.p99_ms, r.non_2xx, ratio),
                *(r.server_cpu_pct, r.redis_cpu_pct, r.cpu_us_per_request),
            ]
        )
    console.print(
        table(f"HTTP: {connections} keep-alive connections, {seconds} s each", cols, rows)
    )
    for gen in dict.fromkeys(r.client for r in results):
        svc = next(r for r in results if r.client == gen and "baseline" not in r.target)
        bare = next(r for r in results if r.client == gen and "baseline" in r.target)
        share = svc.requests_per_s / bare.requests_per_s if bare.requests_per_s else 0.0
        verdict = "met" if share >= TARGET else "NOT met"
        note(console, f"{gen}: batcher at {share:.0%} of the bare endpoint (target >= "
             f"{TARGET:.0%}: {verdict})")  # fmt: skip
        if gen == "builtin":
            head = bare.requests_per_s / svc.requests_per_s if svc.requests_per_s else 0.0
            if head >= 2:
                note(console, f"builtin client: it drove the bare endpoint at {head:.1f}x the "
                     "service's rate, so it is not what limits the service's figure")  # fmt: skip
            else:
                note(console, f"builtin client: it drove the bare endpoint at only {head:.1f}x "
                     "the service's rate: client and servers share the CPU, so the client "
                     "may limit both figures (use wrk for a firmer number)")  # fmt: skip


def http_main(
    seconds: int, connections: int, client: str, json_path: str | None, workers: int = 1
) -> None:
    results = run_http(seconds, connections, Console(), client, workers)
    if json_path:
        doc = [{**asdict(r), "cpu_us_per_request": r.cpu_us_per_request} for r in results]
        Path(json_path).write_text(json.dumps(doc, indent=2))
