"""``batcher bench http``: the webhook under load, next to a bare endpoint.

Both run as real uvicorn processes with the same server settings, on the
same machine, hit by the same load generator (wrk) in the same run:
``POST /webhooks/whatsapp`` (signed, one text message, stored in Redis before
the 200) against a Starlette endpoint that answers 200 and does nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from .embedded import RedisServer, free_port
from .models import Batch

APP_SECRET = "bench-app-secret"
BODIES = 5_000


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


def signed_bodies(n: int) -> list[tuple[str, str]]:
    out = []
    for i in range(n):
        doc = {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "100",
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {
                                    "display_phone_number": "15550100000",
                                    "phone_number_id": "200",
                                },
                                "contacts": [
                                    {"profile": {"name": "Ana"}, "wa_id": f"1555{i % 500:07d}"}
                                ],
                                "messages": [
                                    {
                                        "from": f"1555{i % 500:07d}",
                                        "id": f"wamid.BENCH{i:08d}",
                                        "timestamp": "1767225600",
                                        "type": "text",
                                        "text": {"body": "hi, I need to change my order #4411"},
                                    }
                                ],
                            },
                        }
                    ],
                }
            ],
        }
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


def run_http(seconds: int, connections: int, console: Console) -> list[HttpResult]:
    if shutil.which("wrk") is None:
        console.print("[yellow]wrk is not installed (apt-get install wrk): skipped[/]")
        return []
    results: list[HttpResult] = []
    with (
        tempfile.TemporaryDirectory(prefix="batcher-http-") as tmp,
        RedisServer(data_dir=Path(tmp) / "redis") as redis,
    ):
        script = Path(tmp) / "post.lua"
        wrk_script(script, signed_bodies(BODIES))
        env = {
            **os.environ,
            "BATCHER_REDIS_URL": redis.url,
            "BATCHER_IDLE_MS": "1000",
            "BATCHER_WHATSAPP_APP_SECRET": APP_SECRET,
            "BATCHER_LOG_LEVEL": "WARNING",
            "BATCHER_HANDLER": "service.bench_http:discard",
        }
        targets = {
            "POST /webhooks/whatsapp (batcher)": [sys.executable, "-m", "service.cli", "serve"],
            "bare Starlette 200 (baseline)": [
                sys.executable,
                "-m",
                "uvicorn",
                "service.bench_http:bare_app",
                "--factory",
                "--log-level",
                "warning",
                "--no-access-log",
                "--host",
                "127.0.0.1",
            ],
        }
        for name, cmd in targets.items():
            port = free_port()
            env["BATCHER_PORT"] = str(port)
            full = cmd + (["--port", str(port)] if "uvicorn" in cmd else [])
            proc = subprocess.Popen(
                full, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                probe = "/readyz" if "serve" in cmd else "/webhooks/whatsapp"
                if probe == "/readyz":
                    _wait_http(f"http://127.0.0.1:{port}{probe}", proc)
                else:
                    time.sleep(1.0)
                    if proc.poll() is not None:
                        raise RuntimeError("baseline server exited")
                _run_wrk(port, script, 2, connections)  # warm-up
                rate, p50, p99, bad = _run_wrk(port, script, seconds, connections)
                results.append(HttpResult(name, round(rate), p50, p99, bad))
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    table = Table(title=f"HTTP: wrk, {connections} connections, {seconds} s each")
    for col in ("target", "requests/s", "p50 ms", "p99 ms", "non-2xx", "vs baseline"):
        table.add_column(col, justify="left" if col == "target" else "right")
    base = results[-1].requests_per_s if results else 1
    for r in results:
        table.add_row(
            r.target,
            f"{r.requests_per_s:.0f}",
            f"{r.p50_ms:.2f}",
            f"{r.p99_ms:.2f}",
            str(r.non_2xx),
            f"{r.requests_per_s / base:.0%}",
        )
    console.print(table)
    return results


def http_main(seconds: int, connections: int, json_path: str | None) -> None:
    results = run_http(seconds, connections, Console())
    if json_path:
        Path(json_path).write_text(json.dumps([asdict(r) for r in results], indent=2))
