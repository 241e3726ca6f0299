"""The HTTP listener: aiohttp's server, with a deadline for a new connection's first
headers, and the first request offered to a shortcut before aiohttp sees it.

Two timers cut slow or idle plain-HTTP connections (a WebSocket is detached from aiohttp
after its handshake, and a request being answered is never timed, so neither applies to
a long-poll waiting for its ping nor to a WebSocket):

- `FEED_HTTP_KEEPALIVE_TIMEOUT` is aiohttp's own `keepalive_timeout`. In aiohttp 3.14 its
  timer runs from the start of aiohttp's part of a connection and from each response
  until the next request's headers are complete, and bytes arriving do not reset it: it
  closes an idle kept-alive connection and one that trickles its headers alike.
- `FEED_HTTP_HEADER_TIMEOUT`: a new connection must have sent the end of its first
  request's headers within this many seconds of its start. aiohttp has no such setting,
  so this module adds it.

`FirstRequest` is a connection's protocol until its first request's head is complete
(a head past `MAX_HEAD_BYTES` is answered 431 and the connection closed): it keeps the
bytes, and then offers them to the
listener's `Shortcut` (a new session's WebSocket handshake, `upgrades.DirectUpgrades`),
which may serve the connection itself; otherwise it makes aiohttp's protocol for the
connection, hands it the transport (`Transport.set_protocol`) and the bytes, and is gone;
nothing of it stays with the connection. aiohttp's protocol is made only then: a
connection the shortcut takes never has one (about a tenth of a WebSocket connect's CPU).

What differs from serving with `web.TCPSite`: each connection starts with this protocol,
and the listener is closed by `HttpListener.close()` before `runner.cleanup()` (which is
all `TCPSite.stop()` does). No aiohttp code is copied and no internal is used:
`runner.server` is aiohttp's low-level server, a protocol factory.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from typing import Any, Protocol, cast

import orjson
from aiohttp import web

from .errors import HeadersTooLarge

log = logging.getLogger("feedserver")

# The blank line after the header lines; a line may end in LF alone.
_HEADERS_END = re.compile(rb"\n\r?\n")
# Past this many bytes without the blank line, a head is refused with 431 and the
# connection closed: the bytes kept are bounded, and so is the time to send a head (the
# header deadline ends with the head). aiohttp would take up to 128 lines of 8190 bytes.
MAX_HEAD_BYTES = 65536
_TOO_LARGE = HeadersTooLarge()
_TOO_LARGE_BODY = orjson.dumps({"error": _TOO_LARGE.to_json()})
_HEADERS_TOO_LARGE = (
    f"HTTP/1.1 {_TOO_LARGE.status} Request Header Fields Too Large\r\n"
    f"Content-Type: application/json\r\nContent-Length: {len(_TOO_LARGE_BODY)}\r\n"
    "Connection: close\r\n\r\n"
).encode() + _TOO_LARGE_BODY


class Shortcut(Protocol):
    """Serves some connections without aiohttp (`upgrades.DirectUpgrades`)."""

    def take(self, head: bytes, tail: bytes, transport: asyncio.Transport) -> bool:
        """Serve the connection whose first request's head is `head` (through its blank
        line; `tail` came after it), or leave it to aiohttp (False)."""
        ...


class FirstRequest(asyncio.Protocol):
    """A new connection until its first request's head is complete: closed unless that
    happens within `timeout` seconds of its start, then offered to `shortcut`, else
    handed to aiohttp's protocol from `factory`. It is in `waiting` until then."""

    __slots__ = (
        "_buffer",
        "_factory",
        "_shortcut",
        "_timeout",
        "_timer",
        "_transport",
        "_waiting",
    )

    def __init__(
        self,
        factory: web.Server,
        shortcut: Shortcut | None,
        timeout: float,
        waiting: set[FirstRequest],
    ) -> None:
        self._factory = factory
        self._shortcut = shortcut
        self._timeout = timeout
        self._waiting = waiting
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._timer = asyncio.get_running_loop().call_later(self._timeout, self._expire)
        self._waiting.add(self)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        if not buffer:
            # Empty lines before a request line are allowed (RFC 9112, section 2.2): dropped
            # as they come, so they are neither kept nor searched again.
            data = data.lstrip(b"\r\n")
            if not data:
                return
        seen = len(buffer)
        buffer += data  # a bytearray: a head sent byte by byte is not copied per byte
        end = _HEADERS_END.search(buffer, max(0, seen - 2))
        if end is not None:
            at = end.end()
            if self._shortcut is not None and self._shortcut.take(
                bytes(buffer[:at]), bytes(buffer[at:]), self._transport_now()
            ):
                self._done()
                return
            self._to_aiohttp()
        elif len(buffer) > MAX_HEAD_BYTES:
            self._refuse(_HEADERS_TOO_LARGE)

    def eof_received(self) -> bool:
        return False  # nothing to answer yet: close

    def connection_lost(self, exc: BaseException | None) -> None:
        self._done()

    def _to_aiohttp(self) -> None:
        transport = self._transport_now()
        handler = self._factory()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        buffer = bytes(self._buffer)
        self._done()
        handler.data_received(buffer)

    def _refuse(self, answer: bytes) -> None:
        transport = self._transport_now()
        self._done()
        transport.write(answer)
        transport.close()

    def _transport_now(self) -> asyncio.Transport:
        assert self._transport is not None  # after connection_made, before _done
        return self._transport

    def _expire(self) -> None:
        self._timer = None
        log.debug("closing a connection that sent no complete request in time")
        self.close()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _done(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._transport = None
        self._buffer = bytearray()
        self._waiting.discard(self)


class HttpListener:
    """One listening socket for `runner` (after `runner.setup()`), with the header
    deadline on every new connection."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        header_timeout: float,
        backlog: int = 128,
        shortcut: Shortcut | None = None,
    ) -> None:
        self._runner = runner
        self._host = host
        self._port = port
        self._header_timeout = header_timeout
        self._shortcut = shortcut
        self._backlog = backlog
        self._server: asyncio.Server | None = None
        # Connections whose first request is not complete: aiohttp does not know them yet.
        self._waiting: set[FirstRequest] = set()

    async def start(self) -> None:
        self._server = await asyncio.get_running_loop().create_server(
            self._connection, self._host, self._port, backlog=self._backlog
        )

    @property
    def addresses(self) -> list[Any]:
        """Where it listens: (host, port, ...) per socket, as `socket.getsockname()`."""
        sockets: tuple[socket.socket, ...] = () if self._server is None else self._server.sockets
        return [sock.getsockname() for sock in sockets]

    def close(self) -> None:
        """Stop accepting, and close the connections that have sent no complete request
        yet (nothing of theirs is under way); the others are aiohttp's, left to
        `runner.cleanup()`, or the engine's."""
        if self._server is not None:
            self._server.close()
        for waiting in list(self._waiting):
            waiting.close()

    def _connection(self) -> FirstRequest:
        server = self._runner.server
        assert server is not None, "runner.setup() comes first"
        return FirstRequest(server, self._shortcut, self._header_timeout, self._waiting)
