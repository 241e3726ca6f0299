"""FEED_AUTH=token over REST and Socket.IO: the tenant comes from the token."""

from __future__ import annotations

import time

import jwt
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from feedserver.app import GATEWAY
from feedserver.auth import mint_token
from tests.clients import CLIENT_KINDS, open_client
from tests.conftest import ServerFactory
from tests.socket_client import socket_client

SECRET = "k" * 32


@pytest.fixture
async def token_server(start_server: ServerFactory) -> TestServer:
    return await start_server(auth="token", auth_secret=SECRET)


def bearer(tenant: str, ttl: int = 60) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SECRET, tenant, ttl)}"}


def expired_token(tenant: str) -> str:
    return jwt.encode({"tenant": tenant, "exp": int(time.time()) - 5}, SECRET, "HS256")


async def test_a_token_publishes_and_reads_for_its_own_tenant_only(
    token_server: TestServer,
) -> None:
    async with ClientSession(str(token_server.make_url(""))) as http:
        async with http.post(
            "/api/events", json={"message": "for a"}, headers=bearer("tenant_a")
        ) as resp:
            assert resp.status == 201
            assert (await resp.json())["tenantId"] == "tenant_a"
        async with http.get("/api/events", headers=bearer("tenant_b")) as resp:
            assert resp.status == 200
            body = await resp.json()
        assert body["tenantId"] == "tenant_b" and body["events"] == []


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Tenant-ID": "tenant_a"},
        {"Authorization": "Bearer nonsense"},
        {"Authorization": f"Bearer {mint_token('z' * 32, 'tenant_a', 3600)}"},
        {"Authorization": f"Bearer {expired_token('tenant_a')}"},
    ],
    ids=["none", "header-only", "garbage", "wrong-secret", "expired"],
)
async def test_rest_without_a_valid_token_is_401_and_changes_nothing(
    token_server: TestServer, headers: dict[str, str]
) -> None:
    async with ClientSession(str(token_server.make_url(""))) as http:
        for method, path in (("POST", "/api/events"), ("GET", "/api/events")):
            async with http.request(method, path, json={"message": "x"}, headers=headers) as resp:
                assert resp.status == 401
                assert (await resp.json())["error"]["code"] == "unauthorized"
        async with http.get("/api/events/stats", headers=headers) as resp:
            assert resp.status == 401
        async with http.get("/api/events", headers=bearer("tenant_a")) as resp:
            assert (await resp.json())["latestSeq"] == 0


async def test_rest_naming_another_tenant_than_the_token_is_403(token_server: TestServer) -> None:
    async with ClientSession(str(token_server.make_url(""))) as http:
        headers = {**bearer("tenant_a"), "X-Tenant-ID": "tenant_b"}
        async with http.post("/api/events", json={"message": "x"}, headers=headers) as resp:
            assert resp.status == 403
            assert (await resp.json())["error"]["code"] == "forbidden_tenant"
        async with http.get("/api/events", headers=bearer("tenant_b")) as resp:
            assert (await resp.json())["latestSeq"] == 0


async def test_stats_with_a_tenant_token_show_that_tenant_and_an_admin_token_all(
    token_server: TestServer,
) -> None:
    admin = {"Authorization": f"Bearer {mint_token(SECRET, 'tenant_a', 60, admin=True)}"}
    async with ClientSession(str(token_server.make_url(""))) as http:
        async with http.get("/api/events/stats", headers=bearer("tenant_b")) as resp:
            assert list((await resp.json())["tenantStats"]) == ["tenant_b"]
        async with http.get("/api/events/stats", headers=admin) as resp:
            assert sorted((await resp.json())["tenantStats"]) == ["tenant_a", "tenant_b"]


@pytest.mark.parametrize("kind", CLIENT_KINDS)
async def test_a_socket_connects_with_auth_token_or_query_token(
    token_server: TestServer, kind: str
) -> None:
    url = token_server.make_url("")
    token = mint_token(SECRET, "tenant_b", 60)
    async with open_client(kind, url, auth={"token": token}) as client:
        info, _ = await client.expect_established()
        assert info["tenantId"] == "tenant_b"
    async with open_client(kind, url, query={"token": token}) as client:
        info, _ = await client.expect_established()
        assert info["tenantId"] == "tenant_b"
        ack = await client.emit("create_event", {"message": "over the socket"})
        assert ack["ok"] and ack["event"]["tenantId"] == "tenant_b"


@pytest.mark.parametrize("kind", CLIENT_KINDS)
@pytest.mark.parametrize(
    ("auth", "code"),
    [
        ({}, "unauthorized"),
        ({"tenant": "tenant_a"}, "unauthorized"),
        ({"token": "garbage"}, "unauthorized"),
        ({"token": expired_token("tenant_a")}, "unauthorized"),
        ({"token": mint_token(SECRET, "tenant_a", 3600), "tenant": "tenant_b"}, "forbidden_tenant"),
    ],
    ids=["none", "tenant-only", "garbage", "expired", "other-tenant"],
)
async def test_a_socket_without_a_valid_token_gets_connect_error(
    token_server: TestServer, kind: str, auth: dict[str, str], code: str
) -> None:
    async with open_client(kind, token_server.make_url(""), auth=auth) as client:
        refused = await client.expect_type("connect_error")
    assert refused["data"]["code"] == code and refused["data"]["message"]


@pytest.mark.parametrize("kind", CLIENT_KINDS)
async def test_a_socket_is_disconnected_when_its_token_expires(
    token_server: TestServer, kind: str
) -> None:
    url = token_server.make_url("")
    # Long enough for node to start on a busy machine, short enough for a test.
    token = jwt.encode({"tenant": "tenant_a", "exp": int(time.time()) + 5}, SECRET, "HS256")
    async with open_client(kind, url, auth={"token": token}) as client:
        await client.expect_established()
        gone = await client.expect_type("disconnect", within=10)
        # The server's own disconnect, which a client does not retry by itself.
        assert gone["reason"] == {"js": "io server disconnect", "python": "server disconnect"}[kind]
    async with (
        ClientSession(str(url)) as http,
        http.get("/api/events/stats", headers=bearer("tenant_a")) as resp,
    ):
        assert (await resp.json())["tenantStats"]["tenant_a"]["connections"] == 0


async def test_a_socket_that_leaves_before_expiry_cancels_its_timer(
    token_server: TestServer,
) -> None:
    gateway = token_server.app[GATEWAY]
    token = mint_token(SECRET, "tenant_a", 600)
    async with socket_client(token_server.make_url(""), auth={"token": token}) as client:
        info, _ = await client.expect_established()
        timer = gateway._sessions[info["socketId"]].expiry
        assert timer is not None and not timer.cancelled()
        # Disconnecting from the server side runs the disconnect handler before returning.
        await gateway.sio.disconnect(info["socketId"])
        assert timer.cancelled()
