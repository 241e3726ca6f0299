"""A tenant's historySize and retentionSeconds through the real paths: REST publishes, REST
history, the socket.io JS client's `initial_events` and its native recovery; memory and
Redis. The server's feed stamps and expires events by a clock the test moves: no sleeping.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from feedserver.app import FEED
from feedserver.events import UtcClock
from tests.clients import open_client
from tests.conftest import ServerFactory
from tests.js_swarm import js_swarm

pytestmark = pytest.mark.node

ACME = {"X-Tenant-ID": "acme"}


class Clock:
    def __init__(self) -> None:
        self.now_ns = time.time_ns()

    def advance(self, seconds: float) -> None:
        self.now_ns += int(seconds * 1_000_000_000)


@pytest.fixture
async def clock() -> Clock:
    return Clock()


@pytest.fixture
async def server(store_url: str, start_server: ServerFactory, clock: Clock) -> TestServer:
    """A server whose feed runs on `clock`, with tenant acme: 3 events, 60 seconds."""
    server = await start_server(store=store_url, initial_events=10)
    server.app[FEED].clock = UtcClock(lambda: clock.now_ns)
    settings = {"historySize": 3, "retentionSeconds": 60}
    async with ClientSession() as http:
        body = {"id": "acme", "settings": settings}
        async with http.post(server.make_url("/api/admin/tenants"), json=body) as resp:
            assert resp.status == 201
    return server


async def post(server: TestServer, count: int) -> list[int]:
    seqs = []
    async with ClientSession() as http:
        for i in range(count):
            url = server.make_url("/api/events")
            async with http.post(url, json={"message": f"m{i}"}, headers=ACME) as resp:
                assert resp.status == 201
                seqs.append((await resp.json())["seq"])
    return seqs


async def history(server: TestServer, **query: Any) -> dict[str, Any]:
    async with (
        ClientSession() as http,
        http.get(server.make_url("/api/events"), params=query, headers=ACME) as resp,
    ):
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return body


async def test_history_and_initial_events_keep_historysize_events_none_expired(
    server: TestServer, clock: Clock
) -> None:
    assert await post(server, 2) == [1, 2]
    clock.advance(50)
    assert await post(server, 2) == [3, 4]  # historySize 3: seq 1 goes by count
    assert [e["seq"] for e in (await history(server))["events"]] == [2, 3, 4]
    clock.advance(11)  # seq 2 is 61 seconds old
    body = await history(server, limit=500)
    assert ([e["seq"] for e in body["events"]], body["latestSeq"]) == ([3, 4], 4)
    assert [e["seq"] for e in (await history(server, since=0))["events"]] == [3, 4]
    async with open_client("js", server.make_url(""), query={"tenant": "acme"}) as client:
        info, initial = await client.expect_established()
    assert [e["seq"] for e in initial] == [3, 4] and info["latestSeq"] == 4


async def test_the_js_client_is_not_recovered_when_what_it_missed_expired(
    server: TestServer, clock: Clock
) -> None:
    """As after a ring overflow: `socket.recovered === false` and a fresh `initial_events`,
    never a replay with a hole."""
    slow: dict[str, Any] = {"reconnectionDelay": 1000, "reconnectionDelayMax": 1000}
    async with js_swarm([server.make_url("")], auth={"tenant": "acme"}, **slow) as swarm:
        assert (await swarm.expect_type("connect"))["recovered"] is False
        await swarm.expect_type("initial")
        await swarm.drop(0)
        await swarm.expect_type("disconnect")
        await post(server, 2)  # missed while away ...
        clock.advance(61)  # ... and expired before the client is back
        connect = await swarm.expect_type("connect")
        established = await swarm.expect_type("established")
        assert connect["recovered"] is False and established["data"]["recovered"] is False
        fresh = await swarm.expect_type("initial")
        assert (fresh["seqs"], fresh["offset"]) == ([], "2")
