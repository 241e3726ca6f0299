"""Tenants created, suspended and deleted at runtime through `/api/admin/tenants`, seen by
REST callers, both real Socket.IO clients, the stats and the metrics."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from feedserver.app import TENANTS
from feedserver.auth import mint_token
from feedserver.keys import generate_hs256_key
from tests.clients import CLIENT_KINDS, open_client
from tests.conftest import ServerFactory
from tests.metrics_scrape import label_values, scrape, value
from tests.socket_client import socket_client

SECRET = "t" * 32
SERVER_DISCONNECT = {"js": "io server disconnect", "python": "server disconnect"}


async def call(
    http: ClientSession, method: str, path: str, body: Any = None, **headers: str
) -> tuple[int, Any]:
    async with http.request(method, path, json=body, headers=headers) as resp:
        return resp.status, (await resp.json() if resp.content_length else None)


async def publish(http: ClientSession, tenant: str, message: str) -> tuple[int, Any]:
    return await call(http, "POST", "/api/events", {"message": message}, **{"X-Tenant-ID": tenant})


@pytest.fixture
async def http(server: TestServer) -> Any:
    async with ClientSession(str(server.make_url(""))) as session:
        yield session


@pytest.mark.parametrize("kind", CLIENT_KINDS)
async def test_a_tenant_created_over_the_api_takes_publishes_and_subscribers(
    server: TestServer, http: ClientSession, kind: str
) -> None:
    status, created = await call(http, "POST", "/api/admin/tenants", {"id": "acme"})
    assert status == 201
    assert (created["id"], created["status"], created["bootstrap"]) == ("acme", "active", False)
    assert created["settings"] == {
        "maxEventsPerSec": None,
        "maxConnections": None,
        "historySize": None,
        "maxMessageLength": None,
        "retentionSeconds": None,
    }
    async with open_client(kind, server.make_url(""), query={"tenant": "acme"}) as client:
        info, initial = await client.expect_established()
        assert (info["tenantId"], initial) == ("acme", [])
        status, event = await publish(http, "acme", "hello")
        assert (status, event["tenantId"], event["seq"]) == (201, "acme", 1)
        assert await client.expect_live_event() == event
    status, listed = await call(http, "GET", "/api/admin/tenants")
    assert [t["id"] for t in listed["tenants"]] == ["acme", "tenant_a", "tenant_b"]
    assert await call(http, "GET", "/api/admin/tenants/acme") == (200, created)
    status, config = await call(http, "GET", "/api/config")
    assert config["tenants"] == ["tenant_a", "tenant_b", "acme"]


@pytest.mark.parametrize("kind", CLIENT_KINDS)
async def test_a_suspended_tenant_may_not_publish_or_subscribe_and_keeps_its_data(
    server: TestServer, http: ClientSession, kind: str
) -> None:
    url = server.make_url("")
    await call(http, "POST", "/api/admin/tenants", {"id": "acme"})
    await publish(http, "acme", "before")
    async with open_client(kind, url, query={"tenant": "acme"}) as connected:
        await connected.expect_established()
        status, suspended = await call(
            http, "PATCH", "/api/admin/tenants/acme", {"status": "suspended"}
        )
        assert (status, suspended["status"]) == (200, "suspended")

        status, body = await publish(http, "acme", "while suspended")
        assert (status, body["error"]["code"]) == (403, "tenant_suspended")
        ack = await connected.emit("create_event", {"message": "while suspended"})
        assert (ack["ok"], ack["error"]["code"]) == (False, "tenant_suspended")
        async with open_client(kind, url, query={"tenant": "acme"}) as refused:
            error = await refused.expect_type("connect_error")
            assert error["data"]["code"] == "tenant_suspended"
        status, history = await call(http, "GET", "/api/events", **{"X-Tenant-ID": "acme"})
        assert (status, [e["message"] for e in history["events"]]) == (200, ["before"])

        await call(http, "PATCH", "/api/admin/tenants/acme", {"status": "active"})
        status, event = await publish(http, "acme", "after")
        assert (status, event["seq"]) == (201, 2)
        assert await connected.expect_live_event() == event


@pytest.mark.parametrize("kind", CLIENT_KINDS)
async def test_a_deleted_tenant_is_told_disconnected_purged_and_refused_from_then_on(
    server: TestServer, http: ClientSession, kind: str
) -> None:
    url = server.make_url("")
    await call(http, "POST", "/api/admin/tenants", {"id": "acme"})
    async with (
        open_client(kind, url, query={"tenant": "acme"}) as client,
        open_client(kind, url, query={"tenant": "tenant_a"}) as bystander,
    ):
        await client.expect_established()
        await bystander.expect_established()
        await publish(http, "acme", "soon gone")
        await client.expect_live_event()
        assert await call(http, "DELETE", "/api/admin/tenants/acme") == (204, None)
        [notice] = await client.expect_event("system_message")
        assert (notice["message"], notice["level"]) == ("tenant deleted", "warning")
        gone = await client.expect_type("disconnect")
        assert gone["reason"] == SERVER_DISCONNECT[kind]
        assert [line for line in client.unread() if line["type"] == "event"] == []
        async with open_client(kind, url, query={"tenant": "acme"}) as refused:
            error = await refused.expect_type("connect_error")
            assert error["data"]["code"] == "forbidden_tenant"
        # The other tenants heard nothing of it.
        await publish(http, "tenant_a", "still here")
        assert (await bystander.expect_live_event())["message"] == "still here"
        assert [line for line in bystander.unread() if line.get("event") == "system_message"] == []

    status, body = await publish(http, "acme", "after")
    assert (status, body["error"]["code"]) == (403, "forbidden_tenant")
    status, body = await call(http, "GET", "/api/events", **{"X-Tenant-ID": "acme"})
    assert (status, body["error"]["code"]) == (403, "forbidden_tenant")
    status, body = await call(http, "GET", "/api/admin/tenants/acme")
    assert (status, body["error"]["code"]) == (404, "not_found")
    status, stats = await call(http, "GET", "/api/events/stats")
    assert sorted(stats["tenantStats"]) == ["tenant_a", "tenant_b"]
    assert "acme" not in label_values(await scrape(http))


async def test_a_tenant_created_again_after_its_deletion_starts_afresh(
    http: ClientSession,
) -> None:
    await call(http, "POST", "/api/admin/tenants", {"id": "acme"})
    for n in range(3):
        await publish(http, "acme", f"old {n}")
    await call(http, "DELETE", "/api/admin/tenants/acme")
    assert (await call(http, "POST", "/api/admin/tenants", {"id": "acme"}))[0] == 201
    status, event = await publish(http, "acme", "new")
    assert (status, event["seq"]) == (201, 1)
    status, history = await call(http, "GET", "/api/events", **{"X-Tenant-ID": "acme"})
    assert [e["message"] for e in history["events"]] == ["new"]


async def test_a_tenant_of_its_own_message_length_is_held_to_it(http: ClientSession) -> None:
    await call(
        http, "POST", "/api/admin/tenants", {"id": "terse", "settings": {"maxMessageLength": 3}}
    )
    assert (await publish(http, "terse", "abc"))[0] == 201
    status, body = await publish(http, "terse", "abcd")
    assert (status, body["error"]["code"]) == (400, "validation_error")
    status, body = await call(
        http, "PATCH", "/api/admin/tenants/terse", {"settings": {"maxMessageLength": None}}
    )
    assert body["settings"]["maxMessageLength"] is None
    assert (await publish(http, "terse", "abcd"))[0] == 201


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code", "field"),
    [
        ("POST", "/api/admin/tenants", {"id": "tenant_a"}, 409, "tenant_exists", "id"),
        ("POST", "/api/admin/tenants", {"id": "Acme"}, 400, "validation_error", "id"),
        ("POST", "/api/admin/tenants", {}, 400, "validation_error", "id"),
        ("POST", "/api/admin/tenants", {"id": "a", "colour": 1}, 400, "validation_error", "colour"),
        (
            "POST",
            "/api/admin/tenants",
            {"id": "a", "settings": {"historySize": 0}},
            400,
            "validation_error",
            "settings.historySize",
        ),
        (
            "POST",
            "/api/admin/tenants",
            {"id": "a", "settings": {"maxConnections": True}},
            400,
            "validation_error",
            "settings.maxConnections",
        ),
        (
            "PATCH",
            "/api/admin/tenants/tenant_a",
            {"status": "paused"},
            400,
            "validation_error",
            "status",
        ),
        (
            "PATCH",
            "/api/admin/tenants/tenant_a",
            {"settings": {"colour": 1}},
            400,
            "validation_error",
            "settings.colour",
        ),
        ("PATCH", "/api/admin/tenants/nobody", {"status": "active"}, 404, "not_found", "id"),
        ("GET", "/api/admin/tenants/nobody", None, 404, "not_found", "id"),
        ("DELETE", "/api/admin/tenants/nobody", None, 404, "not_found", "id"),
        ("DELETE", "/api/admin/tenants/Not%20An%20Id", None, 404, "not_found", "id"),
    ],
)
async def test_refused_admin_calls_answer_the_json_error_shape(
    http: ClientSession,
    method: str,
    path: str,
    body: Any,
    status: int,
    code: str,
    field: str,
) -> None:
    answered, error = await call(http, method, path, body)
    assert (answered, error["error"]["code"]) == (status, code)
    assert field in error["error"]["details"]
    _, listed = await call(http, "GET", "/api/admin/tenants")
    assert [t["id"] for t in listed["tenants"]] == ["tenant_a", "tenant_b"]
    assert all(t["status"] == "active" for t in listed["tenants"])


async def test_without_tokens_tenants_are_managed_only_from_this_host(
    start_server: ServerFactory,
) -> None:
    server = await start_server(trust_proxy=("127.0.0.1",))
    remote = {"X-Forwarded-For": "203.0.113.7"}
    async with ClientSession(str(server.make_url(""))) as http:
        for method, path, body in (
            ("GET", "/api/admin/tenants", None),
            ("POST", "/api/admin/tenants", {"id": "acme"}),
            ("GET", "/api/admin/tenants/tenant_a", None),
            ("PATCH", "/api/admin/tenants/tenant_a", {"status": "suspended"}),
            ("DELETE", "/api/admin/tenants/tenant_a", None),
        ):
            status, error = await call(http, method, path, body, **remote)
            assert (status, error["error"]["code"]) == (403, "forbidden"), (method, path)
        status, listed = await call(http, "GET", "/api/admin/tenants")
        assert status == 200
        assert [(t["id"], t["status"]) for t in listed["tenants"]] == [
            ("tenant_a", "active"),
            ("tenant_b", "active"),
        ]


async def test_with_tokens_tenants_are_managed_with_an_admin_token_only(
    start_server: ServerFactory,
) -> None:
    server = await start_server(auth="token", auth_secret=SECRET)
    admin = {"Authorization": f"Bearer {mint_token(SECRET, 'tenant_a', 60, admin=True)}"}
    tenant = {"Authorization": f"Bearer {mint_token(SECRET, 'tenant_a', 60)}"}
    async with ClientSession(str(server.make_url(""))) as http:
        status, error = await call(http, "POST", "/api/admin/tenants", {"id": "acme"})
        assert (status, error["error"]["code"]) == (401, "unauthorized")
        status, error = await call(http, "POST", "/api/admin/tenants", {"id": "acme"}, **tenant)
        assert (status, error["error"]["code"]) == (403, "forbidden")
        status, created = await call(http, "POST", "/api/admin/tenants", {"id": "acme"}, **admin)
        assert (status, created["id"]) == (201, "acme")
        # A tenant created at runtime accepts its own keys only, not the operator's.
        status, error = await publish_with(http, mint_token(SECRET, "acme", 60))
        assert (status, error["error"]["code"]) == (401, "unauthorized")
        key = generate_hs256_key()
        await server.app[TENANTS].add_key("acme", key)
        acme_token = mint_token(None, "acme", 60, key=key)
        async with socket_client(server.make_url(""), auth={"token": acme_token}) as client:
            info, _ = await client.expect_established()
            assert info["tenantId"] == "acme"
            assert await call(http, "DELETE", "/api/admin/tenants/acme", **admin) == (204, None)
            await client.expect_type("disconnect")
        status, error = await publish_with(http, acme_token)
        assert (status, error["error"]["code"]) == (401, "unauthorized")


async def publish_with(http: ClientSession, token: str) -> tuple[int, Any]:
    return await call(
        http, "POST", "/api/events", {"message": "x"}, Authorization=f"Bearer {token}"
    )


async def test_metrics_have_series_for_existing_tenants_only(http: ClientSession) -> None:
    await call(http, "POST", "/api/admin/tenants", {"id": "acme"})
    samples = await scrape(http)
    assert ("feed_events_published_total", frozenset({("tenant", "acme")})) in samples
    await publish(http, "acme", "counted")
    assert value(await scrape(http), "feed_events_published_total", tenant="acme") == 1
    await call(http, "DELETE", "/api/admin/tenants/acme")
    assert "acme" not in label_values(await scrape(http))


async def test_tenants_beyond_the_metrics_cap_are_summed_under_other(
    start_server: ServerFactory,
) -> None:
    server = await start_server(metrics_max_tenants=1)
    url = server.make_url("")
    async with ClientSession(str(url)) as http:
        await call(http, "POST", "/api/admin/tenants", {"id": "acme"})
        async with open_client("python", url, query={"tenant": "acme"}) as client:
            await client.expect_established()
            for tenant in ("tenant_a", "tenant_b", "acme", "acme"):
                await publish(http, tenant, "x")
            samples = await scrape(http)
            assert value(samples, "feed_events_published_total", tenant="tenant_a") == 1
            assert value(samples, "feed_events_published_total", tenant="_other") == 3
            assert value(samples, "feed_connections", tenant="_other") == 1
            assert label_values(samples) >= {"tenant_a", "_other"}
            assert not {"tenant_b", "acme"} & label_values(samples)
            await call(http, "DELETE", "/api/admin/tenants/acme")
            await client.expect_type("disconnect")
        samples = await scrape(http)
        assert value(samples, "feed_connections", tenant="_other") == 0
        assert value(samples, "feed_events_published_total", tenant="_other") == 3


@pytest.mark.parametrize("kind", CLIENT_KINDS)
async def test_a_tenants_own_connection_cap_replaces_the_servers_and_follows_a_change(
    server: TestServer, http: ClientSession, kind: str
) -> None:
    settings = {"maxConnections": 1}
    status, _ = await call(http, "POST", "/api/admin/tenants", {"id": "acme", "settings": settings})
    assert status == 201
    url = server.make_url("")
    async with open_client(kind, url, query={"tenant": "acme"}) as first:
        await first.expect_established()
        async with open_client(kind, url, query={"tenant": "acme"}) as crowded:
            refused = await crowded.expect_type("connect_error")
        assert refused["data"]["code"] == "too_many_connections"
        # the server-wide cap still applies to a tenant without one of its own
        async with open_client(kind, url, query={"tenant": "tenant_a"}) as other:
            await other.expect_established()
        status, _ = await call(
            http, "PATCH", "/api/admin/tenants/acme", {"settings": {"maxConnections": 2}}
        )
        assert status == 200
        async with open_client(kind, url, query={"tenant": "acme"}) as second:
            await second.expect_established()


async def test_a_tenants_own_publish_rate_replaces_the_servers(
    server: TestServer, http: ClientSession
) -> None:
    settings = {"maxEventsPerSec": 2}
    status, _ = await call(http, "POST", "/api/admin/tenants", {"id": "acme", "settings": settings})
    assert status == 201
    # Five posts within well under a second span at most two one-second windows: at most
    # four fit under a limit of two, whatever the clock; the server's own limit takes all.
    answers = [await publish(http, "acme", f"m{i}") for i in range(5)]
    others = [await publish(http, "tenant_a", f"m{i}") for i in range(5)]
    refused = [body for status, body in answers if status == 429]
    assert refused and all(b["error"]["code"] == "rate_limited" for b in refused)
    assert len(answers) - len(refused) <= 4
    assert [status for status, _ in others] == [201] * 5


async def test_a_tenants_own_history_size_replaces_the_servers_and_follows_a_change(
    server: TestServer, http: ClientSession
) -> None:
    async def held(tenant: str) -> list[int]:
        _, body = await call(http, "GET", "/api/events?limit=500", **{"X-Tenant-ID": tenant})
        return [event["seq"] for event in body["events"]]

    settings = {"historySize": 3}
    status, _ = await call(http, "POST", "/api/admin/tenants", {"id": "acme", "settings": settings})
    assert status == 201
    for i in range(5):
        assert (await publish(http, "acme", f"m{i}"))[0] == 201
        assert (await publish(http, "tenant_a", f"m{i}"))[0] == 201
    assert await held("acme") == [3, 4, 5]
    assert await held("tenant_a") == [1, 2, 3, 4, 5]  # FEED_HISTORY_SIZE: 1000
    shrunk = {"settings": {"historySize": 2}}
    assert (await call(http, "PATCH", "/api/admin/tenants/acme", shrunk))[0] == 200
    assert await held("acme") == [4, 5]
    await publish(http, "acme", "m5")
    assert await held("acme") == [5, 6]
    # Back to the server's: the store kept FEED_HISTORY_SIZE of acme's events all along
    # (the stream is also what the nodes' relays read), its reads were bounded.
    reset = {"settings": {"historySize": None}}
    assert (await call(http, "PATCH", "/api/admin/tenants/acme", reset))[0] == 200
    await publish(http, "acme", "m6")
    assert await held("acme") == [1, 2, 3, 4, 5, 6, 7]
