"""The real `python -m feedserver` process: signals, shutdown and exit codes."""

from __future__ import annotations

import asyncio
import signal
import sys

import pytest

from tests.js_client import js_client
from tests.lines import LineReader
from tests.server_process import REPO_ROOT, ServerProcess, server_process
from tests.socket_client import socket_client

SHUTDOWN_DEADLINE = 5.0


async def stop_and_check_goodbye(
    server: ServerProcess, signum: int, clients: tuple[LineReader, ...]
) -> None:
    """Signal the server; every client gets the notice, then is disconnected; exit 0 in 5 s."""
    for client in clients:
        await client.expect_established()
    loop = asyncio.get_running_loop()
    started = loop.time()
    server.process.send_signal(signum)
    for client in clients:
        notice = (await client.expect_event("system_message", SHUTDOWN_DEADLINE))[0]
        assert notice["message"] == "server shutting down"
        assert notice["level"] in ("info", "warning")
        assert notice["timestamp"].endswith("Z")
        await client.expect_type("disconnect", SHUTDOWN_DEADLINE)
    assert await server.wait(SHUTDOWN_DEADLINE) == 0
    assert loop.time() - started < SHUTDOWN_DEADLINE
    assert "Traceback" not in server.log and "longer than" not in server.log


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_signal_tells_every_tenant_closes_connections_and_exits_0(signum: int) -> None:
    async with (
        server_process() as server,
        socket_client(server.url, query={"tenant": "tenant_a"}) as a,
        socket_client(server.url, auth={"tenant": "tenant_b"}, transports=["polling"]) as b,
    ):
        await stop_and_check_goodbye(server, signum, (a, b))


@pytest.mark.node
async def test_shutdown_with_js_clients_on_both_transports() -> None:
    async with (
        server_process() as server,
        js_client(server.url, query={"tenant": "tenant_a"}, transports=["websocket"]) as a,
        js_client(server.url, auth={"tenant": "tenant_b"}, transports=["polling"]) as b,
    ):
        await stop_and_check_goodbye(server, signal.SIGTERM, (a, b))
    # A transport close on both transports, as the Node original's clients see it; socket.io
    # clients retry it by themselves (docs/delivery.md).
    for client in (a, b):
        assert [line["reason"] for line in client.lines if line["type"] == "disconnect"] == [
            "transport close"
        ]


async def test_signal_without_clients_exits_0_quickly() -> None:
    async with server_process() as server:
        server.process.send_signal(signal.SIGTERM)
        assert await server.wait(SHUTDOWN_DEADLINE) == 0
    assert "stopped" in server.log


@pytest.mark.parametrize(
    ("args", "env", "variable"),
    [
        (("serve",), {"FEED_HISTORY_SIZE": "none"}, "FEED_HISTORY_SIZE"),
        (("serve", "--port", "http"), {}, "PORT"),
        (("check-config",), {"FEED_ENV": "production"}, "FEED_AUTH"),
    ],
)
async def test_bad_configuration_exits_2_with_one_line(
    args: tuple[str, ...], env: dict[str, str], variable: str
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "feedserver",
        *args,
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT), **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    assert out == b""
    lines = err.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"feedserver: invalid {variable}: ")
