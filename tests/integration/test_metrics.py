"""`GET /metrics` moves with posts, connections and requests, and never grows unbounded labels."""

from __future__ import annotations

import contextlib

import pytest
import socketio
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from feedserver.app import GATEWAY
from feedserver.auth import mint_token
from tests.conftest import ServerFactory
from tests.feed_subscriber import subscribed
from tests.metrics_scrape import label_values, scrape, value
from tests.redis_server import RedisServer


async def post(http: ClientSession, message: str, tenant: str, status: int = 201) -> None:
    async with http.post(
        "/api/events", json={"message": message}, headers={"X-Tenant-ID": tenant}
    ) as resp:
        assert resp.status == status


async def test_posts_and_connections_move_the_feed_metrics(server: TestServer) -> None:
    url = str(server.make_url(""))
    async with ClientSession(url) as http, contextlib.AsyncExitStack() as stack:
        a1 = await stack.enter_async_context(subscribed(url, "tenant_a"))
        a2 = await stack.enter_async_context(subscribed(url, "tenant_a"))
        await stack.enter_async_context(subscribed(url, "tenant_b"))
        samples = await scrape(http)
        assert value(samples, "feed_connections", tenant="tenant_a") == 2
        assert value(samples, "feed_connections", tenant="tenant_b") == 1
        for n in range(3):
            await post(http, f"m{n}", "tenant_a")
        for sub in (a1, a2):
            await sub.wait_for_seq(3)

        samples = await scrape(http)
        assert value(samples, "feed_events_published_total", tenant="tenant_a") == 3
        assert value(samples, "feed_events_published_total", tenant="tenant_b") == 0
        assert value(samples, "feed_events_delivered_total", tenant="tenant_a") == 6
        assert value(samples, "feed_events_delivered_total", tenant="tenant_b") == 0
        assert value(samples, "feed_publish_latency_seconds_count") == 3
        assert value(samples, "feed_fanout_latency_seconds_count") == 3
        posts = {"method": "POST", "route": "/api/events", "status": "201"}
        assert value(samples, "feed_http_requests_total", **posts) == 3

        # Closed by the server, so that its disconnect handler has run when this returns.
        await server.app[GATEWAY].sio.disconnect(a1.client.get_sid())
        samples = await scrape(http)
        assert value(samples, "feed_connections", tenant="tenant_a") == 1


async def test_a_socket_event_counts_as_published_like_a_post(server: TestServer) -> None:
    url = str(server.make_url(""))
    async with subscribed(url, "tenant_b") as sub, ClientSession(url) as http:
        ack = await sub.client.call("create_event", {"message": "hi"}, timeout=10)
        assert ack["ok"] is True
        await sub.wait_for_seq(1)
        samples = await scrape(http)
    assert value(samples, "feed_events_published_total", tenant="tenant_b") == 1
    assert value(samples, "feed_events_delivered_total", tenant="tenant_b") == 1


async def test_unknown_tenants_and_raw_paths_never_become_labels(server: TestServer) -> None:
    url = str(server.make_url("")).rstrip("/")
    refused = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await refused.connect(url, auth={"tenant": "tenant_zzz"}, transports=["websocket"])
    async with ClientSession(url) as http:
        await post(http, "x", "tenant_zzz", status=403)
        async with http.get("/no/such/path-12345?token=abc") as resp:
            assert resp.status == 404
        async with http.get("/api/events?limit=7", headers={"X-Tenant-ID": "tenant_a"}) as resp:
            assert resp.status == 200
        samples = await scrape(http)
    labels = label_values(samples)
    assert not any("tenant_zzz" in label or "12345" in label for label in labels)
    assert {"tenant_a", "tenant_b", "/api/events", "unmatched"} <= labels
    assert (
        value(samples, "feed_http_requests_total", method="GET", route="unmatched", status="404")
        == 1
    )
    assert (
        value(samples, "feed_http_requests_total", method="GET", route="/api/events", status="200")
        == 1
    )


async def test_two_apps_in_one_process_keep_separate_metrics(start_server: ServerFactory) -> None:
    first, second = await start_server(), await start_server()
    async with ClientSession(str(first.make_url(""))) as http:
        await post(http, "x", "tenant_a")
    async with ClientSession(str(second.make_url(""))) as http:
        samples = await scrape(http)
    assert value(samples, "feed_events_published_total", tenant="tenant_a") == 0


@pytest.mark.redis
async def test_a_store_outage_counts_store_errors_and_turns_ready_to_503(
    start_server: ServerFactory, redis_server: RedisServer
) -> None:
    server = await start_server(store=redis_server.url)
    async with ClientSession(str(server.make_url(""))) as http:
        await post(http, "before", "tenant_a")
        async with http.get("/api/ready") as resp:
            assert resp.status == 200
        await redis_server.stop()
        await post(http, "during", "tenant_a", status=503)
        async with http.get("/api/ready") as resp:
            assert resp.status == 503
            assert (await resp.json())["store"] == {"ok": False}
        samples = await scrape(http)
        assert value(samples, "feed_store_errors_total") >= 1
        assert value(samples, "feed_events_published_total", tenant="tenant_a") == 1
        await redis_server.start()
        async with http.get("/api/ready") as resp:
            assert resp.status == 200


async def test_in_token_mode_metrics_need_an_admin_token(start_server: ServerFactory) -> None:
    secret = "m" * 32
    server = await start_server(auth="token", auth_secret=secret)
    admin = mint_token(secret, "tenant_a", 60, admin=True)
    tenant_only = mint_token(secret, "tenant_a", 60)
    async with ClientSession(str(server.make_url(""))) as http:
        async with http.get("/metrics") as resp:
            assert resp.status == 401
        async with http.get("/metrics", headers={"Authorization": f"Bearer {tenant_only}"}) as resp:
            assert resp.status == 403
            assert (await resp.json())["error"]["code"] == "forbidden"
        samples = await scrape(http, Authorization=f"Bearer {admin}")
    assert value(samples, "feed_connections", tenant="tenant_a") == 0


async def test_rate_limit_refusals_are_counted_per_transport(start_server: ServerFactory) -> None:
    server = await start_server(rate_limit_max_requests=1)
    url = str(server.make_url(""))
    async with ClientSession(url) as http:
        for status in (200, 429):
            async with http.get("/api/health") as resp:
                assert resp.status == status
        async with subscribed(url, "tenant_a") as sub:
            ack = await sub.client.call("create_event", {"message": "over"}, timeout=10)
        assert ack["error"]["code"] == "rate_limited"
        samples = await scrape(http)
    assert value(samples, "feed_rate_limited_total", transport="http") == 1
    assert value(samples, "feed_rate_limited_total", transport="socket") == 1
    limited = {"method": "GET", "route": "/api/health", "status": "429"}
    assert value(samples, "feed_http_requests_total", **limited) == 1
