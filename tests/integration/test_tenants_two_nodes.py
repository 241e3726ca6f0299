"""Tenants created and deleted at runtime on one of two nodes sharing a real redis-server."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jwt
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from feedserver.app import FEED, TENANTS
from feedserver.auth import mint_token
from feedserver.events import Event
from feedserver.store.redis import RedisStore, redis_client
from feedserver.tenants import Tenant
from tests.clients import open_client
from tests.conftest import ServerFactory
from tests.feed_subscriber import subscribed
from tests.redis_server import RedisServer
from tests.tenant_changes import listening
from tests.tenant_changes import next_change as next_change_in
from tests.waiting import eventually

pytestmark = pytest.mark.redis

APPLIED_WITHIN_S = 1.0
Nodes = tuple[TestServer, TestServer]


@pytest.fixture
async def nodes(redis_server: RedisServer, start_server: ServerFactory) -> Nodes:
    one = await start_server(store=redis_server.url)
    two = await start_server(store=redis_server.url)
    for node in (one, two):
        await listening(node.app[TENANTS])
    return one, two


async def call(
    http: ClientSession, node: TestServer, method: str, path: str, body: Any = None, **headers: str
) -> tuple[int, Any]:
    async with http.request(method, node.make_url(path), json=body, headers=headers) as resp:
        return resp.status, (await resp.json() if resp.content_length else None)


async def publish(http: ClientSession, node: TestServer, tenant: str, message: str) -> int:
    status, _ = await call(
        http, node, "POST", "/api/events", {"message": message}, **{"X-Tenant-ID": tenant}
    )
    return status


def next_change(node: TestServer, tenant_id: str) -> asyncio.Future[Tenant | None]:
    return next_change_in(node.app[TENANTS].directory, tenant_id)


async def tenant_keys(redis_server: RedisServer, tenant: str) -> list[str]:
    """Every key in Redis whose name has the tenant's id in it."""
    client = redis_client(redis_server.url)
    try:
        return sorted([key async for key in client.scan_iter(match=f"*{tenant}*")])
    finally:
        await client.aclose()


async def test_a_tenant_created_on_one_node_is_served_by_the_other_within_a_second(
    nodes: Nodes,
) -> None:
    one, two = nodes
    async with ClientSession() as http:
        applied = next_change(two, "acme")
        status, _ = await call(http, one, "POST", "/api/admin/tenants", {"id": "acme"})
        created = time.monotonic()
        assert status == 201
        await asyncio.wait_for(applied, APPLIED_WITHIN_S)
        assert await publish(http, two, "acme", "on two") == 201
        assert time.monotonic() - created < APPLIED_WITHIN_S
        async with subscribed(str(two.make_url("")), "acme") as on_two:
            assert [e["message"] for e in on_two.initial] == ["on two"]
            for n in range(3):
                assert await publish(http, one, "acme", f"from one {n}") == 201
            await on_two.wait_for_seq(4)
            assert on_two.seqs == [1, 2, 3, 4]
            assert [e["message"] for e in on_two.live] == [f"from one {n}" for n in range(3)]


