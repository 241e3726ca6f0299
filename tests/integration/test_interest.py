"""Interest-based delivery on two real nodes and a real redis-server (the first two tests
also on a real Redis Cluster): a node reads only the streams of the tenants it has sockets
of, and a socket joining, leaving or rejoining while events flow gets every event once, in
order."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from aiohttp import ClientSession, TCPConnector
from aiohttp.test_utils import TestServer

from feedserver.app import FEED
from feedserver.cluster import RedisBus, StreamRelay
from tests.conftest import ServerFactory
from tests.feed_subscriber import Subscriber, subscribed
from tests.integration.test_tenants_two_nodes import call
from tests.integration.test_two_nodes import post, url
from tests.redis_server import RedisServer
from tests.socket_client import socket_client
from tests.waiting import eventually

pytestmark = pytest.mark.redis

BURST = 200


def relay(node: TestServer) -> StreamRelay:
    bus = node.app[FEED].bus
    assert isinstance(bus, RedisBus)
    return bus.relay


async def nodes_with_grace(
    store: str, start_server: ServerFactory, grace_s: float
) -> tuple[TestServer, TestServer]:
    """Node a, and node b with FEED_FOLLOW_GRACE_SECONDS=`grace_s`, on the store `store`."""
    a = await start_server(store=store)
    return a, await start_server(store=store, follow_grace_s=grace_s)


def assert_once_in_order(sub: Subscriber, last: int) -> None:
    """Its catch-up, then live events: contiguous up to `last`, nothing twice."""
    assert sub.seqs and sub.seqs == list(range(sub.seqs[0], last + 1))


async def burst(http: ClientSession, nodes: tuple[TestServer, ...], first: int) -> None:
    """BURST concurrent posts of tenant_a, alternating between `nodes`."""
    posts = [post(http, nodes[n % len(nodes)], f"m{first + n}") for n in range(BURST)]
    assert {status for status, _ in await asyncio.gather(*posts)} == {201}


async def test_a_node_without_sockets_of_a_tenant_reads_none_of_its_events(
    redis_url: str, start_server: ServerFactory
) -> None:
    a, b = [await start_server(store=redis_url) for _ in range(2)]
    async with (
        ClientSession() as http,
        subscribed(url(a), "tenant_a") as on_a,
        subscribed(url(b), "tenant_b") as on_b,
    ):
        for n in range(20):
            assert (await post(http, b, f"a{n}"))[0] == 201  # published on b, read by a only
        await on_a.wait_for_seq(20)
        assert (await post(http, a, "b0", tenant="tenant_b"))[0] == 201
        await on_b.wait_for_seq(1)
        assert on_a.seqs == list(range(1, 21)) and on_b.seqs == [1]
        assert relay(b).events_read == {"tenant_b": 1}
        assert relay(b).delivered_up_to("tenant_a") is None
        assert relay(a).events_read == {"tenant_a": 20}


async def test_sockets_joining_a_node_not_following_their_tenant_in_a_burst_get_each_event_once(
    redis_url: str, start_server: ServerFactory
) -> None:
    # No grace: each round's last leave stops the following, the next join starts afresh.
    a, b = await nodes_with_grace(redis_url, start_server, 0)
    async with ClientSession(connector=TCPConnector(limit=20)) as http:
        for round_ in range(4):
            assert relay(b).delivered_up_to("tenant_a") is None  # not followed
            posting = asyncio.create_task(burst(http, (a, b), round_ * BURST))
            async with contextlib.AsyncExitStack() as stack:
                # The first joins the follow, the others arrive while it starts or just after.
                joined = await asyncio.gather(
                    *(stack.enter_async_context(subscribed(url(b), "tenant_a")) for _ in range(4))
                )
                await posting
                last = (round_ + 1) * BURST
                for sub in joined:
                    await sub.wait_for_seq(last)
                    assert_once_in_order(sub, last)
            await eventually(
                lambda: relay(b).delivered_up_to("tenant_a") is None,
                "node b stopped following tenant_a when its last socket left",
            )


async def test_a_reconnect_within_the_grace_resumes_the_node_that_read_on(
    redis_server: RedisServer, start_server: ServerFactory
) -> None:
    a, b = await nodes_with_grace(redis_server.url, start_server, 3600)
    async with ClientSession(connector=TCPConnector(limit=20)) as http:
        async with subscribed(url(b), "tenant_a") as first:
            await burst(http, (a,), 0)
            await first.wait_for_seq(BURST)
        await eventually(
            lambda: relay(b).interest.subscribers("tenant_a") == 0, "the socket has left node b"
        )
        await burst(http, (a,), BURST)
        # Within the grace: node b still reads tenant_a and delivers (to nobody).
        await eventually(
            lambda: relay(b).delivered_up_to("tenant_a") == 2 * BURST, "node b read on"
        )
        async with subscribed(url(b), "tenant_a") as again:
            await burst(http, (a, b), 2 * BURST)
            await again.wait_for_seq(3 * BURST)
            assert_once_in_order(again, 3 * BURST)
        assert relay(b).events_read["tenant_a"] == 3 * BURST  # one follow all along


async def test_a_followed_tenant_is_delivered_once_in_order_through_a_redis_restart(
    redis_server: RedisServer, start_server: ServerFactory
) -> None:
    a, b = [await start_server(store=redis_server.url) for _ in range(2)]
    async with (
        ClientSession(connector=TCPConnector(limit=20)) as http,
        subscribed(url(b), "tenant_a") as on_b,
    ):
        await burst(http, (a,), 0)
        await redis_server.restart()
        # A socket joins node a (not following yet) as the restarted Redis comes back.
        async with subscribed(url(a), "tenant_a") as on_a:
            await burst(http, (a, b), BURST)
            for sub in (on_a, on_b):
                await sub.wait_for_seq(2 * BURST)
                assert_once_in_order(sub, 2 * BURST)
            assert on_b.seqs[0] == 1


async def test_a_socket_refused_for_a_suspended_tenant_makes_its_node_follow_nothing(
    redis_server: RedisServer, start_server: ServerFactory
) -> None:
    node = await start_server(store=redis_server.url)
    async with ClientSession() as http:
        for method, body in (("POST", {"id": "acme"}), ("PATCH", {"status": "suspended"})):
            path = "/api/admin/tenants" + ("/acme" if method == "PATCH" else "")
            assert (await call(http, node, method, path, body))[0] in (200, 201)
    async with socket_client(node.make_url(""), query={"tenant": "acme"}) as client:
        refused = await client.expect_type("connect_error")
        assert refused["data"]["code"] == "tenant_suspended"
    assert not relay(node).interest.wants("acme")
    assert relay(node).interest.subscribers("acme") == 0
