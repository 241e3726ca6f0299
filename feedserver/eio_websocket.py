"""Engine.IO WebSocket connections served by a small protocol object once the handshake is done.

aiohttp keeps a WebSocket inside the request that opened it: its request handler, the
request, the handler task with the frames of every middleware, and a WebSocketResponse
with its reader and writer stay alive for the connection's lifetime; engineio adds a
writer task, a `wait_for` task per received message and a queue. For 10,000 idle clients
that was about 29 KB and 1.2 ms of server CPU per connection (docs/benchmarks.md,
"10k connections"), twice the Node original.

`detach()` runs after aiohttp and engineio have done the handshake (middlewares, CORS,
the 101): it hands the TCP transport to an `EngineWebSocket`, lets aiohttp's request end
and forget the connection, and replaces the Engine.IO socket's packet queue by a
`DirectQueue`, whose packets are written in order at the end of the loop pass instead of
waking a writer task. What stays per connection is the transport, this protocol, aiohttp's
C frame parser and the Engine.IO / Socket.IO socket state: no task while it is idle.

It behaves as engineio's `AsyncSocket._websocket_handler` does. An upgrade from
long-polling first does the probe exchange (PING "probe" -> PONG "probe" and a NOOP that
ends the pending poll; then UPGRADE), its sends waiting in the long-polling queue until
then; a new connection starts at once. Then every text or binary message goes to
`AsyncSocket.receive` in order (PONGs directly: engineio only reschedules the ping for
them), messages over `max_http_buffer_size` end the connection, the socket is closed with
TRANSPORT_CLOSE when the connection ends. Differences, on purpose:
- a client that does not answer a ping within `ping_timeout` has its connection aborted
  (engineio's handler waited `ping_interval + ping_timeout` for any message instead);
- after an Engine.IO CLOSE packet, or the `None` that ends engineio's writer, the server
  sends a WebSocket close frame and closes (engineio's writer left that to the client);
- WebSocket pings are answered with pongs and a client's close frame is echoed, as
  aiohttp's `receive()` does.

Every aiohttp / engineio detail used here is in `REQUIRED_INTERNALS`, checked by
`check_internals()` at startup and in tests/unit/test_eio_websocket_internals.py.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import inspect
import logging
import struct
from collections.abc import Callable
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader
from aiohttp.http_writer import StreamWriter
from aiohttp.web_protocol import RequestHandler
from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet
from engineio.async_socket import AsyncSocket

from .internals import InternalsChanged

log = logging.getLogger(__name__)

_PACK_LEN1 = struct.Struct("!BB").pack
_PACK_LEN2 = struct.Struct("!BBH").pack
_PACK_LEN3 = struct.Struct("!BBQ").pack
_PACK_CODE = struct.Struct("!H").pack
_FIN = 0x80
_TEXT, _BINARY, _CLOSE, _PONG = 0x1, 0x2, 0x8, 0xA

Write = Callable[[bytes], None]


def websocket_frame(payload: bytes, opcode: int = _TEXT) -> bytes:
    """An unmasked, uncompressed, final WebSocket frame (RFC 6455 5.2); text by default."""
    first = _FIN | opcode
    length = len(payload)
    if length < 126:
        header = _PACK_LEN1(first, length)
    elif length < 65536:
        header = _PACK_LEN2(first, 126, length)
    else:
        header = _PACK_LEN3(first, 127, length)
    return header + payload


def packet_frame(pkt: Any) -> bytes:
    """The WebSocket frame of an Engine.IO packet: text, or binary for binary data."""
    data = pkt.encode()
    if isinstance(data, str):
        return websocket_frame(data.encode())
    return websocket_frame(data, _BINARY)


class DirectQueue:
    """An Engine.IO socket's packet queue once its WebSocket is detached: what is put is
    written by the connection (after the frames already pending for it), not held for a
    writer task. `None`, engineio's end-of-connection sentinel, closes the WebSocket.
    Only the calls engineio, `fanout` and `recovery` make on a socket's queue exist."""

    __slots__ = ("connection",)

    def __init__(self, connection: EngineWebSocket) -> None:
        self.connection = connection

    async def put(self, pkt: Any) -> None:
        self.put_nowait(pkt)

    def put_nowait(self, pkt: Any) -> None:
        self.connection.send_packet(pkt)

    def qsize(self) -> int:
        return 0

    def empty(self) -> bool:
        return True

    async def join(self) -> None:
        """Nothing is ever waiting here to be written by someone else."""


