"""One WebSocket, once aiohttp has handed its transport over (`handover`): frames in,
control frames answered, each message passed to its owner (an `EngineSocket`).

It is plain RFC 6455 (the Autobahn echo in tests/conformance runs on it unchanged) and
writes nothing itself: every frame goes through its owner, which keeps the order of
everything written to the connection (`EngineSocket.write_frame`).
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from aiohttp import WSMsgType

from . import frames
from .handover import FrameParsers


class Owner(Protocol):
    def websocket_message(self, conn: WebSocketConnection, data: str | bytes) -> None: ...

    def write_frame(
        self, conn: WebSocketConnection, frame: bytes, *, last: bool = False
    ) -> None: ...

    def websocket_lost(self, conn: WebSocketConnection) -> None: ...


class WebSocketConnection(asyncio.Protocol):
    """The protocol of one detached WebSocket; `sock` owns it (and writes for it)."""

    __slots__ = ("__weakref__", "_masks", "_parser", "_parsers", "closed", "sock", "transport")

    def __init__(self, sock: Owner, parsers: FrameParsers, max_message: int) -> None:
        self.sock = sock
        self.transport: asyncio.Transport | None = None
        self.closed = False  # our close frame is queued, or the connection is gone
        self._parsers = parsers
        self._parser = parsers.parser(max_message)
        self._masks = frames.MaskCheck()

    # -- asyncio.Protocol -----------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if not self._masks.all_masked(data):  # RFC 6455 5.1: the server must close
            self.close(frames.CLOSE_PROTOCOL_ERROR)
            return
        self._parsers.feed(self._parser, self, data)

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self.sock.websocket_lost(self)

    def pause_writing(self) -> None:
        """A slow reader is found by its write buffer size (`EngineSocket.flush`)."""

    def resume_writing(self) -> None:
        pass

    # -- frames ---------------------------------------------------------------------------

    def message(self, msg: Any) -> None:
        """One message from the frame parser."""
        if self.closed:
            return
        kind = msg[0]
        if kind == WSMsgType.TEXT or kind == WSMsgType.BINARY:
            self.sock.websocket_message(self, msg[1])
        elif kind == WSMsgType.PING:
            self.sock.write_frame(self, frames.websocket_frame(msg[1], frames.PONG))
        elif kind == WSMsgType.CLOSE:
            self.close(frames.close_reply(msg[1]))

    def parse_failed(self, exc: BaseException) -> None:
        """A malformed or oversized frame: close with its code, as aiohttp would."""
        self.close(getattr(exc, "code", frames.CLOSE_PROTOCOL_ERROR))

    def close(self, code: int) -> None:
        """Write what is pending and a close frame with `code`, then close the transport
        (which sends what is buffered first)."""
        if self.closed or self.transport is None:
            return
        self.closed = True
        self.sock.write_frame(self, frames.close_frame(code), last=True)
        self.transport.close()

    def abort(self) -> None:
        """Drop the connection without writing anything more."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
