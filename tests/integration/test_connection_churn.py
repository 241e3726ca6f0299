"""Connection churn leaves nothing behind: thousands of sockets that connect and leave,
through real WebSocket and socket.io clients, and what they held is freed once they are gone."""

from __future__ import annotations

import asyncio
import collections
import gc
from typing import Any

from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from feedserver.app import GATEWAY
from feedserver.core import LocalConnections
from feedserver.engineio import EngineSocket
from feedserver.engineio.websocket import WebSocketConnection
from feedserver.realtime import Session
from tests.conftest import ServerFactory
from tests.socket_client import socket_client
from tests.waiting import eventually

WS_PATH = "/socket.io/?EIO=4&transport=websocket&tenant=tenant_a"
RECEIVE_TIMEOUT = 10.0
CYCLES = 1500  # each a full handshake and one that leaves before its CONNECT reply
CONCURRENCY = 50
# Far beyond the test: no socket here is ever due its first ping, and engineio's service
# task, which holds the sockets of its current round (a copy of `sockets`) while it sleeps
# ping_timeout / len(sockets) per socket, stays in its first round (the warm-up's socket).
PING_SECONDS = 600.0
# The types one connection is made of, from the Engine.IO socket to the Socket.IO session.
PER_SOCKET_TYPES = (EngineSocket, WebSocketConnection, Session, asyncio.Transport)


def live_per_socket_objects() -> dict[str, int]:
    gc.collect()
    counts: collections.Counter[str] = collections.Counter()
    for obj in gc.get_objects():
        for kind in PER_SOCKET_TYPES:
            if isinstance(obj, kind):
                counts[kind.__name__] += 1
    return dict(counts)


def per_socket_dicts(server: TestServer) -> dict[str, int]:
    """The sizes of every dict the server keeps per socket (or per address, per tenant)."""
    gateway = server.app[GATEWAY]
    sio = gateway.sio
    manager = sio.manager
    addresses = gateway.caps.addresses
    assert isinstance(addresses, LocalConnections)
    return {
        "engineio sockets": len(sio.eio.sockets),
        "socketio environ": len(sio.environ),
        "socketio rooms": sum(len(room) for rooms in manager.rooms.values() for room in rooms),
        "socketio pending connects": len(manager.pending_connect),
        "recovery pids": len(sio._pids),
        "gateway sessions": len(gateway._sessions),
        "gateway syncing": len(gateway._syncing),
        "gateway tasks": len(gateway._tasks),
        "connections per address": len(addresses.snapshot()),
    }


async def connect_and_leave(http: ClientSession, url: Any, *, wait_for_reply: bool) -> None:
    async with http.ws_connect(url) as ws:
        assert (await ws.receive_str(timeout=RECEIVE_TIMEOUT)).startswith("0{")
        await ws.send_str("40")
        if wait_for_reply:
            for _ in range(3):  # the CONNECT reply, connection_established, initial_events
                await ws.receive_str(timeout=RECEIVE_TIMEOUT)


async def test_sockets_that_connected_and_left_leave_no_objects_behind(
    start_server: ServerFactory,
) -> None:
    server = await start_server(ping_interval=PING_SECONDS, ping_timeout=PING_SECONDS)
    url = server.make_url(WS_PATH)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(http: ClientSession, wait_for_reply: bool) -> None:
        async with gate:
            await connect_and_leave(http, url, wait_for_reply=wait_for_reply)

    async with ClientSession() as http:
        await connect_and_leave(http, url, wait_for_reply=True)  # lazily built state
        await eventually(lambda: not server.app[GATEWAY].sio.eio.sockets, "the first one left")
        baseline = live_per_socket_objects()
        empty = per_socket_dicts(server)
        await asyncio.gather(
            *(one(http, wait_for_reply=i % 2 == 0) for i in range(2 * CYCLES)),
        )
        # and python-socketio clients over long-polling upgraded to WebSocket
        for _ in range(20):
            async with socket_client(server.make_url(""), query={"tenant": "tenant_a"}) as c:
                await c.expect_established()

    await eventually(lambda: per_socket_dicts(server) == empty, "every per-socket dict empties")
    # Their first ping is still far ahead: nothing holds a socket until then.
    assert live_per_socket_objects() == baseline
