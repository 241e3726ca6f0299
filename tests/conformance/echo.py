"""A plain WebSocket echo endpoint on feedserver's WebSocket frame layer, for Autobahn.

feedserver has no plain-WebSocket layer of its own yet: `eio_websocket.EngineWebSocket`
reads frames with aiohttp's C parser (`WebSocketReader` feeding `_Messages`), answers
pings, echoes close frames, closes with the parser's code on a bad frame, and writes frames
itself (`websocket_frame`). `EchoWebSocket` is that class, with the Engine.IO packet
handling replaced by an echo of each message (same opcode), so Autobahn|Testsuite measures
exactly its frame-level behaviour. The handshake is aiohttp's (`DetachableWebSocketResponse`),
and the TCP transport is handed over as `eio_websocket.detach` does it.

What differs from production, on purpose: frames are written at once (production joins a
socket's frames in `fanout.RoomBroadcaster` and writes them at the end of the loop pass:
the same bytes, in the same order), and messages may be up to `MAX_MESSAGE` (Autobahn's
9.* cases send up to 16 MiB; production refuses more than 1,000,000 bytes).

Test-only: nothing in `feedserver` imports this.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from aiohttp import web

from feedserver.eio_websocket import DetachableWebSocketResponse, EngineWebSocket, websocket_frame

ECHO_PATH = "/"
MAX_MESSAGE = 1 << 25  # 32 MiB: Autobahn's largest message is 16 MiB
_TEXT, _BINARY = 0x1, 0x2


class EchoWebSocket(EngineWebSocket):
    """`EngineWebSocket` whose every text or binary message is sent back as it came."""

    def __init__(self, transport: asyncio.Transport) -> None:
        # What EngineWebSocket reads of an Engine.IO socket: its size limit, and that it is
        # a new connection (no upgrade probe to wait for).
        socket = SimpleNamespace(
            server=SimpleNamespace(max_http_buffer_size=MAX_MESSAGE), connected=False
        )
        super().__init__(
            socket,  # EngineWebSocket reads only the two attributes above
            transport,
            write_soon=transport.write,
            write_now=transport.write,
            on_lost=lambda: None,
        )

    def _engineio_packet(self, data: str | bytes) -> None:
        if isinstance(data, str):
            self._write_soon(websocket_frame(data.encode(), _TEXT))
        else:
            self._write_soon(websocket_frame(data, _BINARY))

    def connection_lost(self, exc: BaseException | None) -> None:
        self._closed = True  # no Engine.IO socket to close


async def _echo(request: web.Request) -> web.StreamResponse:
    response = DetachableWebSocketResponse(max_msg_size=MAX_MESSAGE, compress=False)
    await response.prepare(request)
    response.headers.clear()
    transport = request.transport
    if transport is None:  # the client left during the handshake
        return response
    _hand_over(request, response, EchoWebSocket(transport))
    return response


def _hand_over(
    request: web.Request, response: DetachableWebSocketResponse, connection: EchoWebSocket
) -> None:
    """The transport handover of `eio_websocket.detach`, without its Engine.IO socket."""
    handler: Any = request.protocol
    transport = connection.transport
    writer: Any = response._payload_writer
    if writer._headers_buf and not writer._headers_written:  # the 101
        transport.write(writer._headers_buf)
        writer._headers_buf = None
        writer._headers_written = True
    tail, handler._message_tail = handler._message_tail, b""
    transport.set_protocol(connection)
    transport.resume_reading()
    handler.transport = None
    handler.connection_lost(None)
    response._eof_sent = True
    if tail:
        connection.data_received(tail)


def echo_app() -> web.Application:
    app = web.Application()
    app.router.add_get(ECHO_PATH, _echo)
    return app


async def _aiohttp_echo(request: web.Request) -> web.StreamResponse:
    """For comparison: the same echo on aiohttp's own `WebSocketResponse`."""
    response = web.WebSocketResponse(max_msg_size=MAX_MESSAGE, compress=False)
    await response.prepare(request)
    async for msg in response:
        if msg.type == web.WSMsgType.TEXT:
            await response.send_str(msg.data)
        elif msg.type == web.WSMsgType.BINARY:
            await response.send_bytes(msg.data)
    return response


def aiohttp_echo_app() -> web.Application:
    app = web.Application()
    app.router.add_get(ECHO_PATH, _aiohttp_echo)
    return app


ECHO_ENDPOINTS = {"eio_websocket": echo_app, "aiohttp": aiohttp_echo_app}
