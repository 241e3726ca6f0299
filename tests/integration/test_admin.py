"""Admin calls: stats of every tenant and system messages to every tenant."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import ClientSession

from feedserver.auth import mint_token
from tests.clients import CLIENT_KINDS, open_client
from tests.conftest import ServerFactory
from tests.socket_client import socket_client

SECRET = "a" * 32
NOTICE = {"message": "maintenance at <b>noon</b>", "level": "warning"}


def bearer(tenant: str, *, admin: bool = False) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SECRET, tenant, 3600, admin=admin)}"}


@pytest.mark.parametrize("kind", CLIENT_KINDS)
async def test_an_admin_token_sends_a_system_message_to_every_tenant(
    start_server: ServerFactory, kind: str
) -> None:
    server = await start_server(auth="token", auth_secret=SECRET)
    url = server.make_url("")
    async with (
        open_client(kind, url, auth={"token": mint_token(SECRET, "tenant_a", 60)}) as on_a,
        open_client(kind, url, auth={"token": mint_token(SECRET, "tenant_b", 60)}) as on_b,
        ClientSession(str(url)) as http,
    ):
        await on_a.expect_established()
        await on_b.expect_established()
        async with http.post(
            "/api/system-messages", json=NOTICE, headers=bearer("tenant_a", admin=True)
        ) as resp:
            assert resp.status == 202
            sent = await resp.json()
        assert sent["message"] == "maintenance at &lt;b&gt;noon&lt;/b&gt;"
        assert sent["level"] == "warning" and sent["timestamp"].endswith("Z")
        assert await on_a.expect_event("system_message") == [sent]
        assert await on_b.expect_event("system_message") == [sent]


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "unauthorized"),
        (bearer("tenant_a"), 403, "forbidden"),
        (
            {"Authorization": "Bearer " + mint_token("b" * 32, "tenant_a", 3600, admin=True)},
            401,
            "unauthorized",
        ),
    ],
    ids=["no-token", "tenant-token", "forged-admin"],
)
async def test_system_messages_need_an_admin_token(
    start_server: ServerFactory, headers: dict[str, str], status: int, code: str
) -> None:
    server = await start_server(auth="token", auth_secret=SECRET)
    url = server.make_url("")
    async with (
        socket_client(url, auth={"token": mint_token(SECRET, "tenant_a", 60)}) as client,
        ClientSession(str(url)) as http,
    ):
        await client.expect_established()
        async with http.post("/api/system-messages", json=NOTICE, headers=headers) as resp:
            assert resp.status == status
            assert (await resp.json())["error"]["code"] == code
        # Proof that nothing was sent: the next (allowed) notice is the first one to arrive.
        admin = bearer("tenant_b", admin=True)
        async with http.post(
            "/api/system-messages", json={"message": "second", "level": "info"}, headers=admin
        ) as resp:
            assert resp.status == 202
        [notice] = await client.expect_event("system_message")
        assert notice["message"] == "second"


@pytest.mark.parametrize(
    "body",
    [
        {"message": "x", "level": "error"},
        {"message": "x"},
        {"message": "", "level": "info"},
        {"message": "x", "level": "info", "tenant": "tenant_b"},
        {"message": "\u0007", "level": "info"},
        ["x"],
    ],
)
async def test_an_invalid_system_message_is_400(start_server: ServerFactory, body: Any) -> None:
    server = await start_server(auth="token", auth_secret=SECRET)
    async with (
        ClientSession(str(server.make_url(""))) as http,
        http.post(
            "/api/system-messages", json=body, headers=bearer("tenant_a", admin=True)
        ) as resp,
    ):
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "validation_error"


async def test_without_tokens_system_messages_come_only_from_this_host(
    start_server: ServerFactory,
) -> None:
    # The peer (127.0.0.1) is a trusted proxy, so the forwarded address is the client's.
    server = await start_server(trust_proxy=("127.0.0.1",))
    async with ClientSession(str(server.make_url(""))) as http:
        async with http.post("/api/system-messages", json=NOTICE) as resp:
            assert resp.status == 202
        remote = {"X-Forwarded-For": "203.0.113.7"}
        async with http.post("/api/system-messages", json=NOTICE, headers=remote) as resp:
            assert resp.status == 403
            assert (await resp.json())["error"]["code"] == "forbidden"
        # Stats of every tenant stay open in `none` mode, as in the original.
        async with http.get("/api/events/stats", headers=remote) as resp:
            assert sorted((await resp.json())["tenantStats"]) == ["tenant_a", "tenant_b"]
