"""rediss:// with a CA file: the engine's whole path over TLS, and a wrong CA refused."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from redis.asyncio.connection import SSLConnection
from redis.exceptions import ConnectionError as RedisConnectionError

from service.store.connections import create_redis
from service.store.embedded import RedisServer, free_port
from tests.helpers import Collector, running_engine


def make_ca(d: Path, name: str) -> tuple[Path, Path]:
    key, crt = d / f"{name}.key", d / f"{name}.crt"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(crt),
            "-days",
            "2",
            "-subj",
            f"/CN={name}",
        ],
        check=True,
        capture_output=True,
    )
    return key, crt


@pytest.fixture
def tls_server(tmp_path: Path, redis_binary: object):  # type: ignore[no-untyped-def]
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    if not isinstance(redis_binary, Path):
        pytest.skip("TLS test needs a local server binary")
    ca_key, ca_crt = make_ca(tmp_path, "ca")
    key, csr, crt = tmp_path / "server.key", tmp_path / "server.csr", tmp_path / "server.crt"
    subprocess.run(
        [
            "openssl",
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(csr),
            "-subj",
            "/CN=127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    ext = tmp_path / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost")
    subprocess.run(
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca_crt),
            "-CAkey",
            str(ca_key),
            "-CAcreateserial",
            "-out",
            str(crt),
            "-days",
            "2",
            "-extfile",
            str(ext),
        ],
        check=True,
        capture_output=True,
    )
    tls_port = free_port()
    server = RedisServer(
        redis_binary,
        data_dir=tmp_path / "data",
        extra_args=(
            "--tls-port",
            str(tls_port),
            "--tls-cert-file",
            str(crt),
            "--tls-key-file",
            str(key),
            "--tls-ca-cert-file",
            str(ca_crt),
            "--tls-auth-clients",
            "no",
        ),
    )
    try:
        server.start()
    except Exception as exc:  # a server built without TLS
        pytest.skip(f"this redis-server cannot serve TLS: {str(exc)[:200]}")
    yield tls_port, ca_crt, tmp_path
    server.stop()


async def test_engine_over_tls(tls_server) -> None:  # type: ignore[no-untyped-def]
    tls_port, ca_crt, _ = tls_server
    url = f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={ca_crt}"
    collector = Collector()
    async with running_engine(url, collector) as engine:
        assert issubclass(engine.redis.connection_pool.connection_class, SSLConnection)
        for i in range(3):
            await engine.add("tls-chat", f"m{i}")
        await collector.wait_messages(3)
    assert collector.texts("tls-chat") == ["m0", "m1", "m2"]


async def test_wrong_ca_is_refused(tls_server) -> None:  # type: ignore[no-untyped-def]
    tls_port, _, tmp = tls_server
    _, other_ca = make_ca(tmp, "other")
    client = create_redis(f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={other_ca}")
    with pytest.raises(RedisConnectionError):
        await client.ping()
    await client.aclose()
