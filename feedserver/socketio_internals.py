"""Everything of python-socketio's that is not its public API, in one place.

python-socketio stays the Socket.IO layer (namespaces, packets, acks, managers). Beyond its
public API feedserver needs three things of it, each one method here:
- the engine it runs on: `_engineio_server_class` (the library's own hook) gives it
  `feedserver.engineio.EngineServer`;
- the CONNECT reply carries the pid of socket.io's connection state recovery (`recovery`),
  and refusing an unknown namespace says so as the Node server does: `_send_packet`, which
  every packet of the server's own passes;
- a disconnect that touches only the leaving socket's rooms: `IndexedManager`, a sid ->
  rooms index beside the library's `rooms` (the library scans every room, one per socket:
  ~6.6 ms per disconnect at 10,000 sockets).

`check_internals()` runs on throw-away objects when the gateway is built: that python-socketio
builds its engine from the hook, that `_send_packet` is still there, and the index through a
connect, a join and a disconnect against the library's own rooms. A release that changes
those stops the server at start-up with what changed, not at the first client; the pid and
the namespace message are asserted end to end (tests/integration/test_connection_recovery.py,
the Socket.IO suite).
"""

from __future__ import annotations

from typing import Any

import socketio
from socketio import packet

from .engineio import EngineServer
from .internals import InternalsChanged


class SocketServer(socketio.AsyncServer):  # type: ignore[misc]
    """`socketio.AsyncServer` on feedserver's engine, whose CONNECT replies carry the pid
    granted by the connect handler."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pids: dict[str, str] = {}

    def _engineio_server_class(self) -> type[EngineServer]:
        return EngineServer

    def grant_pid(self, sid: str, pid: str) -> None:
        """Put `pid` in the CONNECT reply to `sid`; call it last in the connect handler
        (socketio sends the reply once the handler returns, with `data["sid"]`)."""
        self._pids[sid] = pid

    async def _send_packet(self, eio_sid: str, pkt: Any) -> None:
        if pkt.packet_type == packet.CONNECT and isinstance(pkt.data, dict) and self._pids:
            pid = self._pids.pop(str(pkt.data.get("sid")), None)
            if pid is not None:
                pkt.data = {**pkt.data, "pid": pid}
        elif pkt.packet_type == packet.CONNECT_ERROR and pkt.data == "Unable to connect":
            # python-socketio's answer to a namespace it does not serve; socket.io's is this
            pkt.data = {"message": "Invalid namespace"}
        await super()._send_packet(eio_sid, pkt)


class IndexedManager(socketio.AsyncManager):  # type: ignore[misc]
    """`socketio.AsyncManager` with a sid -> rooms index kept in step with `rooms`.

    Every socket is in the `None` room and its own sid room; only its other rooms (here:
    its tenant's) are indexed, to keep the index to one small set per socket.
    """

    rooms: dict[str, dict[Any, Any]]
    callbacks: dict[str, Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # namespace -> sid -> its one indexed room, or a set of them: a feed socket is in
        # one (its tenant's), and a set would cost ~200 bytes per socket
        self._rooms_of: dict[str, dict[str, Any]] = {}

    def basic_enter_room(
        self, sid: str, namespace: str, room: Any, eio_sid: str | None = None
    ) -> None:
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        if room is None or room == sid:
            return
        of_namespace = self._rooms_of.setdefault(namespace, {})
        held = of_namespace.get(sid, _NONE)
        if held is _NONE or held == room:
            of_namespace[sid] = room
        elif isinstance(held, _Rooms):
            held.add(room)
        else:
            of_namespace[sid] = _Rooms((held, room))

    def basic_leave_room(self, sid: str, namespace: str, room: Any) -> None:
        super().basic_leave_room(sid, namespace, room)
        of_namespace = self._rooms_of.get(namespace, {})
        held = of_namespace.get(sid, _NONE)
        if isinstance(held, _Rooms):
            held.discard(room)
            if len(held) == 1:
                (of_namespace[sid],) = held
        elif held is not _NONE and held == room:
            del of_namespace[sid]

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        """The library's: leave every room, drop the callbacks and the pending state; the
        rooms from the index instead of a scan of all of them."""
        for room in [*self._indexed(sid, namespace), sid, None]:
            self.basic_leave_room(sid, namespace, room)
        self.callbacks.pop(sid, None)
        # pending_connect exists from python-socketio 5.18 on
        for pending in (getattr(self, "pending_connect", None), self.pending_disconnect):
            if pending is not None:
                _forget(pending, namespace, sid)

    def get_rooms(self, sid: str, namespace: str) -> list[Any]:
        if sid not in self.rooms.get(namespace, {}).get(sid, ()):
            return []
        return [*self._indexed(sid, namespace), sid]

    def _indexed(self, sid: str, namespace: str) -> list[Any]:
        held = self._rooms_of.get(namespace, {}).get(sid, _NONE)
        if held is _NONE:
            return []
        return list(held) if isinstance(held, _Rooms) else [held]


_NONE = object()


class _Rooms(set[Any]):
    """Two or more indexed rooms of one socket (a room name may itself be a set-like)."""


def _forget(pending: dict[str, list[str]], namespace: str, sid: str) -> None:
    waiting = pending.get(namespace)
    if waiting is not None and sid in waiting:
        waiting.remove(sid)
        if not waiting:
            del pending[namespace]


def check_internals() -> None:
    """Raise `InternalsChanged` if python-socketio no longer works as the three methods
    above assume, found by running them, not by reading its source."""
    engine = SocketServer(async_mode="aiohttp").eio
    if not isinstance(engine, EngineServer):
        raise InternalsChanged(
            f"socketio.AsyncServer no longer takes its engine from _engineio_server_class "
            f"(it built {type(engine).__name__})"
        )
    if not callable(getattr(socketio.AsyncServer, "_send_packet", None)):
        raise InternalsChanged("socketio.AsyncServer._send_packet is gone")
    manager = IndexedManager()
    for attribute in ("rooms", "callbacks", "pending_disconnect"):
        if not isinstance(getattr(manager, attribute, None), dict):
            raise InternalsChanged(f"socketio BaseManager.{attribute} is no longer a dict")
    try:
        for room in (None, "s1", "tenant"):
            manager.basic_enter_room("s1", "/", room, eio_sid="e1")
        manager.basic_enter_room("s2", "/", None, eio_sid="e2")
        rooms = sorted(map(str, manager.get_rooms("s1", "/")))
        manager.basic_disconnect("s1", "/")
        left = [r for r, members in manager.rooms.get("/", {}).items() if "s1" in members]
        others = list(manager.get_participants("/", None))
    except Exception as exc:
        raise InternalsChanged(f"socketio's room bookkeeping changed: {exc!r}") from exc
    if rooms != ["s1", "tenant"] or left or others != [("s2", "e2")]:
        raise InternalsChanged(
            "socketio's room bookkeeping changed: "
            f"rooms {rooms}, left behind {left}, participants {others}"
        )