async def test_a_tenant_deleted_on_one_node_leaves_the_other_and_redis(
    nodes: Nodes, redis_server: RedisServer
) -> None:
    one, two = nodes
    async with ClientSession() as http:
        created = next_change(two, "acme")
        await call(http, one, "POST", "/api/admin/tenants", {"id": "acme"})
        await asyncio.wait_for(created, APPLIED_WITHIN_S)
        async with open_client("js", two.make_url(""), query={"tenant": "acme"}) as on_two:
            await on_two.expect_established()
            for n in range(3):
                await call(
                    http,
                    two,
                    "POST",
                    "/api/events",
                    {"message": f"m{n}"},
                    **{"X-Tenant-ID": "acme", "Idempotency-Key": f"key-{n}"},
                )
            expected = [
                "feed:limits:feed/tenant/1000/1/acme",  # its publish window
                *(f"feed:{{acme}}:claim:key-{n}" for n in range(3)),  # idempotency keys
                "feed:{acme}:connections",  # node two's count, a moment after the connect
                "feed:{acme}:events",
                "feed:{acme}:seq",
            ]

            async def all_there() -> bool:
                return await tenant_keys(redis_server, "acme") == expected

            await eventually(all_there, "every kind of key of acme is in Redis")
            applied = next_change(two, "acme")
            assert await call(http, one, "DELETE", "/api/admin/tenants/acme") == (204, None)
            assert await asyncio.wait_for(applied, APPLIED_WITHIN_S) is None
            [notice] = await on_two.expect_event("system_message")
            assert notice["message"] == "tenant deleted"
            assert (await on_two.expect_type("disconnect"))["reason"] == "io server disconnect"
        assert await publish(http, two, "acme", "after") == 403

        async def nothing_left() -> bool:
            # The purge takes everything; a node's count of the sockets it just closed may
            # be written once more, and goes with its next refresh (within the debounce).
            return await tenant_keys(redis_server, "acme") == []

        await eventually(nothing_left, "no key of acme is left in Redis")


async def test_the_registry_survives_a_restart_of_every_node(
    redis_server: RedisServer, start_server: ServerFactory
) -> None:
    first = await start_server(store=redis_server.url)
    async with ClientSession() as http:
        await call(http, first, "POST", "/api/admin/tenants", {"id": "acme"})
        await call(http, first, "PATCH", "/api/admin/tenants/tenant_b", {"status": "suspended"})
        await call(http, first, "DELETE", "/api/admin/tenants/tenant_a")
        await first.close()
        again = await start_server(store=redis_server.url)
        _, listed = await call(http, again, "GET", "/api/admin/tenants")
        assert [(t["id"], t["status"]) for t in listed["tenants"]] == [
            ("acme", "active"),
            ("tenant_b", "suspended"),
        ]
        assert await publish(http, again, "acme", "after the restart") == 201
        assert await publish(http, again, "tenant_a", "deleted stays deleted") == 403


async def test_events_of_a_tenant_deleted_while_its_batch_is_delivered_are_dropped(
    redis_server: RedisServer, start_server: ServerFactory
) -> None:
    node = await start_server(store=redis_server.url)
    store = node.app[FEED].store
    assert isinstance(store, RedisStore)
    stalled: asyncio.Queue[int] = asyncio.Queue()
    release: dict[int, asyncio.Event] = {}
    delivered: list[str] = []

    async def stall(event: Event) -> None:  # holds the relay on each tenant_a event it is given
        if event.tenant_id == "tenant_a" and event.seq <= 2:
            release[event.seq] = asyncio.Event()
            stalled.put_nowait(event.seq)
            await release[event.seq].wait()
        delivered.append(event.id)

    node.app[FEED].add_listener(stall)
    async with ClientSession() as http:
        await call(http, node, "POST", "/api/admin/tenants", {"id": "acme"})
        for tenant in ("tenant_a", "acme"):  # as a socket of each does: the node follows them
            await node.app[FEED].join(tenant)
        # acme's first event, delivered: the node hears of acme's appends from now on, so
        # its hints of acme 2 and 3 come after tenant_a's of a2 (and are read after it).
        await store.append("acme", "acme 1", "2026-01-20T10:30:00.000Z")
        await eventually(lambda: "acme-1" in delivered, "acme's first event delivered")
        await store.append("tenant_a", "a1", "2026-01-20T10:30:00.000Z")
        assert await stalled.get() == 1
        # Read together by the relay's next follow, once it is done with a1, in the order
        # their hints came.
        await store.append("tenant_a", "a2", "2026-01-20T10:30:00.000Z")
        for n in (2, 3):
            await store.append("acme", f"acme {n}", "2026-01-20T10:30:00.000Z")
        release[1].set()
        assert await stalled.get() == 2  # the relay holds acme's events of that read
        assert await call(http, node, "DELETE", "/api/admin/tenants/acme") == (204, None)
        release[2].set()
        # The relay lives on: a later event is delivered, acme's never were.
        async with subscribed(str(node.make_url("")), "tenant_a") as sub:
            assert await publish(http, node, "tenant_a", "a3") == 201
            await sub.wait_for_seq(3)
    assert delivered == ["acme-1", "tenant_a-1", "tenant_a-2", "tenant_a-3"]


