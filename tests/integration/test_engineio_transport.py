"""Engine.IO behaviour that feedserver.eio_transport re-implements, through real clients:
pings on shared timers, the ping timeout, the WebSocket upgrade from long-polling."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from aiohttp import ClientSession, ClientWebSocketResponse, WSMsgType
from aiohttp.test_utils import TestServer

from feedserver.app import GATEWAY
from tests.conftest import ServerFactory
from tests.rest_calls import publish
from tests.socket_client import socket_client
from tests.waiting import eventually

PINGS = {"ping_interval": 1.0, "ping_timeout": 1.0}
RECEIVE_TIMEOUT = 5.0


async def open_raw_socket(http: ClientSession, server: TestServer) -> ClientWebSocketResponse:
    """A bare WebSocket that completes the Socket.IO connect; pings are left to the test."""
    ws = await http.ws_connect(
        server.make_url("/socket.io/?EIO=4&transport=websocket&tenant=tenant_a")
    )
    assert (await ws.receive_str(timeout=RECEIVE_TIMEOUT)).startswith("0{")  # Engine.IO OPEN
    await ws.send_str("40")  # Socket.IO CONNECT
    assert (await ws.receive_str(timeout=RECEIVE_TIMEOUT)).startswith("40{")
    return ws


async def connections(http: ClientSession, server: TestServer) -> int:
    async with http.get(server.make_url("/api/events/stats")) as resp:
        count: int = (await resp.json())["tenantStats"]["tenant_a"]["connections"]
    return count


async def until_forgotten(http: ClientSession, server: TestServer) -> None:
    """The socket was counted out (disconnect handler) and Engine.IO dropped it."""
    eio: Any = server.app[GATEWAY].sio.eio

    async def gone() -> bool:
        return await connections(http, server) == 0 and not eio.sockets

    await eventually(gone, "the server forgets the socket")


async def test_a_client_that_answers_pings_is_pinged_every_interval_and_stays(
    start_server: ServerFactory,
) -> None:
    server = await start_server(**PINGS)
    async with ClientSession() as http:
        ws = await open_raw_socket(http, server)
        pinged: list[float] = []
        while len(pinged) < 3:
            text = await ws.receive_str(timeout=RECEIVE_TIMEOUT)
            if text == "2":
                pinged.append(time.monotonic())
                await ws.send_str("3")
        gaps = [b - a for a, b in itertools.pairwise(pinged)]
        # ping_interval after each pong, at most one PING_TICK late (and a loaded box)
        assert all(0.95 <= gap <= 1.6 for gap in gaps), gaps
        assert not ws.closed
        assert await connections(http, server) == 1
        await ws.close()
        await until_forgotten(http, server)


async def test_a_client_that_stops_answering_pings_is_disconnected(
    start_server: ServerFactory,
) -> None:
    server = await start_server(**PINGS)
    async with ClientSession() as http:
        ws = await open_raw_socket(http, server)
        connected = time.monotonic()
        pings = 0
        while (msg := await ws.receive(timeout=RECEIVE_TIMEOUT)).type == WSMsgType.TEXT:
            pings += msg.data == "2"
        closed_after = time.monotonic() - connected
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)
        # one ping, no pong: gone ping_interval + ping_timeout after the client's last packet
        assert pings == 1
        assert 1.8 <= closed_after <= 3.5, closed_after
        await until_forgotten(http, server)


async def test_a_polling_client_upgrades_to_websocket_and_keeps_pinging(
    start_server: ServerFactory,
) -> None:
    server = await start_server(**PINGS)
    url = str(server.make_url("")).rstrip("/")
    async with socket_client(
        url, query={"tenant": "tenant_a"}, transports=["polling", "websocket"]
    ) as client:
        await client.expect_event("connection_established")
        for _ in range(100):
            if client.sio.transport() == "websocket":
                break
            await asyncio.sleep(0.02)  # python-socketio's client has no upgrade event
        assert client.sio.transport() == "websocket"
        # several ping intervals pass: the client's pongs keep the upgraded socket open
        await asyncio.sleep(2.5)
        event = await publish(server, "tenant_a", "after the upgrade")
        assert (await client.expect_event("event_created"))[0] == event


async def test_a_python_client_on_long_polling_disconnects_at_once(server: TestServer) -> None:
    """Its disconnect() waits for its pending poll: the server ends it with a NOOP (~30 s
    otherwise, until ping_interval ran out)."""
    async with socket_client(
        server.make_url(""), auth={"tenant": "tenant_a"}, transports=["polling"]
    ) as client:
        await client.expect_established()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.wait_for(client.sio.disconnect(), timeout=5)
        assert loop.time() - started < 2
    await eventually(lambda: not server.app[GATEWAY].sio.eio.sockets, "the socket is gone")
