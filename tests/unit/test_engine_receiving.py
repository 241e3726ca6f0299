"""How an `EngineSocket` hands a client's packets to the message handler: in order, one at
a time; with the server's `eager_packets`, in the callback that read them until the
handler first waits. A real `EngineServer`, no connection (the socket is on polling)."""

from __future__ import annotations

import asyncio

import pytest

from feedserver.engineio import EngineServer, EngineSocket
from feedserver.engineio.packets import MESSAGE, Packet


def socket_of(server: EngineServer) -> EngineSocket:
    sock = EngineSocket(server, "sid")
    server.sockets[sock.sid] = sock
    return sock


async def test_an_eager_packet_is_handled_before_received_returns() -> None:
    server = EngineServer(eager_packets=True)
    handled: list[str] = []

    async def on_message(sid: str, data: str) -> None:
        handled.append(data)

    server.on("message", on_message)
    socket_of(server).received(Packet(MESSAGE, "40"))
    assert handled == ["40"]


async def test_without_eager_packets_the_handler_runs_in_a_task() -> None:
    server = EngineServer()
    handled = asyncio.Event()

    async def on_message(sid: str, data: str) -> None:
        handled.set()

    server.on("message", on_message)
    socket_of(server).received(Packet(MESSAGE, "40"))
    assert not handled.is_set()
    await asyncio.wait_for(handled.wait(), 5)


@pytest.mark.parametrize("eager", [True, False])
async def test_packets_that_come_while_the_handler_waits_follow_in_order(eager: bool) -> None:
    server = EngineServer(eager_packets=eager)
    go = asyncio.Event()
    handled: list[str] = []
    disconnected = asyncio.Event()

    async def on_message(sid: str, data: str) -> None:
        handled.append(f"{data} in")
        if data == "first":
            await go.wait()
        handled.append(f"{data} out")

    async def on_disconnect(sid: str, reason: str) -> None:
        handled.append("disconnect")
        disconnected.set()

    server.on("message", on_message)
    server.on("disconnect", on_disconnect)
    sock = socket_of(server)
    sock.received(Packet(MESSAGE, "first"))
    sock.received(Packet(MESSAGE, "second"))
    sock.close()
    assert handled == (["first in"] if eager else [])
    go.set()
    await asyncio.wait_for(disconnected.wait(), 5)
    assert handled == ["first in", "first out", "second in", "second out", "disconnect"]


async def test_a_connection_that_ends_while_idle_is_disconnected_in_a_task() -> None:
    """Not in the call that ended it: that may be a broadcast or a flush."""
    server = EngineServer(eager_packets=True)
    disconnected = asyncio.Event()

    async def on_disconnect(sid: str, reason: str) -> None:
        disconnected.set()

    server.on("disconnect", on_disconnect)
    socket_of(server).close()
    assert not disconnected.is_set()
    await asyncio.wait_for(disconnected.wait(), 5)
