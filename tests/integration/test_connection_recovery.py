"""socket.io's native connection state recovery with the real JS client.

The JS client has no recovery code of its own (tests/js/swarm.mjs): it only reconnects,
and socket.io-client sends back the pid and the last offset it was given. Memory store
first, then Redis: across a server restart and across nodes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from feedserver.app import create_app
from tests.clients import CLIENT_KINDS, open_client
from tests.conftest import ServerFactory, make_settings
from tests.js_swarm import JsSwarm, js_swarm
from tests.redis_server import RedisServer

pytestmark = pytest.mark.node

TENANT = {"tenant": "tenant_a"}
TENANT_HEADER = {"X-Tenant-ID": "tenant_a"}
# Long enough for the test to post while the socket is away; socket.io's own backoff.
SLOW_RECONNECT: dict[str, Any] = {"reconnectionDelay": 1000, "reconnectionDelayMax": 1000}


async def post_events(server: TestServer, count: int, tenant: str = "tenant_a") -> list[int]:
    seqs = []
    async with ClientSession() as http:
        for i in range(count):
            async with http.post(
                server.make_url("/api/events"),
                json={"message": f"event {i}"},
                headers={"X-Tenant-ID": tenant},
            ) as resp:
                assert resp.status == 201
                seqs.append((await resp.json())["seq"])
    return seqs


async def first_initial(swarm: JsSwarm) -> dict[str, Any]:
    """The first `initial_events` line, after reading the first connect in order."""
    assert (await swarm.expect_type("connect"))["recovered"] is False
    assert (await swarm.expect_type("established"))["data"]["recovered"] is False
    return await swarm.expect_type("initial")


async def reconnected(swarm: JsSwarm) -> tuple[bool, dict[str, Any]]:
    """socket.recovered of the next connect, and its connection_established."""
    connect = await swarm.expect_type("connect")
    established = await swarm.expect_type("established")
    return connect["recovered"], established["data"]


async def replayed(swarm: JsSwarm, count: int) -> list[int]:
    seqs = []
    for _ in range(count):
        line = await swarm.expect_type("event")
        assert line["offset"] == str(line["seq"])
        seqs.append(line["seq"])
    return seqs


async def test_js_client_gets_every_missed_event_exactly_once_in_order(
    server: TestServer,
) -> None:
    async with js_swarm([server.make_url("")], auth=TENANT, verbose=True, **SLOW_RECONNECT) as s:
        await first_initial(s)
        assert await post_events(server, 1) == [1]
        assert await replayed(s, 1) == [1]
        await s.drop(0)
        await s.expect_type("disconnect")
        missed = await post_events(server, 20)

        recovered, established = await reconnected(s)
        assert recovered is True
        assert established["recovered"] is True and established["latestSeq"] == 21
        assert await replayed(s, 20) == missed
        [client] = await s.report()
    assert client["held"] == list(range(1, 22))
    assert client["badOffsets"] == 0
    assert [line for line in s.lines if line["type"] == "initial"] == [s.lines[2]]


@pytest.mark.parametrize("held_before", [0, 3])
async def test_client_that_never_received_an_event_recovers(
    server: TestServer, held_before: int
) -> None:
    await post_events(server, held_before)
    async with js_swarm([server.make_url("")], auth=TENANT, verbose=True, **SLOW_RECONNECT) as s:
        initial = await first_initial(s)
        # The offset of `initial_events` is its last seq, or latestSeq when it is empty.
        assert initial["offset"] == str(held_before)
        await s.drop(0)
        await s.expect_type("disconnect")
        missed = await post_events(server, 5)

        recovered, _ = await reconnected(s)
        assert recovered is True
        assert await replayed(s, 5) == missed
        [client] = await s.report()
    assert client["held"] == list(range(1, held_before + 6))


async def test_gap_older_than_the_ring_buffer_is_not_recovered(
    start_server: ServerFactory,
) -> None:
    server = await start_server(history_size=10, initial_events=3)
    async with js_swarm([server.make_url("")], auth=TENANT, **SLOW_RECONNECT) as s:
        await first_initial(s)
        await s.drop(0)
        await s.expect_type("disconnect")
        await post_events(server, 15)

        recovered, established = await reconnected(s)
        assert recovered is False
        assert established["recovered"] is False
        # As a new client: the last FEED_INITIAL_EVENTS (unlike `auth.since`, below).
        fresh = await s.expect_type("initial")
        assert fresh["seqs"] == [13, 14, 15] and fresh["offset"] == "15"
        [client] = await s.report()
    assert client["held"] == [13, 14, 15]


async def test_offset_of_another_memory_store_is_never_taken_as_recovered(
    start_server: ServerFactory,
) -> None:
    """A restarted memory store numbers new events 1, 2, ... again: the old offset is void."""
    first, second = await start_server(), await start_server()
    await post_events(second, 5)
    async with js_swarm([first.make_url("")], auth=TENANT, **SLOW_RECONNECT) as s:
        await first_initial(s)
        await post_events(first, 2)
        await s.drop(0, url=second.make_url(""))
        await s.expect_type("disconnect")

        recovered, established = await reconnected(s)
        assert recovered is False and established["recovered"] is False
        assert (await s.expect_type("initial"))["seqs"] == [1, 2, 3, 4, 5]


async def test_recovery_off_sends_no_pid_and_no_offsets(start_server: ServerFactory) -> None:
    server = await start_server(connection_state_recovery=False)
    async with js_swarm([server.make_url("")], auth=TENANT, verbose=True, **SLOW_RECONNECT) as s:
        assert (await first_initial(s))["offset"] is None
        await post_events(server, 1)
        assert (await s.expect_type("event"))["offset"] is None
        await s.drop(0)
        await s.expect_type("disconnect")
        await post_events(server, 2)

        recovered, established = await reconnected(s)
        assert recovered is False and established["recovered"] is False
        assert (await s.expect_type("initial"))["seqs"] == [1, 2, 3]


async def test_auth_since_still_resumes_a_client_that_manages_its_own_offsets(
    server: TestServer,
) -> None:
    await post_events(server, 5)
    auth = {**TENANT, "since": 2}
    async with js_swarm([server.make_url("")], auth=auth) as s:
        assert (await s.expect_type("established"))["data"]["recovered"] is True
        assert (await s.expect_type("initial"))["seqs"] == [3, 4, 5]


@pytest.mark.parametrize("kind", CLIENT_KINDS)
async def test_auth_since_older_than_the_buffer_gets_every_event_still_held(
    store_url: str, start_server: ServerFactory, kind: str
) -> None:
    """PROTOCOL: with `since`, every event with seq > since still held, `recovered: false`
    when some were dropped; not the newest FEED_INITIAL_EVENTS a new client gets."""
    server = await start_server(store=store_url, history_size=5, initial_events=2)
    await post_events(server, 9)  # holds 5..9; 2..4 were dropped
    async with open_client(kind, server.make_url(""), auth={**TENANT, "since": 1}) as client:
        info, initial = await client.expect_established()
    assert (info["recovered"], info["latestSeq"]) == (False, 9)
    assert [event["seq"] for event in initial] == [5, 6, 7, 8, 9]


# -- Redis: the offsets live in the store ----------------------------------------------------


@pytest.mark.redis
async def test_js_client_recovers_on_another_node(
    start_server: ServerFactory, redis_server: RedisServer
) -> None:
    a = await start_server(store=redis_server.url)
    b = await start_server(store=redis_server.url)
    async with js_swarm([a.make_url("")], auth=TENANT, verbose=True, **SLOW_RECONNECT) as s:
        await first_initial(s)
        await post_events(b, 2)
        assert await replayed(s, 2) == [1, 2]
        await s.drop(0, url=b.make_url(""))
        await s.expect_type("disconnect")
        missed = await post_events(a, 20)

        recovered, established = await reconnected(s)
        assert recovered is True and established["recovered"] is True
        assert await replayed(s, 20) == missed
        [client] = await s.report()
    assert client["held"] == list(range(1, 23))


@pytest.mark.redis
async def test_js_client_recovers_across_a_server_restart(
    start_server: ServerFactory, redis_server: RedisServer
) -> None:
    """The node shuts down (as on SIGTERM) and comes back on its address; meanwhile events
    are posted on another node. The client reconnects by itself and misses nothing."""
    node = TestServer(create_app(make_settings(store=redis_server.url)), host="127.0.0.1")
    await node.start_server()
    other = await start_server(store=redis_server.url)
    try:
        async with js_swarm([node.make_url("")], auth=TENANT, verbose=True) as s:
            await first_initial(s)
            assert await post_events(node, 3) == [1, 2, 3]
            assert await replayed(s, 3) == [1, 2, 3]
            port = node.port
            await node.close()
            assert (await s.expect_type("disconnect"))["reason"] == "transport close"
            missed = await post_events(other, 20)
            node = TestServer(
                create_app(make_settings(store=redis_server.url)),
                host="127.0.0.1",
                port=port,
            )
            await node.start_server()

            recovered, _ = await reconnected(s)
            assert recovered is True
            assert await replayed(s, 20) == missed
            [client] = await s.report()
        assert client["held"] == list(range(1, 24))
    finally:
        await node.close()


@pytest.mark.redis
async def test_100_concurrent_posts_with_one_key_on_two_nodes_create_one_event(
    start_server: ServerFactory, redis_server: RedisServer
) -> None:
    nodes = [await start_server(store=redis_server.url) for _ in range(2)]

    async def post_once(node: TestServer) -> int:
        async with http.post(
            node.make_url("/api/events"),
            json={"message": "once"},
            headers={"X-Tenant-ID": "tenant_a", "Idempotency-Key": "pay-7"},
        ) as resp:
            assert (await resp.json())["seq"] == 1
            return resp.status

    async with ClientSession() as http:
        statuses = await asyncio.gather(*(post_once(nodes[i % 2]) for i in range(100)))
        async with http.get(nodes[1].make_url("/api/events"), headers=TENANT_HEADER) as resp:
            assert (await resp.json())["latestSeq"] == 1
    assert sorted(statuses) == [200] * 99 + [201]
