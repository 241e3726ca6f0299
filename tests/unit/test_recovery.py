"""The pieces of native connection state recovery, and the python-socketio it relies on."""

from __future__ import annotations

import pytest

from feedserver.core import CatchUp
from feedserver.events import Event
from feedserver.recovery import ConnectionRecovery, Resume
from feedserver.store import MemoryStore

EVENT = Event(7, "tenant_a", "hi", "2026-01-20T10:30:00.000Z")


async def test_a_pid_of_this_store_with_an_offset_is_a_resume() -> None:
    recovery = ConnectionRecovery(MemoryStore(10), enabled=True)
    pid = (await recovery.read({})).new_pid
    reconnect = await recovery.read({"pid": pid, "offset": "12"})
    assert reconnect.resume == Resume(pid, 12)
    assert reconnect.new_pid != pid


@pytest.mark.parametrize(
    "handshake",
    [
        {},
        {"offset": "3"},
        {"pid": "OTHER", "offset": "3"},
        {"pid": "PID", "offset": 3},
        {"pid": "PID", "offset": "-1"},
        {"pid": "PID", "offset": "9007199254740992"},
        {"pid": "PID"},
        {"pid": "not a pid", "offset": "3"},
        {"pid": ["PID"], "offset": "3"},
    ],
)
async def test_anything_else_is_a_fresh_start(handshake: dict[str, object]) -> None:
    recovery = ConnectionRecovery(MemoryStore(10), enabled=True)
    pids = {
        "PID": (await recovery.read({})).new_pid,
        "OTHER": (await ConnectionRecovery(MemoryStore(10), enabled=True).read({})).new_pid,
    }
    handshake = {k: pids.get(v, v) if isinstance(v, str) else v for k, v in handshake.items()}
    assert (await recovery.read(handshake)).resume is None


async def test_recovery_off_resumes_nothing_and_sends_no_offsets() -> None:
    store = MemoryStore(10)
    pid = (await ConnectionRecovery(store, enabled=True).read({})).new_pid
    recovery = ConnectionRecovery(store, enabled=False)
    assert (await recovery.read({"pid": pid, "offset": "1"})).resume is None
    assert recovery.event_args(EVENT) == EVENT.to_json()
    assert recovery.initial_args(CatchUp([EVENT], 7, recovered=False)) == [EVENT.to_json()]


def test_offsets_are_seq_strings() -> None:
    recovery = ConnectionRecovery(MemoryStore(10), enabled=True)
    assert recovery.event_args(EVENT) == (EVENT.to_json(), "7")
    assert recovery.initial_args(CatchUp([EVENT], 9, recovered=False)) == ([EVENT.to_json()], "7")
    assert recovery.initial_args(CatchUp([], 9, recovered=False)) == ([], "9")