def close_reply(code: object) -> int:
    """The code a server answers a client's close frame with: the client's own, echoed,
    1000 when it gave none, and 1002 for one that may not be sent in a close frame (RFC 6455
    7.4: 1004-1006 and 1015 are reserved, below 1000 and 1016-2999 unassigned)."""
    if not isinstance(code, int) or not code:
        return WSCloseCode.OK
    if 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999:
        return code
    return WSCloseCode.PROTOCOL_ERROR


class MaskCheck:
    """Follows the frame boundaries of a client's byte stream to see that every frame is
    masked (RFC 6455 5.1); aiohttp's parser, written for both sides, accepts either.
    A header split across two reads is kept until the rest arrives."""

    __slots__ = ("_head", "_skip")

    def __init__(self) -> None:
        self._head = b""  # the start of a header that the last read cut
        self._skip = 0  # bytes of the current frame's payload still to come

    def all_masked(self, data: bytes) -> bool:
        buf = self._head + data if self._head else data
        self._head = b""
        pos, end = self._skip, len(buf)
        while pos < end:
            if end - pos < 2:
                self._head = buf[pos:]
                break
            second = buf[pos + 1]
            if not second & 0x80:
                return False
            length = second & 0x7F
            size = 2 if length < 126 else 4 if length == 126 else 10
            if end - pos < size + 4:  # the mask key is part of the header
                self._head = buf[pos:]
                break
            if size > 2:
                length = int.from_bytes(buf[pos + 2 : pos + size], "big")
            pos += size + 4 + length
        self._skip = max(pos - end, 0)
        return True


class _Messages(WebSocketDataQueue):
    """Where aiohttp's frame parser puts each message: straight to the connection, in the
    same call (the parser's `feed_data` is a cpdef method: Python overrides are honoured)."""

    __slots__ = ("_connection",)

    def __init__(self, connection: EngineWebSocket, loop: asyncio.AbstractEventLoop) -> None:
        # The protocol is only read for pausing, which feed_data (replaced) would do.
        super().__init__(connection, 1 << 30, loop=loop)  # type: ignore[arg-type]
        self._connection = connection

    def feed_data(self, data: Any, size: int) -> None:
        self._connection.message(data)

    def feed_eof(self) -> None:
        """The transport's end is seen by the connection itself."""

    def set_exception(self, exc: BaseException, exc_cause: BaseException | None = None) -> None:
        self._connection.parse_failed(exc)


