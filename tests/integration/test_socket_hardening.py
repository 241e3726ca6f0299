"""Socket.IO handshake checks: Origin, connection caps, packet size."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import ClientSession, ClientWSTimeout

from feedserver.app import FEED, GATEWAY, create_app
from feedserver.realtime import MAX_PACKET_BYTES
from tests.clients import CLIENT_KINDS, open_client
from tests.conftest import ServerFactory, make_settings
from tests.faulty_store import HeldCountsStore

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

    # The real JS client (in node it can set the header a browser would) never connects.
    url = server.make_url("")
    foreign = {"Origin": FOREIGN}
    async with open_client("js", url, auth={"tenant": "tenant_a"}, headers=foreign) as client:
        answer = await client.expect(lambda line: line["type"] in ("connect", "connect_error"))
        assert answer["type"] == "connect_error"
    async with open_client("js", url, auth={"tenant": "tenant_a"}, headers={"Origin": SITE}) as c:
        await c.expect_established()


@pytest.mark.parametrize("kind", CLIENT_KINDS)
async def test_connections_over_the_per_tenant_cap_are_refused(
    start_server: ServerFactory, kind: str
) -> None:
    server = await start_server(max_connections_per_tenant=2)
    url = server.make_url("")
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(2):
            client = await stack.enter_async_context(
                open_client(kind, url, auth={"tenant": "tenant_a"})
            )
            await client.expect_established()
        async with open_client(kind, url, auth={"tenant": "tenant_a"}) as crowded:
            refused = await crowded.expect_type("connect_error")
        assert refused["data"]["code"] == "too_many_connections"
        # Another tenant is not affected by tenant_a's crowd.
        async with open_client(kind, url, auth={"tenant": "tenant_b"}) as other:
            await other.expect_established()
    # Once they left, there is room again.
    async with open_client(kind, url, auth={"tenant": "tenant_a"}) as again:
        await again.expect_established()


@pytest.mark.parametrize("kind", CLIENT_KINDS)
async def test_connections_over_the_per_address_cap_are_refused(
    start_server: ServerFactory, kind: str
) -> None:
    server = await start_server(max_connections_per_ip=2, trust_proxy=(PROXY,))
    url = server.make_url("")
    crowd = {"X-Forwarded-For": "198.51.100.1"}
    async with contextlib.AsyncExitStack() as stack:
        for tenant in ("tenant_a", "tenant_b"):
            client = await stack.enter_async_context(
                open_client(kind, url, auth={"tenant": tenant}, headers=crowd)
            )
            await client.expect_established()
        async with open_client(kind, url, auth={"tenant": "tenant_a"}, headers=crowd) as more:
            refused = await more.expect_type("connect_error")
        assert refused["data"]["code"] == "too_many_connections" and refused["data"]["message"]
        other = {"X-Forwarded-For": "198.51.100.2"}
        async with open_client(kind, url, auth={"tenant": "tenant_a"}, headers=other) as elsewhere:
            await elsewhere.expect_established()


async def test_an_oversized_polling_packet_is_refused(start_server: ServerFactory) -> None:
    server = await start_server()
    async with ClientSession(str(server.make_url(""))) as http:
        async with http.get("/socket.io/?EIO=4&transport=polling") as resp:
            sid = (await resp.text())[1:].split('"sid":"')[1].split('"')[0]
        big = "4" + "x" * MAX_PACKET_BYTES
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
        opened = await ws.receive_str()
        assert json.loads(opened[1:])["maxPayload"] == MAX_PACKET_BYTES == 1_000_000  # as Node
        await ws.send_str('40{"tenant":"tenant_a"}')
        assert (await ws.receive_str()).startswith("40{")
        await ws.send_str('42["create_event",{"message":"' + "x" * MAX_PACKET_BYTES + '"}]')
        while not ws.closed:
            message = await asyncio.wait_for(ws.receive(), timeout=10)
            assert "create_event" not in str(message.data)


async def test_a_client_that_leaves_during_its_handshake_is_counted_out(
    aiohttp_server: Any,
) -> None:
    app = create_app(make_settings(max_connections_per_ip=1))
    held = HeldCountsStore(100)
    app[FEED].store = held
    gateway = app[GATEWAY]
    server = await aiohttp_server(app, host="127.0.0.1")
    async with (
        ClientSession(str(server.make_url(""))) as http,
        http.ws_connect(
            "/socket.io/?EIO=4&transport=websocket", timeout=ClientWSTimeout(ws_close=0.5)
        ) as ws,
    ):
        assert (await ws.receive_str()).startswith("0{")
        await ws.send_str('40{"tenant":"tenant_a"}')
        await asyncio.wait_for(held.reading.wait(), timeout=10)  # the server is mid-handshake
        await ws.close()
    async with asyncio.timeout(10):
        while gateway._sessions:  # noqa: ASYNC110 - the server's disconnect has no hook
            await asyncio.sleep(0.01)
    held.release.set()  # the handshake of the departed client now runs to its end
    # Its connection was counted out: the one this address may have is free.
    async with open_client("python", server.make_url(""), auth={"tenant": "tenant_a"}) as client:
        await client.expect_established()
        assert [s.tenant for s in gateway._sessions.values()] == ["tenant_a"]
        assert await gateway.caps.addresses.count("127.0.0.1") == 1
        assert await gateway.caps.tenants.count("tenant_a") == 1
    assert gateway._syncing == {}
