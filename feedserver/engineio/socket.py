"""One Engine.IO connection: the one owner of everything written to a client and of the
order in which it was received.

An `EngineSocket` is on long-polling or on a WebSocket, and moves from the first to the
second once (the upgrade, with its probe). Whatever is sent to it (its own packets,
broadcast frames, pings) goes through `send_*`, so per-connection order is the order of
the calls:
- on a WebSocket, frames wait in `_pending` until the loop's `WriteScheduler` flushes
  them in one send(); past `max_write_buffer` unsent bytes the client is dropped;
- on long-polling, packets wait in `_outbox` until the client's pending GET takes them;
  past `max_queue` packets the client is dropped.

What the client sends is handed to the server's message handler in order, one packet at
a time, by a receiver that exists only while there is something to handle: a task, or,
with the server's `eager_packets`, the callback that read the packet until the handler
first waits (then a task carries it on). The disconnect handler runs last on it, once,
whatever ended the connection; a receiver started for it alone is always a task.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import TYPE_CHECKING, Any

from ..tasks import start_eagerly
from . import frames
from .packets import (
    CLOSE,
    MESSAGE,
    NOOP,
    PING,
    PONG,
    SEPARATOR,
    UPGRADE,
    BadPacket,
    Packet,
    decode_frame,
    polling_text,
)

if TYPE_CHECKING:
    from .server import EngineServer
    from .websocket import WebSocketConnection

log = logging.getLogger(__name__)

_CLIENT_CLOSE = object()  # the client's CLOSE packet, in the inbox after what came before


class _End:
    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class EngineSocket:
    __slots__ = (
        "__weakref__",
        "_handling",
        "_inbox",
        "_noop_due",
        "_outbox",
        "_pending",
        "_poll",
        "_poll_answer",
        "_probe",
        "_probed",
        "_receiver",
        "_receiving",
        "_ws",
        "awaiting_pong",
        "closed",
        "server",
        "session",
        "sid",
        "transport",
    )

    def __init__(self, server: EngineServer, sid: str) -> None:
        self.server = server
        self.sid = sid
        self.session: dict[str, Any] | None = None  # made by get_session()
        self.transport = "polling"  # "websocket" once upgraded or opened as one
        self.closed = False
        self.awaiting_pong: float | None = None  # loop time of the unanswered PING
        self._ws: WebSocketConnection | None = None
        self._pending: list[bytes] | None = None  # frames not yet written to _ws
        self._probe: WebSocketConnection | None = None  # an upgrade in progress
        self._probed = False  # its PING "probe" is answered; UPGRADE comes next
        self._outbox: list[str | bytes] = []  # packets for the next poll
        self._poll: asyncio.Future[str] | None = None  # the client's pending GET
        self._poll_answer: asyncio.Handle | None = None
        self._noop_due = False  # a probe came with no poll pending: the next gets NOOP
        self._inbox: collections.deque[Any] | None = None
        self._receiver: asyncio.Task[None] | None = None  # None while it runs eagerly
        self._receiving = False  # a receiver is running, as a task or eagerly
        self._handling = False  # the receiver is inside the message handler

    # -- sending --------------------------------------------------------------------------

    def send_text(self, text: str) -> bool:
        """Send one encoded text packet (`4...`, `2`) with this loop pass's others."""
        return self._send(text)

    def send_message(self, data: str | bytes) -> bool:
        return self._send("4" + data if isinstance(data, str) else data)

    def _send(self, packet: str | bytes) -> bool:
        """A packet of the socket's own (text, or a binary MESSAGE), with this pass's others."""
        if self.closed:
            return False
        if self._ws is None:
            return self._queue_for_poll(packet)
        self._add_frame(_frame_of(packet))
        self.server.writes.soon(self)
        return True

    def send_broadcast(self, text: str, frame: bytes) -> bool:
        """A broadcast MESSAGE: `text` is its Engine.IO packet, `frame` that packet's
        WebSocket frame, shared by every recipient; written at the next paced flush."""
        if self.closed:
            return False
        if self._ws is None:
            return self._queue_for_poll(text)
        if self._pending is None:
            self._pending = [frame]
            self.server.writes.paced(self)
        else:
            self._pending.append(frame)
        return True

    def write_frame(self, conn: WebSocketConnection, frame: bytes, *, last: bool = False) -> None:
        """A frame of `conn`'s own (a pong, a close frame): after what is pending for it."""
        if conn is not self._ws:  # an upgrade's probe connection, which carries nothing else
            if conn.transport is not None:
                conn.transport.write(frame)
            return
        self._add_frame(frame)
        if last:
            self.flush()
        else:
            self.server.writes.soon(self)

    def _add_frame(self, frame: bytes) -> None:
        if self._pending is None:
            self._pending = [frame]
        else:
            self._pending.append(frame)

    def flush(self) -> None:
        """One send() of the frames pending, if any; the bound on what a connection may
        leave unsent is checked after every write, whatever was written (events, or the
        replies to what a client that never reads keeps sending)."""
        frames_ = self._pending
        if frames_ is None:
            return
        self._pending = None
        ws = self._ws
        transport = ws.transport if ws is not None else None
        if transport is None or transport.is_closing():
            return  # our close frame is out, or the connection is gone
        transport.write(frames_[0] if len(frames_) == 1 else b"".join(frames_))
        self.server.stats.sends += 1
        if transport.get_write_buffer_size() > self.server.max_write_buffer:
            self.drop_slow_reader(transport.get_write_buffer_size())

    def unsent(self) -> int:
        """Bytes written for this client that it has not taken: frames pending and the
        transport's buffer on a WebSocket, the queued packets on long-polling."""
        if self._ws is None:
            return sum(len(p) for p in self._outbox)
        pending = sum(map(len, self._pending)) if self._pending else 0
        transport = self._ws.transport
        return pending + (transport.get_write_buffer_size() if transport is not None else 0)

    def _queue_for_poll(self, packet: str | bytes) -> bool:
        outbox = self._outbox
        if len(outbox) >= self.server.max_queue:
            self.drop_slow_reader(0)
            return False
        outbox.append(packet)
        if self._poll is not None and self._poll_answer is None:
            # at the end of this pass: a poll takes every packet sent in it
            self._poll_answer = asyncio.get_running_loop().call_soon(self._answer_poll)
        return True

    # -- heartbeat (heartbeat.Heartbeat) ----------------------------------------------------

    def ping(self) -> bool:
        return self.send_text("2")

    def ping_timed_out(self) -> None:
        if self._ws is not None:
            self._ws.abort()
        self._shut(self.server.reason.PING_TIMEOUT, last_poll="1")

    # -- long-polling -----------------------------------------------------------------------

    async def poll(self) -> str:
        """A GET of the long-polling transport: what is queued, or what comes next."""
        if self._poll is not None:  # a second GET while one is pending: refused, closed
            self._shut(self.server.reason.TRANSPORT_ERROR, last_poll="1")
            raise PollRefused("duplicate poll")
        if self._noop_due:
            self._noop_due = False
            return "6"
        if self._outbox:
            return self._take_outbox()
        self._poll = poll = asyncio.get_running_loop().create_future()
        try:
            payload: str = await poll
            return payload
        finally:
            if self._poll is poll:
                self._poll = None

    def _take_outbox(self) -> str:
        outbox, self._outbox = self._outbox, []
        return SEPARATOR.join(p if isinstance(p, str) else polling_text(p) for p in outbox)

    def _answer_poll(self, payload: str | None = None) -> None:
        self._poll_answer = None
        poll = self._poll
        if poll is None or poll.done():
            return
        if payload is None:
            if not self._outbox:
                return
            payload = self._take_outbox()
        poll.set_result(payload)
        self._poll = None

    # -- the upgrade to WebSocket -------------------------------------------------------

    def start_upgrade(self, conn: WebSocketConnection) -> bool:
        """A WebSocket with this sid: it becomes the transport once the probe is done."""
        if self.closed or self._ws is not None or self._probe is not None:
            return False
        self._probe = conn
        return True

    def use_websocket(self, conn: WebSocketConnection, head: bytes) -> None:
        """A session opened on a WebSocket: `head` (the 101) leaves with what is queued."""
        self._ws = conn
        self.transport = "websocket"
        if head:
            self._add_frame(head)
        for packet in self._take_packets():
            self._add_frame(_frame_of(packet))
        self.server.writes.soon(self)

    def _take_packets(self) -> list[str | bytes]:
        outbox, self._outbox = self._outbox, []
        return outbox

    def websocket_message(self, conn: WebSocketConnection, data: str | bytes) -> None:
        try:
            pkt = decode_frame(data)
        except BadPacket:  # not Engine.IO: close, as the Node server does
            conn.close(frames.CLOSE_PROTOCOL_ERROR)
            return
        if conn is self._ws:
            self.received(pkt)
        elif conn is self._probe:
            self._upgrade_step(conn, pkt)

    def _upgrade_step(self, conn: WebSocketConnection, pkt: Packet) -> None:
        """PING "probe" is answered with PONG "probe", and the pending poll with a NOOP
        that ends it; then UPGRADE moves the socket to the WebSocket, with what its
        long-polling queue still holds. Anything else ends the probe (the client keeps
        polling)."""
        if not self._probed:
            if pkt.type != PING or pkt.data != "probe":
                conn.close(frames.CLOSE_OK)
                return
            self._probed = True
            self.write_frame(conn, frames.text_frame("3probe"))
            if self._poll is not None:
                self._answer_poll("6")
            else:
                self._noop_due = True
            return
        if pkt.type == NOOP:
            return
        if pkt.type != UPGRADE:
            conn.close(frames.CLOSE_OK)
            return
        self._probe = None
        self._noop_due = False
        self._ws = conn
        self.transport = "websocket"
        if self._poll is not None:
            self._answer_poll("6")
        for packet in self._take_packets():  # in order, after the probe's PONG
            self._add_frame(_frame_of(packet))
        self.flush()

    def websocket_lost(self, conn: WebSocketConnection) -> None:
        if conn is self._probe:  # an upgrade that did not happen: it keeps polling
            self._probe = None
            self._probed = False
            return
        if conn is self._ws:
            # A packet still being handled (socketio runs a CONNECT's handler inside it)
            # is cancelled, as aiohttp cancels a request whose client left.
            self._shut(self.server.reason.TRANSPORT_CLOSE, cancel=True)

    # -- receiving --------------------------------------------------------------------------

    def received(self, pkt: Packet) -> None:
        """A packet from the client, on whichever transport it came."""
        kind = pkt.type
        if kind == MESSAGE:
            self._enqueue(pkt.data)
        elif kind == PONG:
            self.server.heartbeat.pong(self)
        elif kind == CLOSE:
            self._enqueue(_CLIENT_CLOSE)
        elif kind == PING:  # clients of v4 do not ping; an old one is answered
            self.send_text(f"3{pkt.data!s}")
        elif kind != NOOP:  # OPEN or UPGRADE out of place
            self.protocol_error()

    def protocol_error(self) -> None:
        """The client sent what is not Engine.IO: the connection ends."""
        if self._ws is not None:
            self._ws.close(frames.CLOSE_PROTOCOL_ERROR)
        self._shut(self.server.reason.TRANSPORT_ERROR, last_poll="1")

    def _enqueue(self, item: Any) -> None:
        if self.closed:
            return
        if self._inbox is None:
            self._inbox = collections.deque()
        self._inbox.append(item)
        if self._receiving:
            return
        self._receiving = True
        if self.server.eager_packets:
            self._receiver = start_eagerly(self._receive())
        else:
            self._receiver = asyncio.get_running_loop().create_task(self._receive())

    async def _receive(self) -> None:
        inbox = self._inbox
        assert inbox is not None
        on_message = self.server.handlers.get("message")
        try:
            while inbox:
                item = inbox.popleft()
                if isinstance(item, _End):
                    await self.server.disconnected(self, item.reason)
                    return
                if item is _CLIENT_CLOSE:
                    self._closed_by_client()
                    continue
                if on_message is None:
                    continue
                self._handling = True
                try:
                    await on_message(self.sid, item)
                except asyncio.CancelledError:
                    if not self.closed:
                        raise
                    # the connection is lost: only the disconnect is left to run
                    task = asyncio.current_task()
                    if task is not None:
                        task.uncancel()
                    ends = [i for i in inbox if isinstance(i, _End)]
                    inbox.clear()
                    inbox.extend(ends)
                except Exception:  # as engineio: log it, and the connection carries on
                    log.exception("error handling a message from %s", self.sid)
                finally:
                    self._handling = False
        finally:
            self._receiving = False
            self._receiver = None
            self._inbox = None  # an idle connection keeps no deque (760 bytes)

    async def post(self, packets: list[Packet]) -> None:
        """The packets of one long-polling POST, received in order; returns once they
        are handled, so a client that posts faster than they are is slowed down."""
        for pkt in packets:
            self.received(pkt)
        receiver = self._receiver
        if receiver is not None:
            await asyncio.wait({receiver})

    # -- closing --------------------------------------------------------------------------

    def close(self) -> None:
        """The server ends the connection: an Engine.IO CLOSE, then the transport's end."""
        if self.closed:
            return
        if self._ws is not None:
            self.send_text("1")
            self._ws.close(frames.CLOSE_OK)
        self._shut(self.server.reason.SERVER_DISCONNECT, last_poll="1", keep_last=True)

    def abandon(self) -> None:
        """The client left before its WebSocket was accepted."""
        self._shut(self.server.reason.TRANSPORT_CLOSE)

    def _closed_by_client(self) -> None:
        if self._ws is not None:
            self._ws.close(frames.CLOSE_OK)
        # a pending poll (the python-socketio client's disconnect() waits for it) ends
        # with a NOOP at once, as the Node server does
        self._shut(self.server.reason.CLIENT_DISCONNECT, last_poll="6")

    def drop_slow_reader(self, unsent: int) -> None:
        """A client that does not read what is written to it: dropped, with what it has
        not read, before it grows the server's memory."""
        if self.closed:
            return
        self.server.stats.slow_readers_dropped += 1
        log.warning(
            "disconnecting slow reader %s (%d packets queued, %d bytes unsent)",
            self.sid,
            len(self._outbox),
            unsent,
        )
        self._outbox = []
        self._pending = None
        if self._ws is not None:
            self._ws.abort()
        self._shut(self.server.reason.SERVER_DISCONNECT, last_poll="1")

    def _shut(
        self,
        reason: str,
        *,
        last_poll: str | None = None,
        keep_last: bool = False,
        cancel: bool = False,
    ) -> None:
        """Forget the socket and have the disconnect handler run after what was received
        before. A long-polling client's pending GET gets what is queued and `last_poll`;
        with no GET pending and `keep_last`, its next GET does."""
        if self.closed:
            return
        self.closed = True
        self.server.forget(self)
        if self._probe is not None:
            self._probe.close(frames.CLOSE_OK)
        if self._ws is None:
            payload = self._take_outbox()
            if last_poll is not None:
                payload = f"{payload}{SEPARATOR}{last_poll}" if payload else last_poll
            if self._poll is not None:
                if self._poll_answer is not None:
                    self._poll_answer.cancel()
                self._answer_poll(payload)
            elif keep_last:
                self.server.keep_last_poll(self.sid, payload)
        self._enqueue_end(reason, cancel)

    def _enqueue_end(self, reason: str, cancel: bool) -> None:
        if self._inbox is None:
            self._inbox = collections.deque()
        self._inbox.append(_End(reason))
        if not self._receiving:
            # A task, even with `eager_packets`: the connection may end inside a broadcast
            # or a flush, which the disconnect handler is not to run in.
            self._receiving = True
            self._receiver = asyncio.get_running_loop().create_task(self._receive())
        elif cancel and self._handling and self._receiver is not None:
            # (None: the receiver runs eagerly, in a callback this one did not interrupt)
            self._receiver.cancel()

    def sent_all(self) -> bool:
        """Nothing left to write: on a WebSocket nothing pending; on long-polling nothing
        queued and the client's next poll waiting, which proves that the previous
        response arrived."""
        if self.closed:
            return True
        if self._ws is not None:
            return self._pending is None
        return not self._outbox and self._poll is not None

    def close_transport(self) -> None:
        """For a server that goes away: end the transport (a long-polling client's last
        poll ends with CLOSE), so socket.io clients reconnect by themselves, which a
        Socket.IO DISCONNECT would tell them not to."""
        if self.closed:
            return
        if self._ws is not None:
            self._ws.close(frames.CLOSE_OK)
        self._shut(self.server.reason.SERVER_DISCONNECT, last_poll="1", keep_last=True)


class PollRefused(Exception):
    """A GET that the long-polling transport refuses (400)."""


def _frame_of(packet: str | bytes) -> bytes:
    if isinstance(packet, str):
        return frames.text_frame(packet)
    return frames.websocket_frame(packet, frames.BINARY)
