"""The real feedserver in a subprocess on a free port, and a small REST client for it.

Shared by the e2e fixtures and the screenshot script.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
SOCKETIO_CLIENT = REPO_ROOT / "web" / "node_modules" / "socket.io-client" / "dist"
STARTUP_DEADLINE_S = 30.0
STOP_DEADLINE_S = 10.0
# Whatever the developer's shell sets must not change what the page sees.
_DROPPED = re.compile(r"^(PORT|HOST|CORS_ORIGIN|FEED_.*|RATE_LIMIT_.*|LOG_.*)$")


@dataclass(frozen=True)
class FeedServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def start_server(
    log_path: Path,
    *,
    tenants: Sequence[str] = ("tenant_a", "tenant_b"),
    env: dict[str, str] | None = None,
    port: int | None = None,
    web_root: Path | None = None,
) -> Iterator[FeedServer]:
    """Run `python -m feedserver serve` until the block ends; yields once /api/health answers.

    With `web_root`, the same server serves that page instead of `web/` (`page_server`).
    """
    if not SOCKETIO_CLIENT.is_dir():
        raise RuntimeError(f"{SOCKETIO_CLIENT} is missing: run `npm ci --prefix web` first")
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    server_env = {k: v for k, v in os.environ.items() if not _DROPPED.match(k)}
    server_env |= {
        "FEED_TENANTS": ",".join(tenants),
        "CORS_ORIGIN": url,
        "RATE_LIMIT_MAX_REQUESTS": "100000",
        "PYTHONUNBUFFERED": "1",
    }
    server_env |= env or {}
    command = [
        sys.executable,
        "-m",
        "feedserver",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    if web_root is not None:
        page_server = ["-m", "tests.e2e.page_server", str(web_root), "127.0.0.1", str(port)]
        command = [sys.executable, *page_server]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=server_env, stdout=log, stderr=subprocess.STDOUT
        )
    server = FeedServer(url=url, process=process, log_path=log_path)
    try:
        _wait_until_healthy(server)
        yield server
    finally:
        _stop(process)


def _wait_until_healthy(server: FeedServer) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"feedserver exited with {server.process.returncode}:\n{server.log_tail()}"
            )
        try:
            with urllib.request.urlopen(f"{server.url}/api/health", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)  # readiness polling, bounded by the deadline
    raise RuntimeError(f"feedserver not healthy after {STARTUP_DEADLINE_S}s:\n{server.log_tail()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_DEADLINE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class RestClient:
    """The feed's REST API as a tenant sees it: X-Tenant-ID, or a bearer token in token mode."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def post_event(self, tenant: str, message: str, *, token: str | None = None) -> dict[str, Any]:
        body = json.dumps({"message": message}).encode()
        return self._request("POST", "/api/events", _identity(tenant, token), body, expected=201)

    def list_events(self, tenant: str, limit: int = 500) -> dict[str, Any]:
        path = f"/api/events?limit={limit}"
        return self._request("GET", path, _identity(tenant, None), None, expected=200)

    def post_system_message(self, admin_token: str, message: str, level: str = "info") -> None:
        body = json.dumps({"message": message, "level": level}).encode()
        headers = {"Authorization": f"Bearer {admin_token}"}
        self._request("POST", "/api/system-messages", headers, body, expected=202)

    def _request(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes | None,
        *,
        expected: int,
    ) -> dict[str, Any]:
        headers = {**headers, "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(
            self.base_url + path, data=body, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, exc.read()
        if status != expected:
            raise AssertionError(f"{method} {path} -> {status}: {payload[:500]!r}")
        result: dict[str, Any] = json.loads(payload) if payload else {}
        return result


def _identity(tenant: str, token: str | None) -> dict[str, str]:
    if token is not None:
        return {"Authorization": f"Bearer {token}"}
    return {"X-Tenant-ID": tenant}
