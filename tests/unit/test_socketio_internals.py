"""The one module on python-socketio's internals: its room index keeps the same rooms as
python-socketio without scanning on disconnect, and its start-up check runs them."""

from __future__ import annotations

import time

import engineio
import pytest
import socketio

from feedserver.internals import InternalsChanged
from feedserver.socketio_internals import IndexedManager, SocketServer, check_internals

NS = "/"


def _join(manager: socketio.AsyncManager, sid: str, *rooms: str) -> None:
    manager.basic_enter_room(sid, NS, None, eio_sid=f"e{sid}")
    manager.basic_enter_room(sid, NS, sid, eio_sid=f"e{sid}")
    for room in rooms:
        manager.basic_enter_room(sid, NS, room)


def _apply(manager: socketio.AsyncManager) -> None:
    """The same joins, leaves and disconnects on any manager."""
    for i in range(30):
        _join(manager, f"s{i}", f"tenant_{i % 3}", *(["extra"] if i % 4 == 0 else []))
    manager.callbacks["s1"] = {1: print}
    manager.pending_disconnect[NS] = ["s1", "s2"]
    manager.basic_leave_room("s4", NS, "extra")
    for sid in ("s0", "s1", "s2", "s3", "s8"):
        manager.basic_disconnect(sid, NS)


def _snapshot(manager: socketio.AsyncManager) -> dict[object, dict[str, str]]:
    return {room: dict(members) for room, members in manager.rooms[NS].items()}


def test_the_installed_python_socketio_keeps_rooms_as_the_index_mirrors() -> None:
    check_internals()


def test_a_python_socketio_whose_rooms_work_otherwise_is_refused_at_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def leaves_nothing(self: object, sid: str, namespace: str, room: object) -> None:
        pass

    monkeypatch.setattr(socketio.base_manager.BaseManager, "basic_leave_room", leaves_nothing)
    with pytest.raises(InternalsChanged, match="room bookkeeping changed"):
        check_internals()


def test_a_python_socketio_that_builds_another_engine_is_refused_at_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(SocketServer, "_engineio_server_class", lambda self: engineio.AsyncServer)
    with pytest.raises(InternalsChanged, match="_engineio_server_class"):
        check_internals()


def test_joins_leaves_and_disconnects_leave_the_same_rooms_as_python_socketio() -> None:
    plain, indexed = socketio.AsyncManager(), IndexedManager()
    _apply(plain)
    _apply(indexed)
    assert _snapshot(indexed) == _snapshot(plain)
    assert indexed.callbacks == plain.callbacks == {}
    assert indexed.pending_disconnect == plain.pending_disconnect == {}
    for sid in ("s5", "s12", "s4", "s0"):
        assert sorted(indexed.get_rooms(sid, NS)) == sorted(plain.get_rooms(sid, NS))


def test_a_disconnected_socket_leaves_no_room_and_no_index_entry() -> None:
    manager = IndexedManager()
    _join(manager, "a", "tenant_0", "extra")
    _join(manager, "b", "tenant_0")
    manager.basic_disconnect("a", NS)
    assert _snapshot(manager) == {None: {"b": "eb"}, "b": {"b": "eb"}, "tenant_0": {"b": "eb"}}
    assert manager.get_rooms("a", NS) == []
    manager.basic_disconnect("b", NS)
    assert NS not in manager.rooms and not manager._rooms_of.get(NS)


def test_disconnecting_among_ten_thousand_sockets_does_not_scan_every_room() -> None:
    manager = IndexedManager()
    for i in range(10_000):
        _join(manager, f"s{i}", f"tenant_{i % 10}")
    started = time.perf_counter()
    for i in range(1_000):
        manager.basic_disconnect(f"s{i}", NS)
    # The library's scan copies 10,000 rooms per disconnect (~6 ms each, ~6 s for these);
    # with the index the 1,000 take a few ms. 1 s leaves room for a very busy machine.
    assert time.perf_counter() - started < 1.0
    assert len(manager.rooms[NS][None]) == 9_000
