"""A plain WebSocket echo endpoint on feedserver's WebSocket transport, for Autobahn.

`feedserver.engineio.websocket.WebSocketConnection` is plain RFC 6455: aiohttp's C frame
parser (`handover.frame_reader`), pings answered, close frames echoed, a bad frame closed
with the parser's code, frames built by `frames`. Its owner here, `EchoOwner`, sends each
message back as it came (same opcode), where an `EngineSocket` would decode Engine.IO; the
handshake and the transport handover are production's (`handover`). So Autobahn|Testsuite
measures exactly the frame layer feedserver's clients talk to.

What differs from production, on purpose: frames are written at once (an `EngineSocket`
joins a connection's frames and writes them at the end of the loop pass: the same bytes, in
the same order), and messages may be up to `MAX_MESSAGE` (Autobahn's 9.* cases send up to
16 MiB; production refuses more than 1,000,000 bytes).

Test-only: nothing in `feedserver` imports this.
"""

from __future__ import annotations

from aiohttp import web

from feedserver.engineio import frames
from feedserver.engineio.handover import DetachableWebSocketResponse, FrameParsers, take_over
from feedserver.engineio.websocket import WebSocketConnection

ECHO_PATH = "/"
MAX_MESSAGE = 1 << 25  # 32 MiB: Autobahn's largest message is 16 MiB
PARSERS = web.AppKey("parsers", FrameParsers)


class EchoOwner:
    """The owner of one echo connection: every message back, every frame written at once."""

    def websocket_message(self, conn: WebSocketConnection, data: str | bytes) -> None:
        if isinstance(data, str):
            self.write_frame(conn, frames.text_frame(data))
        else:
            self.write_frame(conn, frames.websocket_frame(data, frames.BINARY))

    def write_frame(self, conn: WebSocketConnection, frame: bytes, *, last: bool = False) -> None:
        if conn.transport is not None and not conn.transport.is_closing():
            conn.transport.write(frame)

    def websocket_lost(self, conn: WebSocketConnection) -> None:
        """Nothing to release."""


async def _echo(request: web.Request) -> web.StreamResponse:
    response = DetachableWebSocketResponse(max_msg_size=MAX_MESSAGE, compress=False)
    await response.prepare(request)
    if request.transport is None:  # the client left during the handshake
        return response
    conn = WebSocketConnection(EchoOwner(), request.app[PARSERS], MAX_MESSAGE)
    transport, head, tail = take_over(request, response, conn)
    conn.transport = transport
    transport.write(head)
    if tail:
        conn.data_received(tail)
    return response


def echo_app() -> web.Application:
    app = web.Application()
    app.router.add_get(ECHO_PATH, _echo)

    async def make_parsers(app: web.Application) -> None:
        app[PARSERS] = FrameParsers()  # in the running loop

    app.on_startup.append(make_parsers)
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


ECHO_ENDPOINTS = {"engineio": echo_app, "aiohttp": aiohttp_echo_app}
