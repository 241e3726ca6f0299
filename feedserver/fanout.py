"""Fast room broadcast: encode an event once, write the same WebSocket frame to every socket.

python-socketio's room emit creates one asyncio task per recipient, which puts the packet on
the socket's Engine.IO queue, wakes that socket's writer task, which builds the WebSocket
frame again. `RoomBroadcaster` encodes the Socket.IO packet, the Engine.IO packet and the
WebSocket frame (server frames are unmasked, so every recipient gets identical bytes) once
per event, and writes those bytes straight to the TCP transport of each WebSocket (served
by `eio_websocket`, whose own packets are written in the same order as these). Every other
socket (long-polling, upgrading, socketio send tasks not yet run) gets the packet through
the normal Engine.IO path, so per-socket order never changes.

Slow readers: a socket whose Engine.IO queue reaches `max_queue` packets, or whose
transport write buffer passes `max_write_buffer` bytes, is disconnected instead of being
allowed to grow the server's memory.

Use (construct it right after the server, before any client connects):

    self.broadcaster = RoomBroadcaster(self.sio, max_queue=settings.max_queue)
    await self.broadcaster.broadcast(tenant, "event_created", SocketJson.dumps(event.to_json()),
                                     offset=str(event.seq))  # offset only with recovery on

Every use of python-socketio / python-engineio / aiohttp internals lives in this module and
is listed in `REQUIRED_INTERNALS`; `check_internals()` verifies them (at construction, and in
tests/unit/test_fanout_internals.py), so an upgrade that changes them fails loudly.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import engineio
import socketio
from aiohttp import web
from engineio import packet as eio_packet
from engineio.async_drivers import aiohttp as eio_aiohttp

from .eio_transport import check_internals as check_transport_internals
from .eio_websocket import DetachableWebSocketResponse, detach, websocket_frame
from .eio_websocket import check_internals as check_websocket_internals
from .internals import InternalsChanged
from .jsoncodec import SocketJson

log = logging.getLogger(__name__)

NAMESPACE = "/"
DEFAULT_MAX_QUEUE = 1000
DEFAULT_MAX_WRITE_BUFFER = 1 << 20
# Longest pause between two flushes (seconds): the most a busy server adds to a delivery's
# latency to write several events to a socket in one send().
DEFAULT_MAX_PAUSE = 0.020
# A flush that took d is followed by a pause of PAUSE_PER_FLUSH * d (at most max_pause):
# under load, writing takes at most a third of the loop's time. Measured at 1000
# subscribers, 80 ev/s: 2 instead of 1 cut server CPU per delivery from ~9 to ~7 us (and
# the subscribers' own CPU as much) for ~5 ms more at p50 and p99 (docs/benchmarks.md).
PAUSE_PER_FLUSH = 2

SendPacket = Callable[[str, Any], Coroutine[Any, Any, None]]


def encode_event_text(event: str, data_json: str, offset: str | None = None) -> str:
    """Socket.IO EVENT packet for the default namespace: `2["event",data(,"offset")]`."""
    event_json = SocketJson.dumps(event)
    if offset is None:
        return f"2[{event_json},{data_json}]"
    return f"2[{event_json},{data_json},{SocketJson.dumps(offset)}]"


@dataclass(slots=True, eq=False)
class _WebSocketSlot:
    """What the fast path needs about one WebSocket (`eio_websocket.EngineWebSocket`)."""

    socket: Any  # engineio.async_socket.AsyncSocket
    transport: asyncio.Transport
    # Frames taken for this socket and not yet written (None: nothing pending). While some
    # are pending, every later frame for the socket joins them: its own packets too
    # (`_write_soon`), so they are written in the order they were sent.
    pending: list[bytes] | None = None


def _add_pending(slot: _WebSocketSlot, frame: bytes) -> None:
    if slot.pending is None:
        slot.pending = [frame]
    else:
        slot.pending.append(frame)


class RoomBroadcaster:
    """Sends one event to every socket in a room of the default namespace, encoded once.

    Construct it right after the `socketio.AsyncServer` (before clients connect): it swaps
    in a WebSocket driver with permessage-deflate off, which also tells it each upgraded
    socket's transport, and counts socketio's own in-flight send tasks so that the fast
    path never overtakes them.

    Only this process's participants are reached (`manager.get_participants`); with several
    nodes, each node must call `broadcast` for the events it learns about.
    """

    def __init__(
        self,
        server: socketio.AsyncServer,
        *,
        max_queue: int = DEFAULT_MAX_QUEUE,
        max_write_buffer: int = DEFAULT_MAX_WRITE_BUFFER,
        max_pause: float = DEFAULT_MAX_PAUSE,
    ) -> None:
        check_internals(server)
        if max_queue < 1 or max_write_buffer < 1 or max_pause < 0:
            raise ValueError("max_queue and max_write_buffer must be positive, max_pause >= 0")
        self._server = server
        self._eio = server.eio
        self.max_queue = max_queue
        self.max_write_buffer = max_write_buffer
        self.max_pause = max_pause
        self._slots: dict[str, _WebSocketSlot] = {}
        self._sends_in_flight: dict[str, int] = {}
        # Running totals, for tests and metrics: frames written directly, the send()s that
        # wrote them (fewer when coalesced), packets that took the Engine.IO queue, slow
        # readers disconnected.
        self.direct_writes = 0
        self.sends = 0
        self.queued = 0
        self.evicted = 0
        self._dirty: list[_WebSocketSlot] = []  # slots with pending frames, in arrival order
        self._flush_handle: asyncio.Handle | None = None
        self._urgent: list[_WebSocketSlot] = []  # sockets' own packets, this loop pass
        self._urgent_handle: asyncio.Handle | None = None
        self._quiet_until = 0.0  # loop time before which no flush starts
        self._install_websocket_driver()
        self._count_socketio_sends()

    # -- public ---------------------------------------------------------------------------

    def has_recipients(self, room: str) -> bool:
        """Whether a socket of this process is in `room`: with no one to reach, a publish
        need not encode anything (most posts of a tenant nobody watches on this node)."""
        return next(self._server.manager.get_participants(NAMESPACE, room), None) is not None

    async def broadcast(
        self, room: str, event: str, data_json: str, offset: str | None = None
    ) -> int:
        """Send `event` with the already-serialized `data_json` to `room`; return recipients.

        The loop over recipients never yields to the event loop, so two broadcasts never
        interleave and every socket sees them in call order.
        """
        text = "4" + encode_event_text(event, data_json, offset)
        frame = websocket_frame(text.encode())
        pkt = eio_packet.Packet(eio_packet.MESSAGE, data=text[1:])
        pkt.encode_cache = text  # what Packet.encode() would build, shared by all sockets
        slots = self._slots
        in_flight = self._sends_in_flight
        max_buffer = self.max_write_buffer
        dirty = self._dirty
        direct = 0
        queued: list[Any] = []  # sockets that take the Engine.IO path
        slow: list[Any] = []
        for _sid, eio_sid in self._server.manager.get_participants(NAMESPACE, room):
            slot = slots.get(eio_sid)
            if slot is not None and eio_sid not in in_flight:
                # A socketio send in flight (its packet not written yet) makes this one
                # queue behind it; so does an upgrade from long-polling not done yet.
                sock = slot.socket
                if sock.upgraded and not sock.upgrading and not sock.closing:
                    pending = slot.pending
                    if pending is not None:
                        pending.append(frame)
                        direct += 1
                        continue
                    transport = slot.transport
                    if transport.get_write_buffer_size() > max_buffer:
                        slow.append(sock)
                    elif not transport.is_closing():
                        slot.pending = [frame]
                        dirty.append(slot)
                        direct += 1
                    continue
            queued.append(eio_sid)
        if direct:
            self._schedule_flush()
        send_tasks, enqueued = self._enqueue(queued, pkt, slow) if queued else ([], 0)
        self.direct_writes += direct
        self.queued += enqueued
        recipients = direct + enqueued
        for sock in slow:
            await self._evict(sock)
        if send_tasks:
            await asyncio.wait(send_tasks)
        return recipients

    def _enqueue(
        self, eio_sids: list[str], pkt: Any, slow: list[Any]
    ) -> tuple[list[asyncio.Task[None]], int]:
        """The Engine.IO path (polling, upgrading or busy sockets), in socketio's order.

        Returns the send tasks to await and how many sockets got the packet; sockets over
        a bound go to `slow`.
        """
        sockets = self._eio.sockets
        slots = self._slots
        in_flight = self._sends_in_flight
        send_tasks: list[asyncio.Task[None]] = []
        enqueued = 0
        for eio_sid in eio_sids:
            sock = sockets.get(eio_sid)
            if sock is None or sock.closing or sock.closed:
                continue
            slot = slots.get(eio_sid)
            if sock.queue.qsize() >= self.max_queue or (
                slot is not None and slot.transport.get_write_buffer_size() > self.max_write_buffer
            ):
                slow.append(sock)
            elif eio_sid in in_flight:
                # socketio send tasks for this socket have not run yet: queue behind them
                send_tasks.append(asyncio.create_task(self._server._send_eio_packet(eio_sid, pkt)))
                enqueued += 1
            else:
                sock.queue.put_nowait(pkt)
                enqueued += 1
        return send_tasks, enqueued

    # -- paced, coalesced writes ----------------------------------------------------------

    def _schedule_flush(self) -> None:
        """Write the pending frames at the next loop pass, or after the pause a flush leaves.

        Every broadcast made before the flush adds its frame, so a socket gets one write (one
        send(), the larger part of a delivery's CPU) for all of them. Order holds: a
        socket's own packets join its pending frames (`_write_soon`), and a socketio send
        task in flight makes later broadcasts queue behind it.
        """
        if self._flush_handle is not None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() >= self._quiet_until:
            self._flush_handle = loop.call_soon(self._flush)
        else:
            self._flush_handle = loop.call_at(self._quiet_until, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        dirty, self._dirty = self._dirty, []
        loop = asyncio.get_running_loop()
        started = loop.time()
        write_pending = self._write_pending
        for slot in dirty:
            write_pending(slot)  # nothing left if _flush_urgent already wrote them
        # Pace: after a flush that took d, wait 2d (at most max_pause) before the next one.
        # At low rates that never delays anything (events are further apart than 3d); under
        # load it caps writing at a third of the loop's time, leaves the rest to ingest, and
        # makes each send() carry every frame that arrived in between.
        ended = loop.time()
        self._quiet_until = ended + min((ended - started) * PAUSE_PER_FLUSH, self.max_pause)

    def _write_soon(self, slot: _WebSocketSlot, frame: bytes) -> None:
        """A socket's own packet (ack, ping, system message): after the frames pending
        for it, at the end of this loop pass, not after the flush's pause. Packets
        of one pass share a send() (the connect sequence's three, for one)."""
        _add_pending(slot, frame)
        self._urgent.append(slot)
        if self._urgent_handle is None:
            self._urgent_handle = asyncio.get_running_loop().call_soon(self._flush_urgent)

    def _write_now(self, slot: _WebSocketSlot, frame: bytes) -> None:
        """What is pending for a socket and `frame`, in one send() now (it closes)."""
        _add_pending(slot, frame)
        self._write_pending(slot)

    def _flush_urgent(self) -> None:
        self._urgent_handle = None
        urgent, self._urgent = self._urgent, []
        for slot in urgent:
            self._write_pending(slot)

    def _write_pending(self, slot: _WebSocketSlot) -> None:
        """One send() of the frames pending for `slot`, if any and its socket is open."""
        frames = slot.pending
        if frames is None:
            return
        slot.pending = None
        transport = slot.transport
        if not transport.is_closing():  # closing: our close frame is out
            transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
            self.sends += 1
            # The one bound on what a connection may leave unsent, whatever was written:
            # events, or replies to what the client sends (pongs, acks) while never reading.
            if transport.get_write_buffer_size() > self.max_write_buffer:
                self._drop_slow_reader(slot.socket.sid, 0, transport)

    # -- slow readers ---------------------------------------------------------------------

    def _drop_slow_reader(self, sid: str, queued: int, transport: asyncio.Transport | None) -> None:
        """Count, log and abort (a WebSocket: its connection_lost() closes the socket) a
        socket that does not read what is written to it, whichever write found it out."""
        self.evicted += 1
        unsent = transport.get_write_buffer_size() if transport is not None else 0
        log.warning(
            "disconnecting slow reader %s (%d packets queued, %d bytes unsent)",
            sid,
            queued,
            unsent,
        )
        if transport is not None:
            transport.abort()

    async def _evict(self, sock: Any) -> None:
        """Disconnect a socket that does not keep up, dropping what it has not read."""
        if sock.closing or sock.closed:
            return
        slot = self._slots.get(sock.sid)
        self._drop_slow_reader(
            sock.sid, sock.queue.qsize(), slot.transport if slot is not None else None
        )
        # A long-polling socket's backlog is freed now, not when the socket is reaped.
        while not sock.queue.empty():
            sock.queue.get_nowait()
            sock.queue.task_done()
        await sock.close(wait=False, abort=True, reason=self._eio.reason.SERVER_DISCONNECT)

    # -- wiring into engineio / socketio --------------------------------------------------

    def _install_websocket_driver(self) -> None:
        # `_async` is the driver module's shared dict: copy it, never change it in place.
        drivers = dict(self._eio._async)
        drivers["websocket"] = _driver_factory(self)
        drivers["translate_request"] = _translate_request
        self._eio._async = drivers

    def _count_socketio_sends(self) -> None:
        """Count each socketio send from the moment its task is *created*, not when it runs.

        `AsyncManager.emit` creates one task per recipient calling `_send_eio_packet` (or
        `_send_packet` with a callback). Until such a task has put its packet on the queue,
        the fast path must not write to that socket, or our frame would overtake it.
        """
        server = self._server
        server._send_eio_packet = self._counted(server._send_eio_packet)
        server._send_packet = self._counted(server._send_packet)

    def _counted(self, send: SendPacket) -> Callable[[str, Any], Coroutine[Any, Any, None]]:
        in_flight = self._sends_in_flight

        def counted_send(eio_sid: str, pkt: Any) -> Coroutine[Any, Any, None]:
            in_flight[eio_sid] = in_flight.get(eio_sid, 0) + 1
            return _run_counted(send, eio_sid, pkt, in_flight)

        return counted_send


async def _run_counted(send: SendPacket, eio_sid: str, pkt: Any, in_flight: dict[str, int]) -> None:
    try:
        await send(eio_sid, pkt)
    finally:
        left = in_flight.get(eio_sid, 1) - 1
        if left > 0:
            in_flight[eio_sid] = left
        else:
            in_flight.pop(eio_sid, None)


def _translate_request(request: web.BaseRequest) -> dict[str, Any]:
    """engineio's environ for an aiohttp request, with the peer's address in REMOTE_ADDR
    (engineio's says 127.0.0.1 for everyone), which outlives the request (`detach`)."""
    environ: dict[str, Any] = eio_aiohttp.translate_request(request)
    environ["REMOTE_ADDR"] = request.remote or ""
    return environ


def _driver_factory(broadcaster: RoomBroadcaster) -> Callable[..., Any]:
    """Engine.IO's aiohttp WebSocket driver, without permessage-deflate, that hands each
    WebSocket (a new connection, or an upgrade from long-polling) to `eio_websocket` once
    aiohttp has answered the handshake, and registers its slot."""
    slots = broadcaster._slots

    class FeedWebSocket(eio_aiohttp.WebSocket):  # type: ignore[misc]
        async def __call__(self, environ: dict[str, Any]) -> web.WebSocketResponse:
            request: web.Request = environ["aiohttp.request"]
            sock = self.handler.__self__  # the bound AsyncSocket._websocket_handler
            # compress=False: no per-message deflate, whatever the client offers; also what
            # lets every recipient share one frame.
            response = DetachableWebSocketResponse(
                max_msg_size=self.server.max_http_buffer_size, compress=False
            )
            self._sock = response
            await response.prepare(request)
            # The 101's headers are built: without this the response would keep them, and
            # what aiohttp built to write them (~2.4 KB), for the socket's lifetime.
            response.headers.clear()
            self.environ = environ
            transport = request.transport
            if transport is None:  # the client left during the handshake
                await self.handler(self)  # engineio's handler finds that out and cleans up
                return response
            slot = _WebSocketSlot(sock, transport)
            slots[sock.sid] = slot

            def forget() -> None:
                if slots.get(sock.sid) is slot:
                    del slots[sock.sid]

            detach(
                request,
                response,
                sock,
                environ,
                write_soon=functools.partial(broadcaster._write_soon, slot),
                write_now=functools.partial(broadcaster._write_now, slot),
                on_lost=forget,
            )
            return response

    return FeedWebSocket


# -- the internals we rely on -------------------------------------------------------------

REQUIRED_INTERNALS = (
    "engineio AsyncSocket: queue (put_nowait, qsize, empty, get_nowait, task_done), upgraded, "
    "upgrading, closing, closed, sid, close(wait=, abort=, reason=), _websocket_handler(ws) "
    "(bound: the driver's handler, run only for a client gone during the handshake)",
    "engineio AsyncServer: sockets dict, _async['websocket'] driver called as "
    "driver(handler, server) then awaited with environ, _async['translate_request'], "
    "reason.SERVER_DISCONNECT",
    "engineio aiohttp driver: WebSocket(handler, server), _sock, environ['aiohttp.request'], "
    "translate_request(request)",
    "engineio Packet: MESSAGE == 4, encode() returns encode_cache when set",
    "socketio AsyncServer: packet_class encodes as socketio.packet.Packet (JSON text), "
    "manager.get_participants(ns, room) -> (sid, eio_sid), "
    "_send_eio_packet(eio_sid, pkt) and _send_packet(eio_sid, pkt); AsyncManager.emit "
    "creates its send tasks through self.server._send_eio_packet / _send_packet",
    "aiohttp: WebSocketResponse(compress=False), Request.transport, Request.remote",
)


def check_internals(server: socketio.AsyncServer) -> None:
    """Raise `InternalsChanged` naming what is missing; see `REQUIRED_INTERNALS`."""
    problems: list[str] = []

    def need(ok: bool, what: str) -> None:
        if not ok:
            problems.append(what)

    eio = getattr(server, "eio", None)
    need(isinstance(eio, engineio.AsyncServer), "server.eio is an engineio.AsyncServer")
    if isinstance(eio, engineio.AsyncServer):
        need(isinstance(getattr(eio, "sockets", None), dict), "eio.sockets is a dict")
        drivers = getattr(eio, "_async", None)
        need(
            isinstance(drivers, dict) and drivers.get("websocket") is eio_aiohttp.WebSocket,
            "eio._async['websocket'] is engineio.async_drivers.aiohttp.WebSocket "
            "(async_mode='aiohttp')",
        )
        need(
            hasattr(getattr(eio, "reason", None), "SERVER_DISCONNECT"),
            "eio.reason.SERVER_DISCONNECT",
        )
        for check in (check_transport_internals, lambda _: check_websocket_internals()):
            try:
                check(eio)
            except InternalsChanged as exc:
                problems.append(str(exc))
    sock_cls = engineio.async_socket.AsyncSocket
    need(hasattr(sock_cls, "_websocket_handler"), "AsyncSocket._websocket_handler")
    close_params = inspect.signature(sock_cls.close).parameters
    need(
        {"wait", "abort", "reason"} <= set(close_params),
        "AsyncSocket.close(wait, abort, reason)",
    )
    base_init = inspect.getsource(engineio.base_socket.BaseSocket.__init__)
    for attr in ("queue", "upgrading", "upgraded", "closing", "closed", "sid"):
        need(f"self.{attr} =" in base_init, f"BaseSocket sets self.{attr}")
    driver_src = inspect.getsource(eio_aiohttp.WebSocket)
    need("self._sock = WebSocketResponse(" in driver_src, "aiohttp driver's _sock")
    need("environ['aiohttp.request']" in driver_src, "aiohttp driver reads aiohttp.request")
    need("await self.handler(self)" in driver_src, "aiohttp driver awaits handler(self)")
    need(callable(getattr(eio_aiohttp, "translate_request", None)), "driver translate_request")
    need(eio_packet.MESSAGE == 4, "engineio packet.MESSAGE == 4")
    need(
        "if self.encode_cache:" in inspect.getsource(eio_packet.Packet.encode),
        "engineio Packet.encode uses encode_cache",
    )
    manager_src = inspect.getsource(socketio.async_manager.AsyncManager.emit)
    need("self.server._send_eio_packet(" in manager_src, "AsyncManager.emit -> _send_eio_packet")
    need("self.server._send_packet(" in manager_src, "AsyncManager.emit -> _send_packet")
    need(
        hasattr(server, "_send_eio_packet") and hasattr(server, "_send_packet"),
        "AsyncServer._send_eio_packet/_send_packet",
    )
    need(hasattr(server.manager, "get_participants"), "manager.get_participants")
    need(
        getattr(getattr(server, "packet_class", None), "encode", None)
        is socketio.packet.Packet.encode,
        "text Socket.IO packets (serializer='default'), which encode_event_text writes",
    )
    need(
        "compress" in inspect.signature(web.WebSocketResponse).parameters,
        "aiohttp WebSocketResponse(compress=)",
    )
    need(hasattr(web.BaseRequest, "transport"), "aiohttp Request.transport")
    need(hasattr(web.BaseRequest, "remote"), "aiohttp Request.remote")
    if problems:
        raise InternalsChanged(
            "feedserver.fanout relies on internals that changed: " + "; ".join(problems)
        )
