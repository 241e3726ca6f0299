"""Rate limits: per client address on /api/ and socket posts, per tenant on publishing."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from feedserver.app import FEED
from tests.clients import CLIENT_KINDS, open_client
from tests.conftest import ServerFactory
from tests.redis_server import RedisServer
from tests.rest_calls import RequestBody
from tests.socket_client import socket_client

TENANT_A = {"X-Tenant-ID": "tenant_a"}
RATE_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")


async def test_every_api_answer_says_the_quota_and_the_next_call_over_it_is_429(
    start_server: ServerFactory,
) -> None:
    server = await start_server(rate_limit_max_requests=5, rate_limit_window_ms=60_000)
    calls: list[tuple[str, str, RequestBody, int]] = [
        ("POST", "/api/events", {"json": {"message": "hi"}}, 201),
        ("GET", "/api/events", {}, 200),
        ("POST", "/api/events", {"json": {"message": "hi", "extra": 1}}, 400),
        ("GET", "/api/nowhere", {}, 404),
        ("DELETE", "/api/events", {}, 405),
    ]
    async with ClientSession(str(server.make_url(""))) as http:
        for remaining, (method, path, kwargs, status) in zip(range(4, -1, -1), calls, strict=True):
            async with http.request(method, path, headers=TENANT_A, **kwargs) as resp:
                assert resp.status == status
                assert resp.headers["RateLimit-Limit"] == "5"
                assert resp.headers["RateLimit-Remaining"] == str(remaining)
                assert 1 <= int(resp.headers["RateLimit-Reset"]) <= 60
        async with http.post("/api/events", json={"message": "too many"}, headers=TENANT_A) as resp:
            assert resp.status == 429
            assert (await resp.json())["error"]["code"] == "rate_limited"
            assert 1 <= int(resp.headers["Retry-After"]) <= 60
            assert resp.headers["RateLimit-Remaining"] == "0"
        assert (await server.app[FEED].stats(["tenant_a"]))["tenant_a"].events == 1
        # Pages and static files are not counted.
        async with http.get("/") as resp:
            assert resp.status == 200 and "RateLimit-Limit" not in resp.headers


@pytest.mark.parametrize("kind", CLIENT_KINDS)
async def test_socket_posts_count_against_the_same_per_address_limit(
    start_server: ServerFactory, kind: str
) -> None:
    server = await start_server(rate_limit_max_requests=3)
    url = server.make_url("")
    async with (
        ClientSession(str(url)) as http,
        open_client(kind, url, auth={"tenant": "tenant_a"}) as client,
    ):
        await client.expect_established()
        async with http.post("/api/events", json={"message": "1"}, headers=TENANT_A) as resp:
            assert resp.status == 201
        assert (await client.emit("create_event", {"message": "2"}))["ok"]
        assert (await client.emit("create_event", {"message": "3"}))["ok"]
        refused = await client.emit("create_event", {"message": "4"})
        assert refused["ok"] is False and refused["error"]["code"] == "rate_limited"
        async with http.get("/api/events", headers=TENANT_A) as resp:
            assert resp.status == 429
    # The refused post created nothing.
    assert (await server.app[FEED].stats(["tenant_a"]))["tenant_a"].events == 3


async def test_a_tenant_publishing_too_fast_is_refused_over_rest_and_socket_alike(
    start_server: ServerFactory,
) -> None:
    server = await start_server(tenant_max_events_per_sec=5)
    url = server.make_url("")
    async with (
        ClientSession(str(url)) as http,
        socket_client(url, auth={"tenant": "tenant_a"}) as client,
    ):
        await client.expect_established()

        async def rest_post(n: int) -> int:
            async with http.post(
                "/api/events", json={"message": f"r{n}"}, headers=TENANT_A
            ) as resp:
                if resp.status == 429:
                    assert resp.headers["Retry-After"] == "1"
                    assert (await resp.json())["error"]["code"] == "rate_limited"
                return resp.status

        async def socket_post(n: int) -> int:
            ack = await client.emit("create_event", {"message": f"s{n}"})
            return 201 if ack["ok"] else 429 if ack["error"]["code"] == "rate_limited" else 0

        # 12 posts in one burst: however the 1 s windows fall, one holds more than 5.
        statuses = await asyncio.gather(
            *(rest_post(n) for n in range(6)), *(socket_post(n) for n in range(6))
        )
        assert set(statuses) == {201, 429}
        async with http.post(
            "/api/events", json={"message": "b"}, headers={"X-Tenant-ID": "tenant_b"}
        ) as resp:
            assert resp.status == 201  # another tenant has its own budget
        async with http.get("/api/events", headers=TENANT_A) as resp:
            assert (await resp.json())["latestSeq"] == statuses.count(201)


async def test_forwarded_for_is_believed_only_from_the_trusted_proxy(
    start_server: ServerFactory,
) -> None:
    async def remaining_after(server_overrides: dict[str, object]) -> list[str]:
        server = await start_server(rate_limit_max_requests=10, **server_overrides)
        seen = []
        async with ClientSession(str(server.make_url(""))) as http:
            for client in ("198.51.100.1", "198.51.100.2"):
                headers = {**TENANT_A, "X-Forwarded-For": client}
                async with http.get("/api/events", headers=headers) as resp:
                    seen.append(resp.headers["RateLimit-Remaining"])
        return seen

    # The test client's peer is 127.0.0.1: as the trusted proxy, each forwarded client
    # has its own window; untrusted, the header is ignored and both share the peer's.
    assert await remaining_after({"trust_proxy": ("127.0.0.1",)}) == ["9", "9"]
    assert await remaining_after({}) == ["9", "8"]


async def remaining_per_forwarded_client(server: TestServer, clients: list[str]) -> list[str]:
    """`RateLimit-Remaining` after one call as each client, forwarded by the test client's
    peer (127.0.0.1, the trusted proxy)."""
    seen = []
    async with ClientSession(str(server.make_url(""))) as http:
        for client in clients:
            headers = {**TENANT_A, "X-Forwarded-For": client}
            async with http.get("/api/events", headers=headers) as resp:
                assert resp.status == 200
                seen.append(resp.headers["RateLimit-Remaining"])
    return seen


async def test_one_ipv4_client_has_one_budget_however_its_address_is_spelt(
    start_server: ServerFactory,
) -> None:
    server = await start_server(rate_limit_max_requests=10, trust_proxy=("127.0.0.1",))
    spellings = ["10.0.0.1", "::ffff:10.0.0.1", "::ffff:a00:1", "0:0:0:0:0:ffff:10.0.0.1"]
    assert await remaining_per_forwarded_client(server, spellings) == ["9", "8", "7", "6"]


async def test_ipv6_clients_share_a_budget_per_64_prefix(start_server: ServerFactory) -> None:
    server = await start_server(rate_limit_max_requests=10, trust_proxy=("127.0.0.1",))
    clients = [
        "2001:db8:1:2::1",
        "2001:0db8:0001:0002:0000:0000:0000:0001",  # the same address, uncompressed
        "2001:db8:1:2:ffff:ffff:ffff:ffff",  # another address in the same /64
        "2001:db8:1:3::1",  # the next /64: its own budget
    ]
    assert await remaining_per_forwarded_client(server, clients) == ["9", "8", "7", "9"]


async def test_nodes_on_one_redis_share_a_clients_request_quota(
    redis_server: RedisServer, start_server: ServerFactory
) -> None:
    a, b = [await start_server(store=redis_server.url, rate_limit_max_requests=4) for _ in range(2)]
    seen = []
    async with ClientSession() as http:
        for node in (a, b, a, b, a):
            async with http.get(node.make_url("/api/health")) as resp:
                assert 1 <= int(resp.headers["RateLimit-Reset"]) <= 900
                seen.append((resp.status, resp.headers["RateLimit-Remaining"]))
    assert seen == [(200, "3"), (200, "2"), (200, "1"), (200, "0"), (429, "0")]
