"""The one module that knows aiohttp's insides: taking a WebSocket's TCP transport over
after aiohttp has answered the handshake, and aiohttp's C frame parser.

aiohttp keeps a WebSocket inside the request that opened it: the request handler's task
with every middleware's frame, the request, a WebSocketResponse with reader and writer,
for the connection's lifetime (about 29 KB per idle client). `take_over` lets aiohttp do
what it does well (middlewares, the 101 and its headers), then moves the transport to our
own protocol and lets aiohttp's request end and forget the connection. (A new session's
plain handshake never reaches aiohttp: `handshake.py`. Upgrades from polling and
handshakes that are not plain come this way.)

`check_internals()` (called when the engine is built) names whatever of this a new aiohttp
no longer has, instead of failing on the first connection.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from aiohttp import web
from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader
from aiohttp.http_writer import StreamWriter
from aiohttp.web_protocol import RequestHandler

from ..internals import InternalsChanged


class DetachableWebSocketResponse(web.WebSocketResponse):
    """aiohttp's WebSocket response, whose 101 is left in its writer by `prepare()`, to be
    written with the Engine.IO OPEN in one send(); it installs no frame parser of its own,
    so no byte can reach aiohttp's."""

    _send_headers_immediately = False

    def _post_start(self, request: web.BaseRequest, protocol: str | None, writer: Any) -> None:
        self._ws_protocol = protocol
        self._writer = writer


def take_over(
    request: web.Request, response: DetachableWebSocketResponse, protocol: asyncio.Protocol
) -> tuple[asyncio.Transport, bytes, bytes]:
    """Give the prepared WebSocket `response`'s connection to `protocol`. Returns the
    transport, the 101's bytes (not written yet) and what the client sent after its
    upgrade request (to be fed to `protocol`). Return `response` from the request handler
    afterwards: aiohttp then writes nothing more and ends the request."""
    handler: RequestHandler = request.protocol
    transport = request.transport
    assert transport is not None  # the caller checked
    writer = response._payload_writer
    assert isinstance(writer, StreamWriter)  # what RequestHandler writes responses with
    head = b""
    if writer._headers_buf and not writer._headers_written:
        head = bytes(writer._headers_buf)
        writer._headers_buf = None
        writer._headers_written = True
    # A client that did not wait for the 101: with no frame parser installed, aiohttp
    # keeps those bytes as the message tail.
    tail, handler._message_tail = handler._message_tail, b""
    transport.set_protocol(protocol)
    transport.resume_reading()  # in case aiohttp paused it for a long tail
    # aiohttp forgets the connection: without its transport it closes nothing, its
    # connection_lost() releases the parser and timers, and the server drops the handler
    # when the request's task ends. Its WebSocket writes nothing more (eof sent).
    handler.transport = None
    handler.connection_lost(None)
    response._eof_sent = True
    response.headers.clear()  # built and written: not kept for the socket's lifetime
    return transport, head, bytes(tail)


class FrameParsers(WebSocketDataQueue):
    """aiohttp's C frame parser for every WebSocket of one engine, and the one sink they
    all put their messages in.

    The parser hands each message to a queue (`feed_data`, a cpdef method: Python
    overrides are honoured). A queue per connection would cost a deque and two bound
    methods (~0.9 KB) for nothing, since the messages go straight on; so one queue
    serves every connection, told before each read whose bytes it is parsing (reads are
    parsed synchronously, one at a time).
    """

    __slots__ = ("_connection",)

    def __init__(self) -> None:
        # The protocol is only read for pausing, which feed_data (replaced) would do.
        super().__init__(_NeverPaused, 1 << 30, loop=asyncio.get_running_loop())  # type: ignore[arg-type]
        self._connection: Parsed | None = None

    def parser(self, max_message: int) -> Any:
        """A frame parser for one connection: no deflate, text decoded, messages over
        `max_message` bytes refused (with close code 1009)."""
        return WebSocketReader(self, max_message, False, True)

    def feed(self, parser: Any, connection: Parsed, data: bytes) -> None:
        """Parse `data` for `connection`: `connection.message((type, data, extra))` per
        message (aiohttp's `WSMsgType`), `connection.parse_failed(exc)` for a bad frame."""
        previous, self._connection = self._connection, connection
        try:
            parser.feed_data(data)
        finally:
            self._connection = previous

    def feed_data(self, data: Any, size: int) -> None:
        if self._connection is not None:
            self._connection.message(data)

    def feed_eof(self) -> None:
        """The transport's end is seen by the protocol itself."""

    def set_exception(self, exc: BaseException, exc_cause: BaseException | None = None) -> None:
        if self._connection is not None:
            self._connection.parse_failed(exc)


class Parsed(Protocol):
    def message(self, msg: Any) -> None: ...

    def parse_failed(self, exc: BaseException) -> None: ...


class _NeverPaused:
    _reading_paused = False


def _names_set_by(cls: type) -> tuple[str, ...]:
    """The attribute names `cls.__init__`'s code uses (instance attributes included)."""
    names: tuple[str, ...] = cls.__init__.__code__.co_names  # type: ignore[misc]
    return names


def check_internals() -> None:
    """Raise `InternalsChanged` naming what this module needs and aiohttp lacks."""
    problems = [
        what
        for ok, what in (
            (hasattr(WebSocketDataQueue, "feed_data"), "WebSocketDataQueue.feed_data"),
            (hasattr(WebSocketReader, "feed_data"), "WebSocketReader.feed_data"),
            (hasattr(web.WebSocketResponse, "_post_start"), "WebSocketResponse._post_start"),
            (hasattr(web.StreamResponse, "_send_headers_immediately"), "_send_headers_immediately"),
            (hasattr(web.BaseRequest, "protocol"), "Request.protocol"),
            (hasattr(RequestHandler, "_message_tail"), "RequestHandler._message_tail"),
            (
                {"_headers_buf", "_headers_written"}
                <= set(StreamWriter.__init__.__code__.co_names),
                "StreamWriter._headers_buf / _headers_written",
            ),
        )
        if not ok
    ]
    if problems:
        raise InternalsChanged(
            "feedserver.engineio.handover needs aiohttp internals that changed: "
            + ", ".join(problems)
        )
