"""socket.io-client 4.0, 4.4, 4.7 and 4.8 against one feedserver: each over websocket only,
polling only and polling upgraded to websocket, with the tenant in the query or in `auth`;
4.7 and 4.8 (whose clients have native connection state recovery) also recover after a cut.

One server for the module: the matrix is many short clients, and each test reads only
what it published itself.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer

from feedserver.app import create_app
from tests.conftest import make_settings
from tests.js_client import CLIENT_VERSIONS, JsClient, js_client
from tests.rest_calls import publish

pytestmark = [pytest.mark.node, pytest.mark.asyncio(loop_scope="module")]

VERSIONS = list(CLIENT_VERSIONS)
RECOVERING_VERSIONS = ["4.7", "4.8"]
# transport -> the io() `transports` option
TRANSPORTS = {
    "websocket": ["websocket"],
    "polling": ["polling"],
    "upgrade": ["polling", "websocket"],  # an "upgrade" line shows it happened
}
HANDSHAKES = ["query", "auth"]
MATRIX = ("version", "transport", "handshake")
TENANT = {"tenant": "tenant_a"}
# Long enough to post while the socket is away, and no random jitter.
RECONNECT: dict[str, Any] = {
    "reconnection": True,
    "reconnectionDelay": 300,
    "reconnectionDelayMax": 300,
    "randomizationFactor": 0,
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server() -> AsyncIterator[TestServer]:
    server = TestServer(create_app(make_settings()), host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


def client_of(
    server: TestServer, version: str, transport: str, handshake: str, **options: Any
) -> Any:
    transports = TRANSPORTS[transport]
    tenant: dict[str, Any] = {handshake: TENANT}
    return js_client(
        server.make_url(""), version=version, transports=transports, **tenant, **options
    )


async def settle(client: JsClient, transport: str) -> None:
    """Wait for the transport the client ends on (the upgrade, when there is one)."""
    if transport == "upgrade":
        assert (await client.expect_type("upgrade"))["transport"] == "websocket"


@pytest.mark.parametrize(MATRIX, list(itertools.product(VERSIONS, TRANSPORTS, HANDSHAKES)))
async def test_every_client_version_gets_its_catch_up_and_live_events(
    server: TestServer, version: str, transport: str, handshake: str
) -> None:
    before = await publish(server, "tenant_a", f"before {version} {transport} {handshake}")
    async with client_of(server, version, transport, handshake) as client:
        info, initial = await client.expect_established()
        if transport != "upgrade":  # 4.0 may upgrade before its connect
            assert client.lines[0]["transport"] == transport
        assert info["tenantId"] == "tenant_a"
        assert info["latestSeq"] == before["seq"]
        assert info["recovered"] is False
        assert initial[-1] == before
        await settle(client, transport)
        live = await publish(server, "tenant_a", "live")
        assert await client.expect_live_event() == live


@pytest.mark.parametrize(
    MATRIX, list(itertools.product(RECOVERING_VERSIONS, TRANSPORTS, HANDSHAKES))
)
async def test_recovering_client_versions_get_what_they_missed_after_a_cut(
    server: TestServer, version: str, transport: str, handshake: str
) -> None:
    async with client_of(server, version, transport, handshake, **RECONNECT) as client:
        await client.expect_established()
        await settle(client, transport)
        seen = await publish(server, "tenant_a", "seen")
        assert await client.expect_live_event() == seen
        await client.drop_transport()
        await client.expect_type("disconnect")
        missed = [await publish(server, "tenant_a", f"missed {i}") for i in range(3)]
        connect = await client.expect_type("connect")
        assert connect["recovered"] is True
        info = (await client.expect_event("connection_established"))[0]
        assert info["recovered"] is True
        assert [await client.expect_live_event() for _ in missed] == missed
        await settle(client, transport)
        live = await publish(server, "tenant_a", "live again")
        assert await client.expect_live_event() == live
        assert not [line for line in client.unread() if line.get("event") == "initial_events"]
