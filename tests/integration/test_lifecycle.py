"""Readiness, draining, start-up checks, logs, the metrics port, SIGTERM with 200 clients."""

from __future__ import annotations

import json
import logging
import re
import signal
import socket
import uuid
from collections.abc import Iterator

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from feedserver.app import SHUTTING_DOWN
from feedserver.auth import mint_token
from feedserver.logs import configure_logging
from tests.e2e.live_server import free_port
from tests.js_swarm import js_swarm
from tests.metrics_scrape import scrape, value
from tests.server_process import server_process
from tests.socket_client import socket_client

CLIENTS = 200
SHUTDOWN_TIMEOUT = 5.0
METRICS_ON = re.compile(r"metrics on (http://[\d.]+:\d+)/metrics")


async def test_ready_turns_503_once_shutdown_begins_while_health_stays_200(
    server: TestServer,
) -> None:
    async with ClientSession(str(server.make_url(""))) as http:
        async with http.get("/api/ready") as resp:
            assert resp.status == 200
            assert (await resp.json())["status"] == "ready"
        server.app[SHUTTING_DOWN].set()
        async with http.get("/api/ready") as resp:
            assert resp.status == 503
            body = await resp.json()
        assert body["status"] == "unavailable" and body["shuttingDown"] is True
        async with http.get("/api/health") as resp:
            assert resp.status == 200


async def test_while_shutting_down_new_socket_sessions_get_503_and_old_ones_go_on(
    server: TestServer,
) -> None:
    handshake = "/socket.io/?EIO=4&transport=polling"
    async with ClientSession(str(server.make_url(""))) as http:
        async with http.get(handshake) as resp:
            assert resp.status == 200
            sid = json.loads((await resp.text())[1:])["sid"]
        server.app[SHUTTING_DOWN].set()
        async with http.get(handshake) as resp:
            assert resp.status == 503
            assert (await resp.json())["error"]["code"] == "shutting_down"
        async with http.post(f"{handshake}&sid={sid}", data="40") as resp:
            assert resp.status == 200


