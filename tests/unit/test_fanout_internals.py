"""The python-socketio / engineio / aiohttp internals feedserver.fanout relies on.

If one of these fails after a dependency upgrade, read feedserver/fanout.py before changing
anything: the fast path's ordering guarantees rest on exactly these details.
"""

from __future__ import annotations

import asyncio
from typing import Any

import engineio
import pytest
import socketio
from aiohttp._websocket.writer import WebSocketWriter
from engineio import packet as eio_packet
from engineio.async_drivers import aiohttp as eio_aiohttp

from feedserver.eio_websocket import websocket_frame
from feedserver.fanout import (
    RoomBroadcaster,
    check_internals,
    encode_event_text,
)
from feedserver.internals import InternalsChanged
from feedserver.jsoncodec import SocketJson


def aiohttp_server() -> socketio.AsyncServer:
    return socketio.AsyncServer(async_mode="aiohttp")


def test_the_installed_versions_have_every_internal_we_use() -> None:
    check_internals(aiohttp_server())


def test_a_server_in_another_async_mode_is_refused_loudly() -> None:
    with pytest.raises(InternalsChanged, match="aiohttp"):
        RoomBroadcaster(socketio.AsyncServer(async_mode="asgi"))


def test_a_server_with_another_packet_serializer_is_refused_loudly() -> None:
    with pytest.raises(InternalsChanged, match=r"text Socket\.IO packets"):
        RoomBroadcaster(socketio.AsyncServer(async_mode="aiohttp", serializer="msgpack"))


def test_engineio_socket_has_the_state_flags_we_read() -> None:
    eio = engineio.AsyncServer(async_mode="aiohttp")
    sock = engineio.async_socket.AsyncSocket(eio, "sid1")
    assert isinstance(sock.queue, asyncio.Queue)
    assert (sock.sid, sock.upgraded, sock.upgrading, sock.closing, sock.closed) == (
        "sid1",
        False,
        False,
        False,
        False,
    )
    assert callable(sock._websocket_handler)


async def test_a_waiting_queue_getter_is_visible_and_gone_once_woken() -> None:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    getter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)  # let get() park itself; no event exists to await for this
    assert len(queue._getters) == 1 and not queue._getters[0].done()  # type: ignore[attr-defined]
    queue.put_nowait("pkt")
    assert not queue._getters  # type: ignore[attr-defined]
    assert list(queue._queue) == ["pkt"]  # type: ignore[attr-defined]
    assert await getter == "pkt"


def test_engineio_packet_encode_returns_the_cache() -> None:
    pkt = eio_packet.Packet(eio_packet.MESSAGE, data="2[]")
    pkt.encode_cache = "42[1]"
    assert pkt.encode() == "42[1]" and pkt.encode(b64=True) == "42[1]"


def test_the_broadcaster_wraps_socketio_sends_and_copies_the_driver_table() -> None:
    sio = aiohttp_server()
    shared_table = eio_aiohttp._async
    RoomBroadcaster(sio)
    assert sio._send_eio_packet.__name__ == "counted_send"
    assert sio._send_packet.__name__ == "counted_send"
    assert sio.eio._async is not shared_table
    assert shared_table["websocket"] is eio_aiohttp.WebSocket
    assert issubclass(sio.eio._async["websocket"], eio_aiohttp.WebSocket)


@pytest.mark.parametrize("json_module", [None, SocketJson])
@pytest.mark.parametrize("offset", [None, "42"])
def test_event_text_matches_what_socketio_encodes(json_module: Any, offset: str | None) -> None:
    saved = socketio.packet.Packet.json
    if json_module is not None:
        socketio.packet.Packet.json = json_module
    try:
        data = {"seq": 42, "message": "héllo &lt;b&gt;", "tenantId": "t"}
        args = [data] if offset is None else [data, offset]
        expected = socketio.packet.Packet(
            socketio.packet.EVENT, data=["event_created", *args]
        ).encode()
        data_json = socketio.packet.Packet.json.dumps(data, separators=(",", ":"))
        assert encode_event_text("event_created", data_json, offset) == expected
    finally:
        socketio.packet.Packet.json = saved


class _RecordingTransport:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += bytes(data)

    def is_closing(self) -> bool:
        return False


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
async def test_frames_match_aiohttps_server_frames(size: int) -> None:
    transport = _RecordingTransport()
    writer = WebSocketWriter(None, transport, use_mask=False, compress=0)  # type: ignore[arg-type]
    writer._output_size = -(1 << 30)  # never reach the drain path (no protocol here)
    payload = b"4" + b"x" * size
    await writer.send_frame(payload, 1)
    assert websocket_frame(payload) == transport.data