class EngineWebSocket(asyncio.Protocol):
    """One detached Engine.IO WebSocket connection (see the module docstring)."""

    # `_reading_paused`: aiohttp's data queue reads it; this one never pauses reading.
    _reading_paused = False

    def __init__(
        self,
        sock: AsyncSocket,
        transport: asyncio.Transport,
        *,
        write_soon: Write,
        write_now: Write,
        on_lost: Callable[[], None],
    ) -> None:
        self.sock = sock
        self.transport = transport
        self._write_soon = write_soon
        self._write_now = write_now
        self._on_lost = on_lost
        loop = asyncio.get_running_loop()
        self._reader = WebSocketReader(
            _Messages(self, loop), sock.server.max_http_buffer_size, False, True
        )
        self._masks = MaskCheck()
        self._inbox: collections.deque[Any] | None = None  # packets for the receiver task
        self._receiver: asyncio.Task[None] | None = None
        self._handling: asyncio.Task[None] | None = None  # the receiver, inside receive()
        self._closed = False  # our close frame is written
        self._timed_out = False
        # An upgrade from long-polling: the probe is awaited, then the UPGRADE packet; the
        # socket keeps its long-polling queue until then.
        self._awaiting: int | None = eio_packet.PING if sock.connected else None

    # -- asyncio.Protocol -----------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if not self._masks.all_masked(data):  # RFC 6455 5.1: the server must close
            self.close(WSCloseCode.PROTOCOL_ERROR)
            return
        self._reader.feed_data(data)

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: BaseException | None) -> None:
        self._closed = True
        self._on_lost()
        if self._awaiting is not None:  # an upgrade that did not happen: it keeps polling
            self.sock.upgrading = False
            return
        # A packet still being handled (socketio runs a CONNECT's handler inside it) is
        # cancelled, as aiohttp cancels a request whose client left (handler_cancellation);
        # then the Engine.IO socket is closed, after the packets received before.
        if self._handling is not None:
            self._handling.cancel()
        self._enqueue(None)

    def pause_writing(self) -> None:
        """Slow readers are found by their write buffer size (`fanout`), not paused for."""

    def resume_writing(self) -> None:
        pass

    # -- incoming -------------------------------------------------------------------------

    def message(self, msg: Any) -> None:
        """One WebSocket message from aiohttp's parser."""
        if self._closed:
            return
        kind = msg[0]
        if kind == WSMsgType.TEXT or kind == WSMsgType.BINARY:
            self._engineio_packet(msg[1])
        elif kind == WSMsgType.PING:
            self._write_soon(websocket_frame(msg[1], _PONG))
        elif kind == WSMsgType.CLOSE:
            self.close(close_reply(msg[1]))

    def parse_failed(self, exc: BaseException) -> None:
        """A malformed or oversized frame: close with its code, as aiohttp would."""
        self.close(getattr(exc, "code", WSCloseCode.PROTOCOL_ERROR))

    def _engineio_packet(self, data: str | bytes) -> None:
        try:
            pkt = eio_packet.Packet(encoded_packet=data)
        except Exception:  # not an Engine.IO packet: engineio's handler ends the connection too
            self.close(WSCloseCode.PROTOCOL_ERROR)
            return
        if not 0 <= pkt.packet_type < len(eio_packet.packet_names):  # an unknown type ("9")
            self.close(WSCloseCode.PROTOCOL_ERROR)
            return
        if self._awaiting is not None:
            self._upgrade_step(pkt)
            return
        if pkt.packet_type == eio_packet.PONG and self._receiver is None:
            self.sock.schedule_ping()  # all that AsyncSocket.receive does for a PONG
            return
        self._enqueue(pkt)

    def _upgrade_step(self, pkt: Any) -> None:
        """The probe exchange of an upgrade from long-polling, as engineio's handler does it:
        PING "probe" is answered with PONG "probe" and a NOOP that ends the pending poll;
        UPGRADE then moves the socket here, with what its long-polling queue still holds."""
        sock = self.sock
        if self._awaiting == eio_packet.PING:
            if pkt.packet_type != eio_packet.PING or pkt.data != "probe":
                self.close(WSCloseCode.OK)  # connection_lost: the socket keeps polling
                return
            self._write_soon(packet_frame(eio_packet.Packet(eio_packet.PONG, data="probe")))
            sock.queue.put_nowait(eio_packet.Packet(eio_packet.NOOP))
            self._awaiting = eio_packet.UPGRADE
            return
        if pkt.packet_type != eio_packet.UPGRADE:
            sock.upgraded = False
            self.close(WSCloseCode.OK)
            return
        self._awaiting = None
        queued = sock.queue
        sock.queue = DirectQueue(self)
        sock.upgraded = True
        sock.upgrading = False
        while not queued.empty():  # in order, after the probe's PONG
            pending = queued.get_nowait()
            queued.task_done()
            self.send_packet(pending)

    def _enqueue(self, pkt: Any) -> None:
        """Have `pkt` received after those before it (None: the connection has ended)."""
        if self._inbox is None:
            self._inbox = collections.deque()
        self._inbox.append(pkt)
        if self._receiver is None:
            self._receiver = asyncio.ensure_future(self._receive())

    async def _receive(self) -> None:
        """`AsyncSocket.receive` for each packet in turn, as engineio's handler awaits them
        (socketio handles a CONNECT inside it), then the close once the connection ends."""
        inbox = self._inbox
        assert inbox is not None
        sock = self.sock
        try:
            while inbox:
                pkt = inbox.popleft()
                if pkt is None:
                    await self._close_socket()
                    return
                self._handling = self._receiver
                try:
                    await sock.receive(pkt)
                    if sock.closed:  # the client's CLOSE (engineio closes with abort=True,
                        self.close(WSCloseCode.OK)  # which leaves the WebSocket to us)
                except asyncio.CancelledError:  # the connection is lost: only the close is left
                    inbox.clear()
                    inbox.append(None)
                except eio_exceptions.UnknownPacketError:
                    pass
                except eio_exceptions.SocketIsClosedError:
                    self.close(WSCloseCode.OK)
                except Exception:  # as engineio: log it, and the connection carries on
                    log.exception("Engine.IO receive error on %s", sock.sid)
                finally:
                    self._handling = None
        finally:
            self._receiver = None
            self._inbox = None  # an idle connection keeps no deque (760 bytes)

    # -- outgoing -------------------------------------------------------------------------

    def send_packet(self, pkt: Any) -> None:
        """`DirectQueue.put`: write `pkt` after what is pending; `None` or CLOSE end it."""
        if pkt is None:
            self.close(WSCloseCode.OK)
        elif pkt.packet_type == eio_packet.CLOSE:
            if not self._closed:
                self._write_now(packet_frame(pkt))
            self.close(WSCloseCode.OK)
        else:
            self._write_soon(packet_frame(pkt))

    def close(self, code: int) -> None:
        """Write what is pending and a close frame with `code`, then close the transport
        (which sends what is buffered first)."""
        if self._closed:
            return
        self._closed = True
        self._write_now(websocket_frame(_PACK_CODE(code), _CLOSE))
        self.transport.close()

    async def _close_socket(self) -> None:
        sock = self.sock
        server = sock.server
        try:
            reason = server.reason.TRANSPORT_CLOSE
            if self._timed_out:
                reason = server.reason.PING_TIMEOUT
            await sock.close(wait=False, abort=True, reason=reason)
        finally:
            server.sockets.pop(sock.sid, None)

    def ping_timed_out(self) -> None:
        """The client did not answer a ping in time: drop the connection."""
        self._timed_out = True
        self._closed = True
        self.transport.abort()