@pytest.mark.node
async def test_sigterm_with_200_clients_tells_each_one_and_ends_within_the_timeout() -> None:
    async with (
        server_process({"FEED_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT)}) as server,
        js_swarm(
            [server.url],
            count=CLIENTS,
            auth={"tenant": "tenant_a"},
            transports=["websocket"],
            reconnection=False,
        ) as swarm,
    ):
        await swarm.all_connected(CLIENTS)
        for _ in range(CLIENTS):
            await swarm.expect_type("initial")
        server.process.send_signal(signal.SIGTERM)
        assert await server.wait(SHUTDOWN_TIMEOUT) == 0
        told = [await swarm.expect_type("system") for _ in range(CLIENTS)]
        closed = [await swarm.expect_type("disconnect") for _ in range(CLIENTS)]
    assert {line["client"] for line in told} == set(range(CLIENTS))
    assert {(line["message"], line["level"]) for line in told} == {
        ("server shutting down", "warning")
    }
    assert {line["client"] for line in closed} == set(range(CLIENTS))
    assert "longer than" not in server.log


async def test_json_logs_are_one_object_per_line_with_request_ids_and_no_secrets() -> None:
    marker = f"marker-{uuid.uuid4().hex}"
    auth_secret = f"secret-{uuid.uuid4().hex}"
    token = mint_token(auth_secret, "tenant_a", 600)
    env = {
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "DEBUG",
        "FEED_AUTH": "token",
        "FEED_AUTH_SECRET": auth_secret,
    }
    async with server_process(env) as server:
        async with ClientSession(server.url) as http:
            headers = {"Authorization": f"Bearer {token}", "X-Request-ID": "rid-post-1"}
            async with http.post(
                "/api/events", json={"message": f"hello {marker}"}, headers=headers
            ) as resp:
                assert resp.status == 201
            headers["X-Request-ID"] = "rid-bad"
            async with http.post(
                "/api/events", json={"message": f"bad \x07 {marker}"}, headers=headers
            ) as resp:
                assert resp.status == 400
            # Whatever the answer, a query string (a socket.io token may travel there) and a
            # refused token are not logged either.
            headers["X-Request-ID"] = "rid-query"
            async with http.get(f"/api/events?token={token}", headers=headers):
                pass
            async with http.get("/api/events", headers={"Authorization": f"Bearer {marker}"}):
                pass
        async with socket_client(
            server.url, auth={"token": token}, transports=["websocket"]
        ) as client:
            await client.expect_established()
            ack = await client.emit("create_event", {"message": f"via socket {marker}"})
            assert ack["ok"] is True
        server.process.send_signal(signal.SIGTERM)
        assert await server.wait(SHUTDOWN_TIMEOUT) == 0

    entries = [json.loads(line) for line in server.log.splitlines()]
    assert all({"timestamp", "level", "event", "logger"} <= entry.keys() for entry in entries)
    access = [e for e in entries if e["logger"] == "feedserver.access"]
    post = [e for e in access if e.get("request_id") == "rid-post-1"]
    assert len(post) == 1
    assert (post[0]["method"], post[0]["route"], post[0]["status"]) == ("POST", "/api/events", 201)
    assert post[0]["tenant"] == "tenant_a" and post[0]["duration_ms"] >= 0
    assert [e["status"] for e in access if e.get("request_id") == "rid-bad"] == [400]
    for secret in (marker, token, auth_secret):
        assert secret not in server.log


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize(("level", "logged"), [("INFO", True), ("WARNING", False)])
async def test_the_access_log_is_on_at_info_and_off_at_warning(
    server: TestServer, capsys: pytest.CaptureFixture[str], level: str, logged: bool
) -> None:
    configure_logging(level, "text")
    async with (
        ClientSession(str(server.make_url(""))) as http,
        http.get("/api/health", headers={"X-Request-ID": "rid-health"}) as resp,
    ):
        assert resp.status == 200
    err = capsys.readouterr().err
    access = [line for line in err.splitlines() if "feedserver.access" in line]
    if logged:
        assert len(access) == 1
        assert "INFO feedserver.access: GET /api/health 200 " in access[0]
        assert access[0].endswith("[request_id=rid-health]")
    else:
        assert access == []


async def test_metrics_port_serves_metrics_and_the_main_port_does_not() -> None:
    async with server_process({"FEED_METRICS_PORT": str(free_port())}) as server:
        found = METRICS_ON.search(server.log)
        assert found is not None, server.log
        async with ClientSession(server.url) as http:
            async with http.get("/metrics") as resp:
                assert resp.status == 404
            async with http.post(
                "/api/events", json={"message": "x"}, headers={"X-Tenant-ID": "tenant_b"}
            ) as resp:
                assert resp.status == 201
        async with ClientSession(found.group(1)) as http:
            samples = await scrape(http)
        assert value(samples, "feed_events_published_total", tenant="tenant_b") == 1


async def start_failure(env: dict[str, str], *args: str) -> str:
    """The log of a server that must not start; it exited with code 1."""
    with pytest.raises(RuntimeError, match="exited with 1 at start") as failed:
        async with server_process(env, *args):
            pass
    log = str(failed.value)
    assert "listening on" not in log
    return log


async def test_a_port_in_use_fails_the_start_with_one_line_and_exit_code_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        # server_process passes --port 0; a later --port wins.
        log = await start_failure({}, "--port", str(taken.getsockname()[1]))
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "cannot listen" in errors[0]


async def test_an_unreachable_store_fails_the_start_with_one_line_and_exit_code_1() -> None:
    log = await start_failure({"FEED_STORE": f"redis://127.0.0.1:{free_port()}/0"})
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "cannot start: the redis store is unreachable" in errors[0]
