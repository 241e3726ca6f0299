"""The real process: start-up checks, logs, the metrics port and a graceful SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
import uuid
from typing import Any

import pytest
import socketio
from aiohttp import ClientSession

from tests.e2e.live_server import free_port
from tests.feedserver_process import METRICS_ON, ROOT, FeedserverProcess
from tests.metrics_scrape import scrape, value

CLIENTS = 200
SHUTDOWN_TIMEOUT = 5.0
NODE_TIMEOUT = 60


async def read_json_line(stream: asyncio.StreamReader) -> Any:
    line = await asyncio.wait_for(stream.readline(), NODE_TIMEOUT)
    assert line, "the node script ended without output"
    return json.loads(line)


@pytest.mark.node
async def test_sigterm_with_200_clients_tells_each_one_and_ends_within_the_timeout() -> None:
    server = await FeedserverProcess.start(FEED_SHUTDOWN_TIMEOUT=str(SHUTDOWN_TIMEOUT))
    clients = None
    try:
        url = await server.url()
        clients = await asyncio.create_subprocess_exec(
            "node",
            str(ROOT / "tests" / "js" / "many_clients.js"),
            url,
            "tenant_a",
            str(CLIENTS),
            stdout=asyncio.subprocess.PIPE,
        )
        assert clients.stdout is not None
        assert await read_json_line(clients.stdout) == {"connected": CLIENTS}

        signalled = time.monotonic()
        assert await server.stop(signal.SIGTERM) == 0
        assert time.monotonic() - signalled < SHUTDOWN_TIMEOUT

        report = await read_json_line(clients.stdout)
        assert report["closed"] == CLIENTS
        assert report["systemMessages"] == [["warning"]] * CLIENTS
        assert await asyncio.wait_for(clients.wait(), NODE_TIMEOUT) == 0
    finally:
        if clients is not None and clients.returncode is None:
            clients.kill()
            await clients.wait()
        await server.kill()


async def test_json_logs_are_one_object_per_line_with_request_ids_and_no_secrets() -> None:
    secret = f"secret-{uuid.uuid4().hex}"
    server = await FeedserverProcess.start(LOG_FORMAT="json", LOG_LEVEL="DEBUG")
    try:
        url = await server.url()
        async with ClientSession(url) as http:
            headers = {
                "X-Tenant-ID": "tenant_a",
                "X-Request-ID": "rid-post-1",
                "Authorization": f"Bearer {secret}",
            }
            async with http.post(
                "/api/events", json={"message": f"hello {secret}"}, headers=headers
            ) as resp:
                assert resp.status == 201
            async with http.post(
                "/api/events",
                json={"message": f"bad \x07 {secret}"},
                headers={"X-Tenant-ID": "tenant_a", "X-Request-ID": "rid-bad"},
            ) as resp:
                assert resp.status == 400
            # Whatever the answer, the query string (a socket.io token may hide there) is
            # not logged.
            async with http.get(f"/api/events?token={secret}", headers=headers):
                pass
        client = socketio.AsyncClient(reconnection=False)
        await client.connect(
            url, auth={"tenant": "tenant_b", "token": secret}, transports=["websocket"]
        )
        ack = await client.call("create_event", {"message": f"via socket {secret}"}, timeout=10)
        assert ack["ok"] is True
        await client.disconnect()
        assert await server.stop() == 0
    finally:
        await server.kill()

    entries = [json.loads(line) for line in server.lines]
    assert all({"timestamp", "level", "event", "logger"} <= entry.keys() for entry in entries)
    access = [e for e in entries if e["logger"] == "feedserver.access"]
    post = [e for e in access if e.get("request_id") == "rid-post-1" and e["method"] == "POST"]
    assert len(post) == 1
    assert post[0]["route"] == "/api/events" and post[0]["status"] == 201
    assert post[0]["tenant"] == "tenant_a" and post[0]["duration_ms"] >= 0
    assert [e["status"] for e in access if e.get("request_id") == "rid-bad"] == [400]
    assert all(e["route"] != f"/api/events?token={secret}" for e in access)
    assert secret not in "\n".join(server.lines)


@pytest.mark.parametrize(("level", "logged"), [("INFO", True), ("WARNING", False)])
async def test_the_access_log_is_on_at_info_and_off_at_warning(level: str, logged: bool) -> None:
    port = free_port()
    server = await FeedserverProcess.start(LOG_LEVEL=level, PORT=str(port))
    try:
        async with (
            ClientSession(await server.accepting(port)) as http,
            http.get("/api/health", headers={"X-Request-ID": "rid-health"}) as resp,
        ):
            assert resp.status == 200
        assert await server.stop() == 0
    finally:
        await server.kill()
    access = [line for line in server.lines if "GET /api/health 200" in line]
    assert len(access) == (1 if logged else 0)
    if logged:
        assert "request_id=rid-health" in access[0]


async def test_metrics_port_serves_metrics_and_the_main_port_does_not() -> None:
    server = await FeedserverProcess.start(FEED_METRICS_PORT=str(free_port()))
    try:
        main_url, metrics_url = await server.url(), await server.url(METRICS_ON)
        async with ClientSession(main_url) as http:
            async with http.get("/metrics") as resp:
                assert resp.status == 404
            async with http.post(
                "/api/events", json={"message": "x"}, headers={"X-Tenant-ID": "tenant_b"}
            ) as resp:
                assert resp.status == 201
        async with ClientSession(metrics_url) as http:
            samples = await scrape(http)
        assert value(samples, "feed_events_published_total", tenant="tenant_b") == 1
        assert await server.stop() == 0
    finally:
        await server.kill()


async def test_a_port_in_use_fails_the_start_with_one_line_and_exit_code_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = await FeedserverProcess.start(PORT=str(port))
        assert await server.exit_code() == 1
    errors = [line for line in server.lines if "ERROR" in line]
    assert len(errors) == 1 and "cannot listen" in errors[0]
    assert not any("listening on" in line for line in server.lines)


async def test_an_unreachable_store_fails_the_start_with_one_line_and_exit_code_1() -> None:
    server = await FeedserverProcess.start(FEED_STORE=f"redis://127.0.0.1:{free_port()}/0")
    assert await server.exit_code() == 1
    errors = [line for line in server.lines if "ERROR" in line]
    assert len(errors) == 1 and "cannot start: the redis store is unreachable" in errors[0]
    assert not any("listening on" in line for line in server.lines)
