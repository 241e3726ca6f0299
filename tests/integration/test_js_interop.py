"""The real socket.io JavaScript client (socket.io-client@4) against a real feedserver."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from feedserver.app import FEED, create_app
from tests.conftest import make_settings
from tests.js_client import js_client
from tests.rest_calls import latest_seq, publish

pytestmark = pytest.mark.node


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_query_handshake_gets_established_then_initial_events(
    server: TestServer, transport: str
) -> None:
    first = await publish(server, "tenant_a", "before you came")
    url = server.make_url("")
    async with js_client(url, query={"tenant": "tenant_a"}, transports=[transport]) as client:
        info, initial = await client.expect_established()
    assert info["tenantId"] == "tenant_a"
    assert info["latestSeq"] == 1
    assert info["recovered"] is False
    assert initial == [first]
    assert client.lines[0]["transport"] == transport


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_auth_handshake_selects_the_tenant(server: TestServer, transport: str) -> None:
    url = server.make_url("")
    async with js_client(url, auth={"tenant": "tenant_b"}, transports=[transport]) as client:
        info, initial = await client.expect_established()
    assert info["tenantId"] == "tenant_b"
    assert initial == []


async def test_default_transport_upgrades_and_still_receives_events(server: TestServer) -> None:
    async with js_client(server.make_url(""), query={"tenant": "tenant_a"}) as client:
        await client.expect_established()
        event = await publish(server, "tenant_a", "after upgrade")
        assert await client.expect_live_event() == event


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_event_reaches_every_client_of_the_tenant_and_none_of_another(
    server: TestServer, transport: str
) -> None:
    url = server.make_url("")
    async with (
        js_client(url, query={"tenant": "tenant_a"}, transports=[transport]) as a1,
        js_client(url, auth={"tenant": "tenant_a"}, transports=[transport]) as a2,
        js_client(url, query={"tenant": "tenant_b"}, transports=[transport]) as b,
    ):
        for client in (a1, a2, b):
            await client.expect_established()
        event_a = await publish(server, "tenant_a", "only for a")
        assert await a1.expect_live_event() == event_a
        assert await a2.expect_live_event() == event_a
        # b's connection is ordered: had it been sent event_a, it would come before event_b.
        event_b = await publish(server, "tenant_b", "only for b")
        assert await b.expect_live_event() == event_b
        assert not [line for line in b.unread() if line.get("event") == "event_created"]


async def test_create_event_ack_ok_and_broadcast(server: TestServer) -> None:
    url = server.make_url("")
    async with (
        js_client(url, query={"tenant": "tenant_a"}) as sender,
        js_client(url, query={"tenant": "tenant_a"}, transports=["polling"]) as listener,
    ):
        await sender.expect_established()
        await listener.expect_established()
        ack = await sender.emit("create_event", {"message": "from <js>"})
        assert ack["ok"] is True
        event = ack["event"]
        assert event["message"] == "from &lt;js&gt;"
        assert event["tenantId"] == "tenant_a" and event["seq"] == 1
        assert await listener.expect_live_event() == event
        assert await sender.expect_live_event() == event


@pytest.mark.parametrize(
    ("payload", "field"),
    [({"message": "   "}, "message"), ({"message": "x", "extra": 1}, "extra"), ("text", "body")],
)
async def test_create_event_ack_error_stores_nothing(
    server: TestServer, payload: Any, field: str
) -> None:
    async with js_client(server.make_url(""), query={"tenant": "tenant_a"}) as client:
        info, _ = await client.expect_established()
        ack = await client.emit("create_event", payload)
    assert ack["ok"] is False
    assert ack["error"]["code"] == "validation_error"
    assert field in ack["error"]["details"]
    assert info["latestSeq"] == 0
    assert await latest_seq(server, "tenant_a") == 0


@pytest.mark.parametrize(
    ("handshake", "code"),
    [
        ({}, "forbidden_tenant"),  # as the Node original answers a missing tenant
        ({"query": {"tenant": "tenant_zz"}}, "forbidden_tenant"),
        ({"auth": {"tenant": "Bad Tenant!"}}, "forbidden_tenant"),
    ],
)
async def test_refused_handshake_gets_connect_error_data(
    server: TestServer, handshake: dict[str, Any], code: str
) -> None:
    async with js_client(server.make_url(""), **handshake) as client:
        line = await client.expect_type("connect_error")
    assert line["data"]["code"] == code
    assert isinstance(line["data"]["message"], str) and line["data"]["message"]
    assert not [seen for seen in client.lines if seen["type"] in ("connect", "event")]


async def test_reconnect_with_since_receives_exactly_the_missed_events(
    server: TestServer,
) -> None:
    # A new Socket, as a reloaded page that kept its last seq: the native pid/offset
    # recovery of a reused Socket is a different path (tests of the delivery guarantees).
    url = server.make_url("")
    async with js_client(url, auth={"tenant": "tenant_a"}) as client:
        await client.expect_established()
        seen = [await publish(server, "tenant_a", f"seen {i}") for i in range(3)]
        for event in seen:
            assert await client.expect_live_event() == event
    missed = [await publish(server, "tenant_a", f"missed {i}") for i in range(4)]
    since = {"tenant": "tenant_a", "since": seen[-1]["seq"]}
    async with js_client(url, auth=since, transports=["websocket"]) as client:
        info, initial = await client.expect_established()
        assert info["recovered"] is True
        assert info["latestSeq"] == missed[-1]["seq"]
        assert initial == missed
        live = await publish(server, "tenant_a", "live again")
        assert await client.expect_live_event() == live


async def test_reconnect_of_the_same_socket_with_since_in_auth(server: TestServer) -> None:
    url = server.make_url("")
    async with js_client(url, auth={"tenant": "tenant_a"}) as client:
        await client.expect_established()
        seen = await publish(server, "tenant_a", "seen")
        assert await client.expect_live_event() == seen
        await client.disconnect()
        await client.expect_type("disconnect")
        missed = [await publish(server, "tenant_a", f"missed {i}") for i in range(2)]
        await client.connect(auth={"tenant": "tenant_a", "since": seen["seq"]})
        await client.expect_type("connect")
        replayed: list[dict[str, Any]] = []
        # Either path may answer: `initial_events` with the gap, or native recovery's
        # `event_created` replay; each missed event arrives exactly once, in order.
        while len(replayed) < len(missed):
            line = await client.expect(
                lambda line: line.get("event") in ("initial_events", "event_created")
            )
            args = line["args"][0]
            replayed += args if line["event"] == "initial_events" else [args]
        assert replayed == missed


async def test_js_clients_joining_while_events_flow_see_each_once_in_order(
    aiohttp_server: Any,
) -> None:
    app = create_app(make_settings(initial_events=3))
    feed = app[FEED]
    server = await aiohttp_server(app, host="127.0.0.1")
    everyone_in = asyncio.Event()
    published: list[int] = []

    async def keep_publishing() -> None:
        # Until every client is established, and a few more after, so that some events
        # arrive while each one is being caught up.
        while not everyone_in.is_set() or len(published) % 10:
            published.append((await feed.publish("tenant_a", {"message": "tick"})).event.seq)
            await asyncio.sleep(0.002)

    url = server.make_url("")
    publisher = asyncio.create_task(keep_publishing())
    async with (
        js_client(url, query={"tenant": "tenant_a"}, transports=["websocket"]) as a,
        js_client(url, query={"tenant": "tenant_a"}, transports=["polling"]) as b,
        js_client(url, auth={"tenant": "tenant_a"}) as c,
    ):
        starts = [await client.expect_established() for client in (a, b, c)]
        everyone_in.set()
        await publisher
        for client, (info, initial) in zip((a, b, c), starts, strict=True):
            seqs = [e["seq"] for e in initial]
            first = seqs[0] if seqs else info["latestSeq"] + 1
            while not seqs or seqs[-1] < published[-1]:
                seqs.append((await client.expect_live_event())["seq"])
            assert seqs == list(range(first, published[-1] + 1))
