"""deploy/ without Docker: the files are checked as far as other tools allow — the nginx
template by `nginx -t`, the compose files by parsing them — and the same topology is
started for real by deploy/cluster.sh (`make cluster`)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import ClientSession

from tests.e2e.live_server import free_port
from tests.feed_subscriber import subscribed
from tests.redis_cluster import cluster_port

pytestmark = pytest.mark.redis

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def nginx() -> str:
    found = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    if found is None:
        raise RuntimeError("nginx is not installed (make sysdeps installs it)")
    return found


def render_template(node_1: str, node_2: str, listen: str) -> str:
    text = (DEPLOY / "nginx" / "feedserver.conf.template").read_text()
    for name, value in (("FEED_NODE_1", node_1), ("FEED_NODE_2", node_2), ("NGINX_PORT", listen)):
        text = text.replace(f"${{{name}}}", value)
    return text


def load_compose(*names: str) -> list[dict[str, Any]]:
    return [yaml.safe_load((DEPLOY / name).read_text()) for name in names]


def test_the_nginx_template_renders_to_a_config_nginx_accepts(tmp_path: Path) -> None:
    rendered = render_template("127.0.0.1:3001", "127.0.0.1:3002", "127.0.0.1:8080")
    assert "${" not in rendered
    (tmp_path / "feedserver.conf").write_text(rendered)
    shutil.copy(DEPLOY / "nginx" / "nginx.conf", tmp_path / "nginx.conf")
    (tmp_path / "tmp").mkdir()
    checked = subprocess.run(
        [nginx(), "-t", "-e", "stderr", "-p", str(tmp_path), "-c", "nginx.conf"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert "ip_hash;" in rendered and "proxy_set_header Upgrade $http_upgrade;" in rendered


def test_compose_runs_redis_with_aof_two_nodes_on_it_and_nginx_in_front() -> None:
    (compose,) = load_compose("docker-compose.yml")
    services = compose["services"]
    assert set(services) == {"redis", "node1", "node2", "nginx"}
    assert "--appendonly" in services["redis"]["command"]
    for node in ("node1", "node2"):
        service = services[node]
        assert service["environment"]["FEED_STORE"] == "redis://redis:6379/0"
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        trusted = service["environment"]["FEED_TRUST_PROXY"]
        assert trusted == services["nginx"]["networks"]["feed"]["ipv4_address"]
    nginx_env = services["nginx"]["environment"]
    assert (nginx_env["FEED_NODE_1"], nginx_env["FEED_NODE_2"]) == ("node1:3000", "node2:3000")
    template = services["nginx"]["volumes"][0].split(":")[0]
    assert (DEPLOY / template).resolve() == DEPLOY / "nginx" / "feedserver.conf.template"


def test_the_dev_override_reloads_both_nodes_from_the_mounted_source() -> None:
    (dev,) = load_compose("docker-compose.dev.yml")
    for node in ("node1", "node2"):
        service = dev["services"][node]
        assert service["command"][0] == "watchfiles"
        assert "../feedserver:/app/feedserver" in service["volumes"]


def test_the_dockerfile_builds_in_stages_and_runs_unprivileged_with_a_healthcheck() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    stages = [line for line in text.splitlines() if line.startswith("FROM ")]
    assert len(stages) == 3 and any(" AS web" in s and "node:" in s for s in stages)
    assert "slim" in stages[-1]
    assert "\nUSER feed\n" in text and "HEALTHCHECK" in text and "/api/health" in text
    assert "npm ci" in text and "COPY web ./web" in text


def test_the_image_keeps_the_tenant_registry_of_the_memory_store_on_a_volume() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert "FEED_DATA_DIR=/data" in text and "\nVOLUME /data\n" in text
    assert text.index("chown feed:feed /data") < text.index("\nUSER feed\n")


@pytest.mark.parametrize("redis", ["single", "cluster"])
async def test_make_cluster_serves_both_nodes_through_nginx(tmp_path: Path, redis: str) -> None:
    ports = {name: free_port() for name in ("CLUSTER_PORT", "NODE1_PORT", "NODE2_PORT")}
    ports["REDIS_PORT"] = free_port() if redis == "single" else cluster_port(3)
    env = {
        **os.environ,
        **{k: str(v) for k, v in ports.items()},
        "CLUSTER_DIR": str(tmp_path),
        "CLUSTER_REDIS": redis,
        "PYTHON": sys.executable,
    }
    for name in ("FEED_STORE", "FEED_TENANTS", "FEED_AUTH", "PORT", "HOST"):
        env.pop(name, None)
    process = await asyncio.create_subprocess_exec(
        str(DEPLOY / "cluster.sh"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C reaches the whole group, as in a terminal
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(60):
            async for line in process.stdout:
                if b"cluster: up" in line:
                    break
            else:
                raise AssertionError("deploy/cluster.sh ended before it was up")
        proxy = f"http://127.0.0.1:{ports['CLUSTER_PORT']}"
        async with ClientSession() as http, subscribed(proxy, "tenant_a") as sub:
            node_2 = f"http://127.0.0.1:{ports['NODE2_PORT']}/api/events"
            async with http.post(
                node_2, json={"message": "hi"}, headers={"X-Tenant-ID": "tenant_a"}
            ) as resp:
                assert resp.status == 201
            await sub.wait_for(lambda: len(sub.live) == 1)
            async with http.get(f"{proxy}/api/health") as resp:
                health = await resp.json()
            assert health["store"] == {"backend": "redis", "ok": True}
    finally:
        os.killpg(process.pid, signal.SIGINT)
        await asyncio.wait_for(process.wait(), 30)
    if redis == "single":
        assert (tmp_path / "redis" / "appendonlydir").is_dir()
    else:
        redis_ports = range(ports["REDIS_PORT"], ports["REDIS_PORT"] + 3)
        assert all((tmp_path / f"redis-{port}" / "appendonlydir").is_dir() for port in redis_ports)
