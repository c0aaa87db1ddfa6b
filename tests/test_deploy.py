"""compose.yaml and the Dockerfile, checked with what runs here (no Docker engine)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return doc


def test_redis_runs_with_the_repo_config_and_a_volume(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert redis["image"].startswith("redis:")
    mounts = redis["volumes"]
    assert any(m.startswith("./redis.conf:") for m in mounts)
    named = [m.split(":")[0] for m in mounts if not m.startswith(".")]
    assert named and all(n in compose["volumes"] for n in named)
    conf_path = next(m.split(":")[1] for m in mounts if m.startswith("./redis.conf:"))
    assert conf_path in redis["command"]
    assert "healthcheck" in redis


def test_service_waits_for_a_healthy_redis(compose: dict[str, Any]) -> None:
    svc = compose["services"]["batcher"]
    assert svc["build"] == "."
    assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
    assert svc["environment"]["BATCHER_REDIS_URL"].startswith("redis://redis:")
    assert any(e["path"] == ".env" for e in svc["env_file"])
    assert "/healthz" in " ".join(svc["healthcheck"]["test"])
    # a port range, so that two replicas (`--scale batcher=2`) do not collide
    assert re.search(r"\d+-\d+:8000", svc["ports"][0])
    assert "container_name" not in svc


def test_cluster_profile_six_nodes_an_init_and_two_service_replicas(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    cluster = {name: svc for name, svc in services.items() if "cluster" in svc.get("profiles", ())}
    nodes = [svc for name, svc in cluster.items() if name.startswith("redis-node-")]
    assert len(nodes) == 6
    for node in nodes:  # the repo's redis.conf, cluster mode on, a volume of its own
        assert any(m.startswith("./redis.conf:") for m in node["volumes"])
        assert "--cluster-enabled" in node["command"] and "healthcheck" in node
        named = [m.split(":")[0] for m in node["volumes"] if not m.startswith(".")]
        assert named and all(n in compose["volumes"] for n in named)
    init = cluster["redis-cluster-init"]
    assert set(init["depends_on"]) == {f"redis-node-{n}" for n in range(1, 7)}
    assert "--cluster create" in init["command"][0] and "--cluster-replicas 1" in init["command"][0]
    svc = cluster["batcher-cluster"]
    assert svc["deploy"]["replicas"] == 2 and svc["build"] == "."
    assert svc["depends_on"]["redis-cluster-init"]["condition"] == "service_completed_successfully"
    assert svc["environment"]["BATCHER_REDIS_URL"].startswith("redis://redis-node-")
    assert re.search(r"\d+-\d+:8000", svc["ports"][0])
    # the default services stay outside the profile
    assert "profiles" not in services["redis"] and "profiles" not in services["batcher"]


def test_dockerfile_is_multi_stage_uv_and_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2
    assert "uv sync --locked" in text
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1] not in ("root", "0")
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert re.search(r'^CMD \["batcher", "serve"\]', text, re.M)


def test_docker_compose_config_when_available() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip("no docker compose plugin")
    r = subprocess.run(
        [docker, "compose", "-f", str(ROOT / "compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