SECRET = "n" * 32
ADMIN = {"Authorization": f"Bearer {mint_token(SECRET, 'tenant_a', 3600, admin=True)}"}


def signed(secret: str, kid: str, tenant: str) -> str:
    now = int(time.time())
    body = {"tenant": tenant, "iat": now, "exp": now + 600}
    return jwt.encode(body, secret, algorithm="HS256", headers={"kid": kid})


async def test_a_key_revoked_on_one_node_disconnects_its_sockets_on_both_and_no_other(
    redis_server: RedisServer, start_server: ServerFactory
) -> None:
    one = await start_server(store=redis_server.url, auth="token", auth_secret=SECRET)
    two = await start_server(store=redis_server.url, auth="token", auth_secret=SECRET)
    for node in (one, two):
        await listening(node.app[TENANTS])
    async with ClientSession() as http:
        await call(http, one, "POST", "/api/admin/tenants", {"id": "acme"}, **ADMIN)
        secrets = {}
        for kid in ("k1", "k2"):
            applied = next_change(two, "acme")
            _, key = await call(
                http,
                one,
                "POST",
                "/api/admin/tenants/acme/keys",
                {"alg": "HS256", "kid": kid},
                **ADMIN,
            )
            secrets[kid] = key["secret"]
            await asyncio.wait_for(applied, APPLIED_WITHIN_S)
        k1, k2 = (signed(secrets[kid], kid, "acme") for kid in ("k1", "k2"))
        async with (
            open_client("js", two.make_url(""), auth={"token": k1}) as k1_on_two,
            open_client("python", two.make_url(""), auth={"token": k1}) as k1_py_on_two,
            open_client("js", one.make_url(""), auth={"token": k1}) as k1_on_one,
            open_client("js", two.make_url(""), auth={"token": k2}) as k2_on_two,
        ):
            for client in (k1_on_two, k1_py_on_two, k1_on_one, k2_on_two):
                await client.expect_established()
            revoked = time.monotonic()
            status, _ = await call(http, one, "DELETE", "/api/admin/tenants/acme/keys/k1", **ADMIN)
            assert status == 204
            for client in (k1_on_two, k1_py_on_two, k1_on_one):
                [notice] = await client.expect_event("system_message", within=APPLIED_WITHIN_S)
                assert notice["message"] == "credentials revoked"
                await client.expect_type("disconnect", within=APPLIED_WITHIN_S)
            assert time.monotonic() - revoked < APPLIED_WITHIN_S
            status, _ = await call(
                http,
                one,
                "POST",
                "/api/events",
                {"message": "k2 lives"},
                Authorization=f"Bearer {k2}",
            )
            assert status == 201
            assert (await k2_on_two.expect_live_event())["message"] == "k2 lives"
            assert [line for line in k2_on_two.unread() if line["type"] == "disconnect"] == []
        for node in (one, two):
            status, _ = await call(http, node, "GET", "/api/events", Authorization=f"Bearer {k1}")
            assert status == 401
        # Deleting the tenant leaves none of its keys in Redis.
        assert await call(http, one, "DELETE", "/api/admin/tenants/acme", **ADMIN) == (204, None)
    redis = redis_client(redis_server.url)
    try:
        assert await redis.hget("feed:tenants", "acme") is None
        stored = [
            value
            async for name in redis.scan_iter()
            if await redis.type(name) == "hash"
            for value in (await redis.hgetall(name)).values()
        ]
    finally:
        await redis.aclose()
    assert stored  # the other tenants' records, at least
    assert not [v for v in stored if any(s in v for s in secrets.values())]
    assert await tenant_keys(redis_server, "acme") == []
