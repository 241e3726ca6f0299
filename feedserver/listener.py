"""The HTTP listener: aiohttp's server, with a deadline for a new connection's first headers.

Two timers cut slow or idle plain-HTTP connections (a WebSocket is detached from aiohttp
after its handshake, and a request being answered is never timed, so neither applies to
a long-poll waiting for its ping nor to a WebSocket):

- `FEED_HTTP_KEEPALIVE_TIMEOUT` is aiohttp's own `keepalive_timeout`. In aiohttp 3.14 its
  timer runs from a connection's start and from each response until the next request's
  headers are complete, and bytes arriving do not reset it: it closes an idle kept-alive
  connection and one that trickles its headers alike.
- `FEED_HTTP_HEADER_TIMEOUT`: a new connection must have sent the end of its first
  request's headers within this many seconds of its start. aiohttp has no such setting,
  so this module adds it. `FirstRequestDeadline` stands between the transport and
  aiohttp's protocol for that first request only: it passes every call through, looks for
  the blank line that ends the headers, then hands the transport to aiohttp's protocol
  (`Transport.set_protocol`) and is gone; nothing of it stays with the connection.

What differs from serving with `web.TCPSite`: each connection starts with this wrapper,
and the listener is closed by `HttpListener.close()` before `runner.cleanup()` (which is
all `TCPSite.stop()` does). No aiohttp code is copied and no internal is used:
`runner.server` is aiohttp's low-level server, a protocol factory, and `force_close()` is a
public method of the protocol it makes.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from typing import Any, cast

from aiohttp import web

log = logging.getLogger("feedserver")

# The blank line after the header lines; a line may end in LF alone.
_HEADERS_END = re.compile(rb"\n\r?\n")


class FirstRequestDeadline(asyncio.Protocol):
    """aiohttp's protocol for one connection, closed unless its first request's headers
    are complete within `timeout` seconds of the connection's start."""

    __slots__ = ("_inner", "_started", "_tail", "_timeout", "_timer", "_transport")

    def __init__(self, inner: web.RequestHandler, timeout: float) -> None:
        self._inner = inner
        self._timeout = timeout
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._started = False  # a byte other than CR or LF has arrived
        self._tail = b""  # the last bytes read, for a blank line split across reads

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._timer = asyncio.get_running_loop().call_later(self._timeout, self._expire)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._headers_end_in(data):
            self._step_out()
        self._inner.data_received(data)

    def eof_received(self) -> None:
        self._inner.eof_received()  # aiohttp's returns None: the transport closes itself

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel()
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def _headers_end_in(self, data: bytes) -> bool:
        if not self._started:
            # Empty lines before a request line are allowed (RFC 9112, section 2.2).
            data = data.lstrip(b"\r\n")
            if not data:
                return False
            self._started = True
        window = self._tail + data
        if _HEADERS_END.search(window):
            return True
        self._tail = window[-2:]
        return False

    def _step_out(self) -> None:
        self._cancel()
        assert self._transport is not None
        self._transport.set_protocol(self._inner)
        self._transport = None

    def _expire(self) -> None:
        self._timer = None
        log.debug("closing a connection that sent no complete request within %ss", self._timeout)
        self._inner.force_close()

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


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
    ) -> None:
        self._runner = runner
        self._host = host
        self._port = port
        self._header_timeout = header_timeout
        self._backlog = backlog
        self._server: asyncio.Server | None = None

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
        """Stop accepting; open connections are left to `runner.cleanup()`."""
        if self._server is not None:
            self._server.close()

    def _connection(self) -> FirstRequestDeadline:
        server = self._runner.server
        assert server is not None, "runner.setup() comes first"
        return FirstRequestDeadline(server(), self._header_timeout)
