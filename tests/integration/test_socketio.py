"""Socket.IO with python-socketio's AsyncClient against a real feedserver."""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from feedserver.app import FEED, create_app
from tests.conftest import ServerFactory, make_settings
from tests.faulty_store import BrokenAppendStore
from tests.rest_calls import latest_seq, publish
from tests.socket_client import socket_client

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
# Pings every second: these tests see several heartbeats pass (the default is 25 s).
SHORT_PINGS = {"ping_interval": 1.0, "ping_timeout": 1.0}


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_connect_gets_established_then_initial_events(
    start_server: ServerFactory, transport: str
) -> None:
    server = await start_server(**SHORT_PINGS)
    events = [await publish(server, "tenant_a", f"m{i}") for i in range(3)]
    url = server.make_url("")
    async with socket_client(url, query={"tenant": "tenant_a"}, transports=[transport]) as client:
        info, initial = await client.expect_established()
        assert info["socketId"] == client.sio.get_sid()
    assert info["tenantId"] == "tenant_a"
    assert info["latestSeq"] == 3 and info["recovered"] is False
    assert TIMESTAMP.match(info["timestamp"])
    assert initial == events


async def test_initial_events_are_the_last_feed_initial_events(
    start_server: ServerFactory,
) -> None:
    server = await start_server(initial_events=2)
    events = [await publish(server, "tenant_a", f"m{i}") for i in range(5)]
    async with socket_client(server.make_url(""), auth={"tenant": "tenant_a"}) as client:
        info, initial = await client.expect_established()
    assert initial == events[-2:] and info["latestSeq"] == 5


async def test_events_reach_every_client_of_a_tenant_and_none_of_another(
    start_server: ServerFactory,
) -> None:
    server = await start_server(**SHORT_PINGS)
    url = server.make_url("")
    async with (
        socket_client(url, query={"tenant": "tenant_a"}) as a1,
        socket_client(url, auth={"tenant": "tenant_a"}, transports=["polling"]) as a2,
        socket_client(url, query={"tenant": "tenant_b"}) as b,
    ):
        for client in (a1, a2, b):
            await client.expect_established()
        sent_a = [await publish(server, "tenant_a", f"a{i}") for i in range(3)]
        for client in (a1, a2):
            assert [await client.expect_live_event() for _ in sent_a] == sent_a
        # b's packets are ordered: an event of tenant_a sent to b would precede this one.
        sent_b = await publish(server, "tenant_b", "b")
        assert await b.expect_live_event() == sent_b
        assert not [line for line in b.lines if line.get("event") == "event_created"][1:]
        assert not [line for line in a1.unread() + a2.unread() if line.get("event")]


async def test_create_event_ack_ok_and_broadcast_to_the_tenant(server: TestServer) -> None:
    url = server.make_url("")
    async with (
        socket_client(url, query={"tenant": "tenant_a"}) as sender,
        socket_client(url, query={"tenant": "tenant_a"}) as peer,
        socket_client(url, query={"tenant": "tenant_b"}) as other,
    ):
        for client in (sender, peer, other):
            await client.expect_established()
        ack = await sender.emit("create_event", {"message": "<i>socket</i>"})
        assert ack["ok"] is True and set(ack) == {"ok", "event"}
        event = ack["event"]
        assert event["message"] == "&lt;i&gt;socket&lt;/i&gt;"
        assert (event["tenantId"], event["seq"], event["id"]) == ("tenant_a", 1, "tenant_a-1")
        assert TIMESTAMP.match(event["timestamp"])
        assert await peer.expect_live_event() == event
        assert await sender.expect_live_event() == event
        ack_b = await other.emit("create_event", {"message": "b"})
        assert await other.expect_live_event() == ack_b["event"]
    assert await latest_seq(server, "tenant_a") == 1


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"message": ""}, "message"),
        ({"message": "x" * 501}, "message"),
        ({"message": 5}, "message"),
        ({"message": "x", "tenantId": "tenant_b"}, "tenantId"),
        (["x"], "body"),
        (None, "body"),
    ],
)
async def test_create_event_ack_error_and_nothing_stored(
    server: TestServer, payload: Any, field: str
) -> None:
    async with socket_client(server.make_url(""), query={"tenant": "tenant_a"}) as client:
        await client.expect_established()
        ack = await client.emit("create_event", payload)
    assert ack["ok"] is False and set(ack) == {"ok", "error"}
    assert ack["error"]["code"] == "validation_error"
    assert isinstance(ack["error"]["message"], str)
    assert field in ack["error"]["details"]
    assert await latest_seq(server, "tenant_a") == 0
    assert not [line for line in client.lines if line.get("event") == "event_created"]


@pytest.mark.parametrize(
    ("handshake", "code"),
    [
        ({}, "forbidden_tenant"),  # as the Node original answers a missing tenant
        ({"query": {"tenant": ""}}, "forbidden_tenant"),
        ({"query": {"tenant": "tenant_c"}}, "forbidden_tenant"),
        ({"auth": {"tenant": "TENANT_A"}}, "forbidden_tenant"),
        ({"auth": {"tenant": ["tenant_a"]}}, "forbidden_tenant"),
        ({"auth": {"tenant": "tenant_a", "since": -1}}, "validation_error"),
        ({"auth": {"tenant": "tenant_a", "since": "soon"}}, "validation_error"),
    ],
)
async def test_refused_handshake_gets_connect_error_with_code_and_message(
    server: TestServer, handshake: dict[str, Any], code: str
) -> None:
    async with socket_client(server.make_url(""), **handshake) as client:
        line = await client.expect_type("connect_error")
        assert not client.sio.connected
    assert set(line["data"]) >= {"code", "message"}
    assert line["data"]["code"] == code and line["data"]["message"]
    assert line["message"] == line["data"]["message"]


