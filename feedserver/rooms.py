"""Socket.IO room bookkeeping that does not scan every room when one socket leaves.

python-socketio keeps `rooms[namespace][room][sid] = eio_sid` and nothing else, and every
socket is alone in a room named after its sid. So `BaseManager.basic_disconnect` and
`get_rooms` look through *every* room for the leaving sid: with 10,000 sockets connected,
one disconnect costs ~6.6 ms of blocked loop, and 10,000 of them about a minute.
`RoomIndex` keeps the reverse map, sid -> rooms, next to the library's own, so a
disconnect touches only that socket's rooms.

It is a mixin over `BaseManager`, used by `IndexedManager` (the manager of every node:
nodes share events and system messages through `cluster`, not through Socket.IO).
`basic_disconnect` is the library's, with the scan replaced by the index;
`check_internals()` verifies the attributes and methods it relies on, at construction and
in tests/unit/test_rooms_internals.py, so a python-socketio upgrade that changes them fails
loudly (`feedserver.internals.InternalsChanged`) instead of leaving stale rooms behind.
"""

from __future__ import annotations

import inspect
from typing import Any

import socketio

from .internals import InternalsChanged


class RoomIndex:
    """Mixin for a `socketio` manager: a sid -> rooms index kept in step with `rooms`.

    Every socket is in the `None` room and its own sid room; only its other rooms (here:
    its tenant's) are indexed, to keep the index to one small set per socket.
    """

    rooms: dict[str, dict[Any, Any]]
    callbacks: dict[str, Any]
    pending_connect: dict[str, list[str]]
    pending_disconnect: dict[str, list[str]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        check_internals()
        super().__init__(*args, **kwargs)
        self._rooms_of: dict[str, dict[str, set[Any]]] = {}  # namespace -> sid -> rooms

    def basic_enter_room(
        self, sid: str, namespace: str, room: Any, eio_sid: str | None = None
    ) -> None:
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)  # type: ignore[misc]
        if room is not None and room != sid:
            self._rooms_of.setdefault(namespace, {}).setdefault(sid, set()).add(room)

    def basic_leave_room(self, sid: str, namespace: str, room: Any) -> None:
        super().basic_leave_room(sid, namespace, room)  # type: ignore[misc]
        of_namespace = self._rooms_of.get(namespace, {})
        rooms = of_namespace.get(sid)
        if rooms is not None:
            rooms.discard(room)
            if not rooms:
                del of_namespace[sid]

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        for room in [*self._indexed(sid, namespace), sid, None]:
            self.basic_leave_room(sid, namespace, room)
        self.callbacks.pop(sid, None)
        _forget(self.pending_connect, namespace, sid)
        _forget(self.pending_disconnect, namespace, sid)

    def get_rooms(self, sid: str, namespace: str) -> list[Any]:
        if sid not in self.rooms.get(namespace, {}).get(sid, ()):
            return []
        return [*self._indexed(sid, namespace), sid]

    def _indexed(self, sid: str, namespace: str) -> list[Any]:
        return list(self._rooms_of.get(namespace, {}).get(sid, ()))


def _forget(pending: dict[str, list[str]], namespace: str, sid: str) -> None:
    waiting = pending.get(namespace)
    if waiting is not None and sid in waiting:
        waiting.remove(sid)
        if not waiting:
            del pending[namespace]


class IndexedManager(RoomIndex, socketio.AsyncManager):  # type: ignore[misc]
    """The single-node manager: `socketio.AsyncManager` with the sid -> rooms index."""


def check_internals() -> None:
    """Fail loudly if python-socketio stopped keeping rooms the way this module mirrors."""
    base = socketio.base_manager.BaseManager
    manager = base()
    for attribute in ("rooms", "callbacks", "pending_connect", "pending_disconnect"):
        if not isinstance(getattr(manager, attribute, None), dict):
            raise InternalsChanged(f"BaseManager.{attribute} is no longer a dict")
    for name in ("basic_enter_room", "basic_leave_room", "basic_disconnect", "get_rooms"):
        if not callable(getattr(base, name, None)):
            raise InternalsChanged(f"BaseManager.{name} is gone")
    disconnect = inspect.getsource(base.basic_disconnect)
    # The library's disconnect does exactly: leave every room, drop callbacks, drop pending.
    for step in ("basic_leave_room(", "self.callbacks", "pending_connect", "pending_disconnect"):
        if step not in disconnect:
            raise InternalsChanged(f"BaseManager.basic_disconnect no longer uses {step}")
    for name in ("emit", "disconnect", "enter_room", "leave_room", "close_room"):
        source = inspect.getsource(getattr(socketio.async_manager.AsyncManager, name))
        if "self.basic_" not in source and "self.get_participants" not in source:
            raise InternalsChanged(f"AsyncManager.{name} bypasses the basic_* methods")
