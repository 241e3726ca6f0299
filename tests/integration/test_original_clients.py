"""Clients written for the Node original, unchanged: what they send and receive is what the
original answers (the packet limit, and events without the recovery offset on request)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import socketio
from aiohttp.test_utils import TestServer

from tests.js_client import js_client
from tests.rest_calls import publish

RECEIVE_TIMEOUT = 5.0


@pytest.mark.node
@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_a_100_kb_create_event_is_answered_not_disconnected(
    server: TestServer, transport: str
) -> None:
    url = server.make_url("")
    async with js_client(url, auth={"tenant": "tenant_a"}, transports=[transport]) as client:
        await client.expect_established()
        ack = await client.emit("create_event", {"message": "x" * 100_000})
        assert ack["ok"] is False and ack["error"]["code"] == "payload_too_large"
        ack = await client.emit("create_event", {"message": "x" * 501})
        assert ack["error"]["code"] == "validation_error"  # the message rules decide the rest
        ack = await client.emit("create_event", {"message": "still connected"})
        assert ack["ok"] is True
        assert not [line for line in client.lines if line["type"] == "disconnect"]


async def test_one_argument_python_handlers_get_events_with_offsets_false(
    server: TestServer,
) -> None:
    """A python-socketio client written for the original: its handlers take one argument."""
    received: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    client = socketio.AsyncClient(reconnection=False)

    def initial_events(events: Any) -> None:
        received.put_nowait(("initial_events", events))

    def event_created(event: Any) -> None:
        received.put_nowait(("event_created", event))

    client.on("initial_events", initial_events)
    client.on("event_created", event_created)

    earlier = await publish(server, "tenant_a", "before the connect")
    url = f"{server.make_url('')}?tenant=tenant_a&offsets=false"
    await client.connect(url, transports=["websocket"], wait_timeout=RECEIVE_TIMEOUT)
    try:
        assert await asyncio.wait_for(received.get(), RECEIVE_TIMEOUT) == (
            "initial_events",
            [earlier],
        )
        live = await publish(server, "tenant_a", "live")
        assert await asyncio.wait_for(received.get(), RECEIVE_TIMEOUT) == ("event_created", live)
    finally:
        await client.disconnect()


@pytest.mark.node
async def test_offsets_false_is_per_connection(server: TestServer) -> None:
    """A JS client next to an opted-out one keeps its offsets (native recovery needs them)."""
    url = server.make_url("")
    async with (
        js_client(url, auth={"tenant": "tenant_a"}) as tracking,
        js_client(url, auth={"tenant": "tenant_a", "offsets": False}) as plain,
    ):
        for client in (tracking, plain):
            await client.expect_established()
        event = await publish(server, "tenant_a", "to both")
        with_offset = await tracking.expect_event("event_created")
        without = await plain.expect_event("event_created")
    assert with_offset == [event, str(event["seq"])]
    assert without == [event]
