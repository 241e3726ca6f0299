"""`GET /metrics` moves with posts, connections and requests, and never grows unbounded labels."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import socketio
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from feedserver.app import GATEWAY, METRICS
from feedserver.metrics import metrics_app
from tests.conftest import ServerFactory
from tests.metrics_scrape import label_values, scrape, value

RECEIVE_TIMEOUT = 10


class Subscriber:
    """A python-socketio client of one tenant that counts the `event_created` it gets."""

    def __init__(self) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.seqs: asyncio.Queue[int] = asyncio.Queue()
        self.client.on("event_created", self._on_event)

    async def _on_event(self, event: dict[str, Any], *offset: str) -> None:
        self.seqs.put_nowait(event["seq"])

    async def received(self, count: int) -> list[int]:
        return [await asyncio.wait_for(self.seqs.get(), RECEIVE_TIMEOUT) for _ in range(count)]


@pytest.fixture
async def subscribe() -> AsyncIterator[Callable[[TestServer, str], Awaitable[Subscriber]]]:
    subscribers: list[Subscriber] = []

    async def connect(server: TestServer, tenant: str) -> Subscriber:
        subscriber = Subscriber()
        url = str(server.make_url("")).rstrip("/")
        await subscriber.client.connect(url, auth={"tenant": tenant}, transports=["websocket"])
        subscribers.append(subscriber)
        return subscriber

    yield connect
    for subscriber in subscribers:
        await subscriber.client.disconnect()


async def test_posts_and_connections_move_the_feed_metrics(
    server: TestServer, subscribe: Callable[[TestServer, str], Awaitable[Subscriber]]
) -> None:
    a1, a2 = await subscribe(server, "tenant_a"), await subscribe(server, "tenant_a")
    await subscribe(server, "tenant_b")
    async with ClientSession(str(server.make_url(""))) as http:
        samples = await scrape(http)
        assert value(samples, "feed_connections", tenant="tenant_a") == 2
        assert value(samples, "feed_connections", tenant="tenant_b") == 1
        for n in range(3):
            async with http.post(
                "/api/events", json={"message": f"m{n}"}, headers={"X-Tenant-ID": "tenant_a"}
            ) as resp:
                assert resp.status == 201
        assert await a1.received(3) == [1, 2, 3] and await a2.received(3) == [1, 2, 3]

        samples = await scrape(http)
        assert value(samples, "feed_events_published_total", tenant="tenant_a") == 3
        assert value(samples, "feed_events_published_total", tenant="tenant_b") == 0
        assert value(samples, "feed_events_delivered_total", tenant="tenant_a") == 6
        assert value(samples, "feed_events_delivered_total", tenant="tenant_b") == 0
        assert value(samples, "feed_publish_latency_seconds_count") == 3
        assert value(samples, "feed_fanout_latency_seconds_count") == 3
        assert (
            value(
                samples,
                "feed_http_requests_total",
                method="POST",
                route="/api/events",
                status="201",
            )
            == 3
        )

        # Closed by the server, so that its disconnect handler has run when this returns.
        await server.app[GATEWAY].sio.disconnect(a1.client.get_sid())
        samples = await scrape(http)
        assert value(samples, "feed_connections", tenant="tenant_a") == 1


async def test_a_socket_event_counts_as_published_like_a_post(
    server: TestServer, subscribe: Callable[[TestServer, str], Awaitable[Subscriber]]
) -> None:
    subscriber = await subscribe(server, "tenant_b")
    ack = await subscriber.client.call("create_event", {"message": "hi"}, timeout=RECEIVE_TIMEOUT)
    assert ack["ok"] is True
    await subscriber.received(1)
    async with ClientSession(str(server.make_url(""))) as http:
        samples = await scrape(http)
    assert value(samples, "feed_events_published_total", tenant="tenant_b") == 1
    assert value(samples, "feed_events_delivered_total", tenant="tenant_b") == 1


async def test_unknown_tenants_and_raw_paths_never_become_labels(server: TestServer) -> None:
    url = str(server.make_url("")).rstrip("/")
    refused = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await refused.connect(url, auth={"tenant": "tenant_zzz"}, transports=["websocket"])
    async with ClientSession(url) as http:
        async with http.post(
            "/api/events", json={"message": "x"}, headers={"X-Tenant-ID": "tenant_zzz"}
        ) as resp:
            assert resp.status == 403
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
    async with (
        ClientSession(str(first.make_url(""))) as http,
        http.post(
            "/api/events", json={"message": "x"}, headers={"X-Tenant-ID": "tenant_a"}
        ) as resp,
    ):
        assert resp.status == 201
    async with ClientSession(str(second.make_url(""))) as http:
        samples = await scrape(http)
    assert value(samples, "feed_events_published_total", tenant="tenant_a") == 0


async def test_with_a_metrics_port_the_main_port_has_no_metrics(
    start_server: ServerFactory, aiohttp_server: Any
) -> None:
    server = await start_server(metrics_port=9)
    async with ClientSession(str(server.make_url(""))) as http:
        async with http.get("/metrics") as resp:
            assert resp.status == 404
        async with http.post(
            "/api/events", json={"message": "x"}, headers={"X-Tenant-ID": "tenant_a"}
        ) as resp:
            assert resp.status == 201
    scraper_side = await aiohttp_server(metrics_app(server.app[METRICS]), host="127.0.0.1")
    async with ClientSession(str(scraper_side.make_url(""))) as http:
        samples = await scrape(http)
    assert value(samples, "feed_events_published_total", tenant="tenant_a") == 1
