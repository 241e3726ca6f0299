"""Two feedserver nodes sharing one real redis-server (FEED_STORE=redis://...), and the
tests that do not restart Redis also on a real 3-master Redis Cluster."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession, TCPConnector
from aiohttp.test_utils import TestServer

from feedserver.app import FEED, GATEWAY, TENANTS
from feedserver.cluster import NOTICES_CHANNEL, NoticeChannel, RedisBus
from feedserver.events import Event
from feedserver.store.redis import redis_client
from feedserver.tenants import TenantSettings
from tests.clients import open_client
from tests.conftest import ServerFactory
from tests.feed_subscriber import subscribed
from tests.redis_server import RedisServer
from tests.waiting import eventually

pytestmark = pytest.mark.redis

Nodes = tuple[TestServer, TestServer]


@pytest.fixture
async def nodes(redis_url: str, start_server: ServerFactory) -> Nodes:
    return await start_server(store=redis_url), await start_server(store=redis_url)


@pytest.fixture
async def redis_nodes(redis_server: RedisServer, start_server: ServerFactory) -> Nodes:
    return await start_server(store=redis_server.url), await start_server(store=redis_server.url)


def url(server: TestServer) -> str:
    return str(server.make_url(""))


async def post(
    http: ClientSession, server: TestServer, message: str, tenant: str = "tenant_a"
) -> tuple[int, Any]:
    async with http.post(
        server.make_url("/api/events"), json={"message": message}, headers={"X-Tenant-ID": tenant}
    ) as resp:
        return resp.status, await resp.json()


async def get_json(
    http: ClientSession, server: TestServer, path: str, tenant: str | None = "tenant_a"
) -> tuple[int, Any]:
    headers = {"X-Tenant-ID": tenant} if tenant else {}
    async with http.get(server.make_url(path), headers=headers) as resp:
        return resp.status, await resp.json()


async def test_a_post_on_either_node_reaches_clients_on_both_once_in_order(nodes: Nodes) -> None:
    a, b = nodes
    async with (
        ClientSession() as http,
        subscribed(url(a), "tenant_a") as on_a,
        subscribed(url(b), "tenant_a") as on_b,
        subscribed(url(b), "tenant_b") as other_tenant,
    ):
        for n in range(1, 11):
            status, event = await post(http, a if n % 2 else b, f"m{n}")
            assert (status, event["seq"]) == (201, n)
        for sub in (on_a, on_b):
            await sub.wait_for_seq(10)
            assert sub.seqs == list(range(1, 11))
            assert [e["message"] for e in sub.live] == [f"m{n}" for n in range(1, 11)]
        status, _ = await post(http, a, "for b only", tenant="tenant_b")
        await other_tenant.wait_for_seq(1)
        assert [e["tenantId"] for e in other_tenant.live] == ["tenant_b"]


async def test_concurrent_posts_on_both_nodes_get_every_seq_once_delivered_in_order(
    nodes: Nodes,
) -> None:
    a, b = nodes
    async with (
        ClientSession(connector=TCPConnector(limit=40)) as http,
        subscribed(url(a), "tenant_a") as on_a,
        subscribed(url(b), "tenant_a") as on_b,
    ):
        results = await asyncio.gather(
            *(post(http, node, f"{i}") for i in range(500) for node in (a, b))
        )
        assert {status for status, _ in results} == {201}
        assert sorted(event["seq"] for _, event in results) == list(range(1, 1001))
        for sub in (on_a, on_b):
            await sub.wait_for_seq(1000)
            assert sub.seqs == list(range(1, 1001))
        pages = []
        for node in (a, b):
            first = await get_json(http, node, "/api/events?since=0&limit=500")
            second = await get_json(http, node, "/api/events?since=500&limit=500")
            pages.append((first, second))
        assert pages[0] == pages[1]
        (_, first), (_, second) = pages[0]
        assert [e["seq"] for e in first["events"] + second["events"]] == list(range(1, 1001))
        assert first["latestSeq"] == 1000


async def test_sockets_joining_during_a_burst_on_the_other_node_miss_nothing(
    nodes: Nodes,
) -> None:
    a, b = nodes
    total = 300
    async with (
        ClientSession(connector=TCPConnector(limit=10)) as http,
        contextlib.AsyncExitStack() as stack,
    ):
        burst = asyncio.gather(*(post(http, a, f"m{n}") for n in range(total)))
        joined = [await stack.enter_async_context(subscribed(url(b), "tenant_a")) for _ in range(5)]
        await burst
        for sub in joined:
            await sub.wait_for_seq(total)
            # its catch-up, then live events: contiguous to the end, nothing twice
            assert sub.seqs == list(range(sub.seqs[0], total + 1))


async def test_a_socket_joining_while_its_node_lags_behind_the_store_gets_no_duplicate(
    nodes: Nodes,
) -> None:
    a, b = nodes
    gate = asyncio.Event()

    async def stall(event: Event) -> None:  # holds node B's delivery after the first event
        await gate.wait()

    b.app[FEED].add_listener(stall)
    async with ClientSession() as http:
        for n in range(3):
            await post(http, a, f"m{n}")
        async with subscribed(url(b), "tenant_a") as late:
            await in_room(b, "tenant_a", 1)  # live from here on
            gate.set()
            await late.wait_for_seq(3)
            assert late.seqs == [1, 2, 3]
            await post(http, b, "m3")
            await late.wait_for_seq(4)
            assert late.seqs == [1, 2, 3, 4]


async def test_stats_count_the_connections_of_every_node(nodes: Nodes) -> None:
    a, b = nodes

    async def connections_seen_by(node: TestServer) -> int:
        _, body = await get_json(http, node, "/api/events/stats")
        count: int = body["tenantStats"]["tenant_a"]["connections"]
        return count

    async def until(node: TestServer, expected: int) -> None:
        # Other nodes' counts arrive through Redis a moment after they change: poll.
        for _ in range(200):
            if (seen := await connections_seen_by(node)) == expected:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"stats show {seen} connections, expected {expected}")

    async with ClientSession() as http, subscribed(url(a), "tenant_a"):
        async with subscribed(url(b), "tenant_a"), subscribed(url(b), "tenant_a"):
            await until(a, 3)
            await until(b, 3)
        await until(a, 1)
        await until(b, 1)


async def test_a_system_message_reaches_the_js_clients_of_every_node_once(nodes: Nodes) -> None:
    a, b = nodes
    async with (
        ClientSession() as http,
        open_client("js", url(a), query={"tenant": "tenant_a"}) as on_a,
        open_client("js", url(b), query={"tenant": "tenant_b"}) as on_b,
    ):
        for client in (on_a, on_b):
            await client.expect_established()
        await both_nodes_listen(nodes)
        # Each node hears its own notice on the channel too, after its clients got it. Its
        # next message there comes from the other node and arrives after that echo: had the
        # echo been delivered, it would be read before the other node's notice.
        sent = []
        for node, message in ((a, "first, from A"), (b, "second, from B"), (a, "third, from A")):
            status, notice = await post_system_message(http, node, message)
            assert (status, notice["message"]) == (202, message)
            sent.append(notice)
            for client in (on_a, on_b):
                assert await client.expect_event("system_message") == [notice]
        assert [n["message"] for n in sent] == ["first, from A", "second, from B", "third, from A"]


async def test_a_system_message_reaches_its_nodes_clients_while_redis_is_down(
    redis_nodes: Nodes, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    a, _ = redis_nodes
    async with ClientSession() as http, subscribed(url(a), "tenant_a") as on_a:
        await redis_server.stop()
        status, notice = await post_system_message(http, a, "redis is down")
        assert (status, notice["message"], notice["level"]) == (202, "redis is down", "info")
        await on_a.wait_for(lambda: len(on_a.system) == 1)
        assert on_a.system == [notice]
        assert "reached this node's clients only" in caplog.text


async def test_the_notice_channel_subscribes_again_after_a_redis_restart(
    redis_nodes: Nodes, redis_server: RedisServer
) -> None:
    a, b = redis_nodes
    async with ClientSession() as http, subscribed(url(b), "tenant_a") as on_b:
        await both_nodes_listen(redis_nodes)
        await redis_server.stop()
        await eventually(
            lambda: not any(notice_channel(node).listening.is_set() for node in redis_nodes),
            "both nodes saw their subscription end",
        )
        await redis_server.start()
        await both_nodes_listen(redis_nodes)
        assert (await post_system_message(http, a, "back"))[0] == 202
        await on_b.wait_for(lambda: len(on_b.system) == 1)
        assert on_b.system[0]["message"] == "back"


async def test_malformed_messages_on_the_notice_channel_are_ignored(
    redis_nodes: Nodes, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = redis_nodes
    caplog.set_level(logging.WARNING)
    notice = {"message": "valid", "level": "info", "timestamp": "2026-01-01T00:00:00.000Z"}
    garbage = [
        b"\xff\xfe",
        b"not json",
        b"[]",
        orjson.dumps({"notice": notice}),
        orjson.dumps({"node": "elsewhere", "notice": {**notice, "level": 1}}),
        orjson.dumps({"node": "elsewhere", "notice": {"message": "no level"}}),
    ]
    redis = redis_client(redis_server.url, decode_responses=False)
    async with subscribed(url(a), "tenant_a") as on_a, subscribed(url(b), "tenant_b") as on_b:
        await both_nodes_listen(redis_nodes)
        for data in garbage:
            await redis.publish(NOTICES_CHANNEL, data)
        await redis.publish(NOTICES_CHANNEL, orjson.dumps({"node": "elsewhere", "notice": notice}))
        # The channel keeps order: the valid notice is read after every malformed one.
        await on_a.wait_for(lambda: len(on_a.system) == 1)
        await on_b.wait_for(lambda: len(on_b.system) == 1)
        assert on_a.system == on_b.system == [notice]
    await redis.aclose()
    assert all(notice_channel(node).listening.is_set() for node in redis_nodes)  # still subscribed
    malformed = [r for r in caplog.records if "malformed message" in r.getMessage()]
    assert len(malformed) == 2  # one line per node: the rest of the burst is counted later
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_a_node_shutting_down_warns_only_its_own_clients(
    redis_nodes: Nodes, redis_server: RedisServer, start_server: ServerFactory
) -> None:
    a, b = redis_nodes
    c = await start_server(store=redis_server.url)
    async with (
        ClientSession() as http,
        subscribed(url(a), "tenant_a") as on_a,
        subscribed(url(b), "tenant_a") as on_b,
    ):
        await both_nodes_listen((a, b, c))
        await a.close()
        assert [n["message"] for n in on_a.system] == ["server shutting down"]
        # Pub/sub keeps order: had A's notice crossed, B would read it before C's.
        assert (await post_system_message(http, c, "still here"))[0] == 202
        await on_b.wait_for(lambda: len(on_b.system) >= 1)
        assert [n["message"] for n in on_b.system] == ["still here"]


async def test_a_tenant_publish_limit_holds_for_both_nodes_together(
    redis_server: RedisServer, start_server: ServerFactory
) -> None:
    tenants = tuple(f"t{n}" for n in range(5))
    a, b = [
        await start_server(store=redis_server.url, tenants=tenants, tenant_max_events_per_sec=3)
        for _ in range(2)
    ]
    async with ClientSession() as http:
        # The window is one second from a tenant's first post: a fresh tenant per attempt,
        # until all six posts fit in one window (a busy machine may need a second try).
        for tenant in tenants:
            started = time.monotonic()
            on_a = [(await post(http, a, "x", tenant))[0] for _ in range(3)]
            on_b = [(await post(http, b, "x", tenant))[0] for _ in range(3)]
            if time.monotonic() - started < 0.9:
                break
        else:
            raise AssertionError("six posts never fitted in one second")
    assert on_a == [201, 201, 201]
    assert on_b == [429, 429, 429]  # node A used the tenant's quota


async def test_a_restarted_node_continues_history_and_seq(
    redis_server: RedisServer, start_server: ServerFactory
) -> None:
    first = await start_server(store=redis_server.url)
    async with ClientSession() as http:
        for n in range(3):
            await post(http, first, f"m{n}")
        await first.close()
        again = await start_server(store=redis_server.url)
        _, history = await get_json(http, again, "/api/events")
        assert [e["seq"] for e in history["events"]] == [1, 2, 3]
        status, event = await post(http, again, "after restart")
        assert (status, event["seq"]) == (201, 4)


async def test_events_survive_a_redis_restart_with_aof(
    redis_nodes: Nodes, redis_server: RedisServer
) -> None:
    a, b = redis_nodes
    async with ClientSession() as http, subscribed(url(b), "tenant_a") as on_b:
        for n in range(3):
            await post(http, a, f"m{n}")
        await redis_server.restart()
        _, history = await get_json(http, b, "/api/events")
        assert [e["message"] for e in history["events"]] == ["m0", "m1", "m2"]
        status, event = await post(http, a, "after")
        assert (status, event["seq"]) == (201, 4)
        await on_b.wait_for_seq(4)
        assert on_b.seqs == [1, 2, 3, 4]


async def test_while_redis_is_down_the_nodes_answer_503_and_recover_by_themselves(
    redis_nodes: Nodes, redis_server: RedisServer
) -> None:
    a, b = redis_nodes
    async with ClientSession() as http, subscribed(url(b), "tenant_a") as on_b:
        assert (await post(http, a, "before"))[0] == 201
        await redis_server.stop()

        status, health = await get_json(http, a, "/api/health", tenant=None)
        assert status == 503
        assert health["status"] == "unhealthy"
        assert health["store"] == {"backend": "redis", "ok": False}
        status, body = await post(http, a, "during")
        assert (status, body["error"]["code"]) == (503, "store_unavailable")
        status, body = await get_json(http, b, "/api/events")
        assert (status, body["error"]["code"]) == (503, "store_unavailable")
        ack = await on_b.client.call("create_event", {"message": "during"}, timeout=10)
        assert ack["ok"] is False and ack["error"]["code"] == "store_unavailable"
        assert on_b.client.connected

        await redis_server.start()
        status, health = await get_json(http, a, "/api/health", tenant=None)
        assert (status, health["store"]) == (200, {"backend": "redis", "ok": True})
        status, event = await post(http, a, "after")
        assert (status, event["seq"]) == (201, 2)  # nothing was half-written meanwhile
        await on_b.wait_for_seq(2)
        assert on_b.seqs == [1, 2] and on_b.client.connected


async def in_room(node: TestServer, room: str, members: int) -> None:
    manager = node.app[GATEWAY].sio.manager
    for _ in range(200):
        if len(list(manager.get_participants("/", room))) >= members:
            return
        await asyncio.sleep(0.02)  # joining follows the catch-up, in a background task
    raise AssertionError(f"{room} has no {members} members")


async def post_system_message(
    http: ClientSession, server: TestServer, message: str
) -> tuple[int, Any]:
    # No token needed: FEED_AUTH=none accepts admin calls from loopback clients.
    async with http.post(
        server.make_url("/api/system-messages"), json={"message": message, "level": "info"}
    ) as resp:
        return resp.status, await resp.json()


def notice_channel(node: TestServer) -> NoticeChannel:
    bus = node.app[FEED].bus
    assert isinstance(bus, RedisBus)
    return bus.notices


async def both_nodes_listen(nodes: tuple[TestServer, ...]) -> None:
    """Wait until every node is subscribed to the system message channel."""
    for node in nodes:
        await asyncio.wait_for(notice_channel(node).listening.wait(), 10)


async def test_a_tenant_with_a_tiny_history_loses_no_live_event_of_a_burst(
    redis_server: RedisServer, start_server: ServerFactory
) -> None:
    """Its stream is what the other node's relay reads: trimmed to one event, a burst would
    be gone before that node read it. Reads stay within its one event."""
    a = await start_server(store=redis_server.url)
    b = await start_server(store=redis_server.url)
    await a.app[TENANTS].create("tiny", TenantSettings(history_size=1))
    await eventually(lambda: "tiny" in b.app[FEED].tenants, "node b knows the tenant")
    async with (
        ClientSession(connector=TCPConnector(limit=40)) as http,
        subscribed(url(b), "tiny") as on_b,
    ):
        results = await asyncio.gather(*(post(http, a, f"{i}", "tiny") for i in range(300)))
        assert {status for status, _ in results} == {201}
        await on_b.wait_for_seq(300)
        assert on_b.seqs == list(range(1, 301))
        _, history = await get_json(http, b, "/api/events?since=0&limit=500", "tiny")
        assert [e["seq"] for e in history["events"]] == [300]
