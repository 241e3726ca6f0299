"""The memory store's tenant registry in FEED_DATA_DIR, across real restarts of the process."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from tests.server_process import ServerProcess, server_process

EXIT_WITHIN_S = 5.0


async def call(server: ServerProcess, method: str, path: str, body: Any = None) -> int:
    headers = {"X-Tenant-ID": "acme"} if path == "/api/events" else {}
    async with (
        ClientSession(server.url) as http,
        http.request(method, path, json=body, headers=headers) as resp,
    ):
        return resp.status


async def tenant_ids(server: ServerProcess) -> list[str]:
    async with (
        ClientSession(server.url) as http,
        http.get("/api/admin/tenants") as resp,
    ):
        return [t["id"] for t in (await resp.json())["tenants"]]


async def stop(server: ServerProcess) -> None:
    server.process.send_signal(signal.SIGTERM)
    assert await server.wait(EXIT_WITHIN_S) == 0


async def test_tenants_created_at_runtime_survive_a_restart_with_a_data_dir(
    tmp_path: Path,
) -> None:
    env = {"FEED_DATA_DIR": str(tmp_path / "data")}
    async with server_process(env) as server:
        assert await call(server, "POST", "/api/admin/tenants", {"id": "acme"}) == 201
        assert await call(server, "DELETE", "/api/admin/tenants/tenant_a") == 204
        await stop(server)
    async with server_process(env) as server:
        assert await tenant_ids(server) == ["acme", "tenant_b"]
        assert await call(server, "POST", "/api/events", {"message": "back"}) == 201
        assert "lost on restart" not in server.log
        await stop(server)


async def test_without_a_data_dir_the_start_says_runtime_tenants_are_lost() -> None:
    async with server_process({}) as server:
        assert await call(server, "POST", "/api/admin/tenants", {"id": "acme"}) == 201
        info = [line for line in server.log.splitlines() if "FEED_DATA_DIR is not set" in line]
        assert len(info) == 1 and " INFO " in info[0] and "lost on restart" in info[0]
        await stop(server)
    async with server_process({}) as server:
        assert await tenant_ids(server) == ["tenant_a", "tenant_b"]
        await stop(server)


async def start_failure(env: dict[str, str]) -> str:
    """The log of a server that must not start; it exited with code 1."""
    with pytest.raises(RuntimeError, match="exited with 1 at start") as failed:
        async with server_process(env):
            pass
    return str(failed.value)


async def test_a_corrupt_tenants_file_stops_the_start_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "tenants.json").write_text('{"schemaVersion": 1, "tenants": [')
    log = await start_failure({"FEED_DATA_DIR": str(tmp_path)})
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 1, log
    assert "cannot start" in errors[0] and str(tmp_path / "tenants.json") in errors[0]
    assert "Traceback" not in log


async def test_a_second_server_on_one_data_dir_does_not_start(tmp_path: Path) -> None:
    env = {"FEED_DATA_DIR": str(tmp_path)}
    async with server_process(env) as first:
        log = await start_failure(env)
        assert "is in use by another feedserver process" in log
        await stop(first)
