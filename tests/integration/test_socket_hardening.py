"""Socket.IO handshake checks: Origin, connection caps, packet size."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import pytest
import socketio
from aiohttp import ClientSession

from tests.conftest import ServerFactory
from tests.socket_recorder import recorded_socket, refusal

SITE = "https://feed.example"
FOREIGN = "https://evil.example"
PROXY = "127.0.0.1"  # the tests' peer; trusted, so X-Forwarded-For stands for the client


async def test_a_handshake_from_a_foreign_origin_is_refused_over_polling_and_websocket(
    start_server: ServerFactory,
) -> None:
    server = await start_server(cors_origins=(SITE,))
    async with ClientSession(str(server.make_url(""))) as http:
        polling = "/socket.io/?EIO=4&transport=polling&tenant=tenant_a"
        async with http.get(polling, headers={"Origin": FOREIGN}) as resp:
            assert resp.status == 400
            assert "Access-Control-Allow-Origin" not in resp.headers
        async with http.get(polling, headers={"Origin": SITE}) as resp:
            assert resp.status == 200
            assert resp.headers["Access-Control-Allow-Origin"] == SITE
        websocket = "/socket.io/?EIO=4&transport=websocket&tenant=tenant_a"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(websocket, headers={"Origin": FOREIGN})
        assert refused.value.status == 400
        async with http.ws_connect(websocket, headers={"Origin": SITE}) as ws:
            assert (await ws.receive_str()).startswith("0{")
    # A real Socket.IO client sending the foreign Origin never gets connected.
    with pytest.raises(socketio.exceptions.ConnectionError):
        async with recorded_socket(
            str(server.make_url("")), auth={"tenant": "tenant_a"}, headers={"Origin": FOREIGN}
        ):
            pass


async def test_connections_over_the_per_tenant_cap_are_refused(
    start_server: ServerFactory,
) -> None:
    server = await start_server(max_connections_per_tenant=2)
    url = str(server.make_url(""))
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(2):
            await stack.enter_async_context(recorded_socket(url, auth={"tenant": "tenant_a"}))
        refused = await refusal(url, auth={"tenant": "tenant_a"})
        assert refused["code"] == "too_many_connections"
        # Another tenant is not affected by tenant_a's crowd.
        async with recorded_socket(url, auth={"tenant": "tenant_b"}) as sock:
            await sock.wait_for("connection_established")
    # Once they left, there is room again.
    async with recorded_socket(url, auth={"tenant": "tenant_a"}) as sock:
        await sock.wait_for("connection_established")


async def test_connections_over_the_per_address_cap_are_refused(
    start_server: ServerFactory,
) -> None:
    server = await start_server(max_connections_per_ip=2, trust_proxy=(PROXY,))
    url = str(server.make_url(""))
    crowd = {"X-Forwarded-For": "198.51.100.1"}
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(
            recorded_socket(url, auth={"tenant": "tenant_a"}, headers=crowd)
        )
        await stack.enter_async_context(
            recorded_socket(url, auth={"tenant": "tenant_b"}, headers=crowd)
        )
        refused = await refusal(url, auth={"tenant": "tenant_a"}, headers=crowd)
        assert refused == {"code": "too_many_connections", "message": refused["message"]}
        other = {"X-Forwarded-For": "198.51.100.2"}
        async with recorded_socket(url, auth={"tenant": "tenant_a"}, headers=other) as sock:
            await sock.wait_for("connection_established")


async def test_an_oversized_polling_packet_is_refused(start_server: ServerFactory) -> None:
    server = await start_server()
    async with ClientSession(str(server.make_url(""))) as http:
        async with http.get("/socket.io/?EIO=4&transport=polling") as resp:
            sid = (await resp.text())[1:].split('"sid":"')[1].split('"')[0]
        big = "4" + "x" * (65 * 1024)
        async with http.post(
            f"/socket.io/?EIO=4&transport=polling&sid={sid}",
            data=big,
            headers={"Content-Type": "text/plain"},
        ) as resp:
            assert resp.status == 413


async def test_an_oversized_websocket_packet_closes_the_connection(
    start_server: ServerFactory,
) -> None:
    server = await start_server()
    async with (
        ClientSession(str(server.make_url(""))) as http,
        http.ws_connect("/socket.io/?EIO=4&transport=websocket") as ws,
    ):
        assert (await ws.receive_str()).startswith("0{")
        await ws.send_str('40{"tenant":"tenant_a"}')
        assert (await ws.receive_str()).startswith("40{")
        await ws.send_str('42["create_event",{"message":"' + "x" * (65 * 1024) + '"}]')
        while not ws.closed:
            message = await asyncio.wait_for(ws.receive(), timeout=10)
            assert "create_event" not in str(message.data)