class DetachableWebSocketResponse(web.WebSocketResponse):
    """aiohttp's WebSocket response, whose 101 is left in its writer by `prepare()`:
    `detach` writes it together with the Engine.IO OPEN packet, in one send(). It installs
    no frame parser of its own (`detach` does), so no data can reach aiohttp's."""

    _send_headers_immediately = False

    def _post_start(self, request: web.BaseRequest, protocol: str | None, writer: Any) -> None:
        self._ws_protocol = protocol
        self._writer = writer


def detach(
    request: web.Request,
    response: DetachableWebSocketResponse,
    sock: AsyncSocket,
    environ: dict[str, Any],
    *,
    write_soon: Write,
    write_now: Write,
    on_lost: Callable[[], None],
) -> EngineWebSocket:
    """Move the just-prepared WebSocket `response` of Engine.IO socket `sock` (a new
    connection, or an upgrade from long-polling) from aiohttp to an `EngineWebSocket`.
    Return `response` from the request handler afterwards: aiohttp then writes nothing
    more and ends the request."""
    handler: RequestHandler = request.protocol
    transport = request.transport
    assert transport is not None  # the caller checked
    connection = EngineWebSocket(
        sock, transport, write_soon=write_soon, write_now=write_now, on_lost=on_lost
    )
    writer = response._payload_writer
    assert isinstance(writer, StreamWriter)  # what RequestHandler writes responses with
    if writer._headers_buf and not writer._headers_written:  # the 101, then OPEN
        write_soon(writer._headers_buf)
        writer._headers_buf = None
        writer._headers_written = True
    if not sock.connected:
        # A new connection, as engineio's handler starts one; an upgrade from long-polling
        # keeps its queue until the probe exchange is done (`EngineWebSocket._upgrade_step`).
        sock.connected = True
        sock.upgraded = True
        queued = sock.queue
        sock.queue = DirectQueue(connection)
        while not queued.empty():  # the OPEN packet
            connection.send_packet(queued.get_nowait())
    else:
        sock.upgrading = True  # sends wait in the long-polling queue until the UPGRADE
    # Bytes that came after the upgrade request (a client that did not wait for the 101):
    # with no frame parser installed, aiohttp keeps them as the message tail.
    tail, handler._message_tail = handler._message_tail, b""
    transport.set_protocol(connection)
    transport.resume_reading()  # in case aiohttp paused it for a long tail
    # aiohttp forgets the connection: without its transport it closes nothing, its
    # connection_lost() releases the parser and timers, and the server drops the handler
    # when the request's task ends. Its WebSocket writes nothing more (eof sent).
    handler.transport = None
    handler.connection_lost(None)
    response._eof_sent = True
    if tail:
        connection.data_received(tail)
    # socketio keeps the environ for the socket's lifetime: without these it would keep
    # the request, and through it aiohttp's handler and parser, alive too.
    environ.pop("aiohttp.request", None)
    environ.pop("wsgi.input", None)
    return connection


# -- the internals we rely on -------------------------------------------------------------