async def test_since_gets_exactly_the_missed_events_and_recovered(server: TestServer) -> None:
    url = server.make_url("")
    async with socket_client(url, auth={"tenant": "tenant_a"}) as client:
        await client.expect_established()
        seen = [await publish(server, "tenant_a", f"seen {i}") for i in range(2)]
        assert [await client.expect_live_event() for _ in seen] == seen
    missed = [await publish(server, "tenant_a", f"missed {i}") for i in range(3)]
    await publish(server, "tenant_b", "not mine")
    async with socket_client(url, auth={"tenant": "tenant_a", "since": seen[-1]["seq"]}) as client:
        info, initial = await client.expect_established()
        assert (info["recovered"], info["latestSeq"]) == (True, 5)
        assert initial == missed
        live = await publish(server, "tenant_a", "live")
        assert await client.expect_live_event() == live


async def test_since_in_the_query_string_works_too(server: TestServer) -> None:
    events = [await publish(server, "tenant_a", f"m{i}") for i in range(3)]
    query = {"tenant": "tenant_a", "since": "1"}
    async with socket_client(server.make_url(""), query=query) as client:
        info, initial = await client.expect_established()
    assert info["recovered"] is True and initial == events[1:]


async def test_since_equal_to_latest_is_recovered_with_nothing(server: TestServer) -> None:
    await publish(server, "tenant_a", "m")
    async with socket_client(server.make_url(""), auth={"tenant": "tenant_a", "since": 1}) as c:
        info, initial = await c.expect_established()
    assert (info["recovered"], initial) == (True, [])


async def test_since_in_the_future_is_not_recovered(server: TestServer) -> None:
    events = [await publish(server, "tenant_a", f"m{i}") for i in range(2)]
    async with socket_client(server.make_url(""), auth={"tenant": "tenant_a", "since": 99}) as c:
        info, initial = await c.expect_established()
    assert (info["recovered"], info["latestSeq"], initial) == (False, 2, events)


async def test_connections_are_counted_in_stats(server: TestServer) -> None:
    url = server.make_url("")

    async def connections() -> dict[str, int]:
        async with ClientSession() as http, http.get(server.make_url("/api/events/stats")) as r:
            rows = (await r.json())["tenantStats"]
        return {tenant: row["connections"] for tenant, row in rows.items()}

    async with (
        socket_client(url, query={"tenant": "tenant_a"}) as a1,
        socket_client(url, query={"tenant": "tenant_a"}) as a2,
    ):
        await a1.expect_established()
        await a2.expect_established()
        assert await connections() == {"tenant_a": 2, "tenant_b": 0}
        await a2.disconnect()
        await a2.expect_type("disconnect")
        # The server handles the disconnect packet asynchronously; an ack round trip on
        # the other socket, which the server answers in order, is not enough, so poll.
        for _ in range(100):
            if (await connections())["tenant_a"] == 1:
                break
        assert await connections() == {"tenant_a": 1, "tenant_b": 0}


async def test_unexpected_error_is_an_internal_error_ack(aiohttp_server: Any) -> None:
    app = create_app(make_settings())
    app[FEED].store = BrokenAppendStore(10)
    server = await aiohttp_server(app, host="127.0.0.1")
    async with socket_client(server.make_url(""), query={"tenant": "tenant_a"}) as client:
        await client.expect_established()
        ack = await client.emit("create_event", {"message": "hi"})
        assert ack == {
            "ok": False,
            "error": {"code": "internal_error", "message": "Internal server error"},
        }
        assert client.sio.connected


async def test_clients_joining_during_a_burst_see_every_event_once_in_order(
    aiohttp_server: Any,
) -> None:
    """Events published while a client is being caught up are neither lost nor repeated."""
    app = create_app(make_settings(initial_events=5, **SHORT_PINGS))
    feed = app[FEED]
    server = await aiohttp_server(app, host="127.0.0.1")
    total = 120

    async def burst() -> None:
        for i in range(total):
            await feed.publish("tenant_a", {"message": f"m{i}"})
            await asyncio.sleep(0)  # let handshakes interleave with the publishes

    async with contextlib.AsyncExitStack() as stack:
        publisher = asyncio.create_task(burst())
        clients = []
        for transport in ["websocket", "polling", "websocket", "websocket", "polling"]:
            clients.append(
                await stack.enter_async_context(
                    socket_client(
                        server.make_url(""), query={"tenant": "tenant_a"}, transports=[transport]
                    )
                )
            )
        await publisher
        for client in clients:
            info, initial = await client.expect_established()
            seqs = [e["seq"] for e in initial]
            first = seqs[0] if seqs else info["latestSeq"] + 1
            while not seqs or seqs[-1] < total:
                seqs.append((await client.expect_live_event())["seq"])
            assert seqs == list(range(first, total + 1))