# sha256 of the engineio / aiohttp functions whose behaviour this module copies or replaces;
# a new digest means the library changed them: compare with the code above, then update.
COPIED_FUNCTIONS = {
    "engineio AsyncSocket._websocket_handler": (
        AsyncSocket._websocket_handler,
        "27f120df4d717a24478b7b0f7389ce19eea8a881dd07e2c81fb1cf2493e006a5",
    ),
    "engineio AsyncSocket.receive": (
        AsyncSocket.receive,
        "a91ae36ec2fb5340713ec03be88b1ece9887d2f3116ff09f24dda3a6d965db28",
    ),
    "aiohttp RequestHandler.connection_lost": (
        RequestHandler.connection_lost,
        "df2fe6e95fd04c7caf0611ecabbe58f85ee08e38b9a6ce24ef85e0c8dba5b86d",
    ),
    "aiohttp RequestHandler.data_received": (
        RequestHandler.data_received,
        "1ee57ebe052e6c80ced26c96e4ccb1223172e1d55afba460353c5e414914d3f6",
    ),
    "aiohttp WebSocketResponse._post_start": (
        web.WebSocketResponse._post_start,
        "5537cb3f2ecae6ed9f4d27d6d9255adb414e81efcc4d23ede6bacd762d56ed93",
    ),
}

REQUIRED_INTERNALS = (
    "engineio AsyncSocket: server, sid, queue (replaceable), connected, upgraded, closed, "
    "schedule_ping(), receive(pkt), close(wait=, abort=, reason=); "
    "AsyncServer: sockets dict, max_http_buffer_size, reason.TRANSPORT_CLOSE / PING_TIMEOUT",
    "engineio Packet(encoded_packet=), packet_type, data, encode(); PING, PONG, CLOSE, NOOP, "
    "UPGRADE; an upgrade's probe exchange as in _websocket_handler (digest below); "
    "AsyncSocket.upgrading holds sends in the long-polling queue",
    "aiohttp: WebSocketReader(queue, max_msg_size, compress, decode_text) calls the queue's "
    "feed_data(msg, size) (cpdef: overridable) and set_exception(exc); WebSocketDataQueue("
    "protocol, limit, loop=); WebSocketResponse._eof_sent (write_eof "
    "and prepare return early), _payload_writer; StreamResponse._send_headers_immediately; "
    "StreamWriter._headers_buf, _headers_written; Request.protocol (RequestHandler) and "
    "transport; "
    "RequestHandler.transport, _message_tail and connection_lost(); WebSocketResponse."
    "_post_start(request, protocol, writer) sets _ws_protocol, _writer and the parser; "
    "uvloop/asyncio Transport.set_protocol, resume_reading",
    "the functions in COPIED_FUNCTIONS unchanged (by digest)",
)


def function_digest(function: Any) -> str:
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()


def check_internals() -> None:
    """Raise `InternalsChanged` naming what is missing; see `REQUIRED_INTERNALS`."""
    problems: list[str] = []

    def need(ok: bool, what: str) -> None:
        if not ok:
            problems.append(what)

    for name, (function, digest) in COPIED_FUNCTIONS.items():
        need(function_digest(function) == digest, f"{name} unchanged")
    need(hasattr(WebSocketDataQueue, "feed_data"), "aiohttp WebSocketDataQueue.feed_data")
    need(
        list(inspect.signature(WebSocketReader).parameters)[:4]
        == ["queue", "max_msg_size", "compress", "decode_text"]
        if _has_signature(WebSocketReader)
        else True,
        "aiohttp WebSocketReader(queue, max_msg_size, compress, decode_text)",
    )
    ws_src = inspect.getsource(web.WebSocketResponse)
    need("if self._eof_sent:" in ws_src, "WebSocketResponse.write_eof checks _eof_sent")
    need(
        "if self._payload_writer is not None:" in inspect.getsource(web.WebSocketResponse.prepare),
        "WebSocketResponse.prepare returns early once prepared",
    )
    need(hasattr(web.BaseRequest, "protocol"), "aiohttp Request.protocol")
    need(
        "if self._send_headers_immediately:" in inspect.getsource(web.StreamResponse),
        "aiohttp StreamResponse._send_headers_immediately",
    )
    need(
        "self._headers_buf = buf" in inspect.getsource(StreamWriter.write_headers)
        and "self._headers_written = True" in inspect.getsource(StreamWriter.send_headers),
        "aiohttp StreamWriter keeps unsent headers in _headers_buf / _headers_written",
    )
    for name in ("PING", "PONG", "CLOSE", "NOOP", "UPGRADE"):
        need(hasattr(eio_packet, name), f"engineio packet.{name}")
    for name in ("UnknownPacketError", "SocketIsClosedError"):
        need(hasattr(eio_exceptions, name), f"engineio exceptions.{name}")
    if problems:
        raise InternalsChanged(
            "feedserver.eio_websocket relies on internals that changed: " + "; ".join(problems)
        )


def _has_signature(obj: Any) -> bool:
    try:
        inspect.signature(obj)
    except (TypeError, ValueError):
        return False
    return True
