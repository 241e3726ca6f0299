"""The python-engineio / aiohttp internals feedserver.eio_transport relies on, and its pings.

If a digest check fails after a dependency upgrade, python-engineio changed a function
whose behaviour eio_transport copies: compare the two, carry the change over, then update
the digest in `COPIED_FUNCTIONS`.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any, cast

import engineio
import pytest
from engineio import packet as eio_packet
from engineio.async_socket import AsyncSocket

from feedserver import eio_transport
from feedserver.eio_transport import LeanEngineServer, LeanSocketServer, check_internals
from feedserver.eio_websocket import DirectQueue
from feedserver.internals import InternalsChanged


def test_the_installed_versions_have_every_internal_we_use() -> None:
    check_internals(engineio.AsyncServer(async_mode="aiohttp"))


def test_a_changed_engineio_function_is_refused_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(eio_transport.COPIED_FUNCTIONS, "_send_ping", "0" * 64)
    with pytest.raises(InternalsChanged, match=r"AsyncSocket\._send_ping unchanged"):
        check_internals(engineio.AsyncServer(async_mode="aiohttp"))


def test_the_socketio_server_runs_on_the_ping_timer_engine() -> None:
    assert isinstance(LeanSocketServer(async_mode="aiohttp").eio, LeanEngineServer)


async def test_a_ping_is_queued_after_the_interval_by_a_timer_not_a_task() -> None:
    eio = LeanEngineServer(async_mode="aiohttp", ping_interval=0.05)
    sockets = [AsyncSocket(eio, f"sid{n}") for n in range(3)]
    tasks_before = asyncio.all_tasks()
    for sock in sockets:
        sock.schedule_ping()  # as engineio does on connect and on every PONG
        assert sock.last_ping is None
    assert asyncio.all_tasks() == tasks_before
    for sock in sockets:
        pkt = await asyncio.wait_for(sock.queue.get(), 1.0)
        assert pkt.packet_type == eio_packet.PING and pkt.encode() == "2"
        assert sock.last_ping is not None
    assert not eio._ping_due and not eio._ping_timers


async def test_a_socket_that_left_before_its_ping_is_not_kept_until_then() -> None:
    eio = LeanEngineServer(async_mode="aiohttp", ping_interval=600)
    sock = AsyncSocket(eio, "gone")
    sock.schedule_ping()
    left = weakref.ref(sock)
    del sock  # what engineio does with a socket that closed: nothing holds it any more
    gc.collect()
    assert left() is None
    await eio.shutdown()


async def test_a_closing_socket_is_not_pinged_and_shutdown_drops_the_timers() -> None:
    eio = LeanEngineServer(async_mode="aiohttp", ping_interval=0.05)
    closing, kept = AsyncSocket(eio, "closing"), AsyncSocket(eio, "kept")
    closing.schedule_ping()
    closing.closing = True
    other = AsyncSocket(eio, "other")
    other.schedule_ping()
    await asyncio.wait_for(other.queue.get(), 1.0)
    assert closing.queue.empty()
    kept.schedule_ping()
    await eio.shutdown()
    assert not eio._ping_due and not eio._ping_timers


async def test_engine_queue_keeps_order_and_join_waits_for_every_packet() -> None:
    queue = LeanEngineServer(async_mode="aiohttp").create_queue()
    await queue.join()  # nothing unfinished: returns at once
    for n in range(3):
        await queue.put(n)
    joined = asyncio.ensure_future(queue.join())
    got = []
    for _ in range(3):
        got.append(await queue.get())
        assert not joined.done()
        queue.task_done()
    await asyncio.wait_for(joined, 1.0)
    assert got == [0, 1, 2]
    queue.put_nowait(3)  # and a second join() after that
    joined = asyncio.ensure_future(queue.join())
    await queue.get()
    queue.task_done()
    await asyncio.wait_for(joined, 1.0)


async def test_engine_queues_share_no_state() -> None:
    eio = LeanEngineServer(async_mode="aiohttp")
    first, second = eio.create_queue(), eio.create_queue()
    waiting = asyncio.ensure_future(first.get())
    second.put_nowait("for second")
    await asyncio.sleep(0)  # let get() park itself; no event exists to await for this
    assert not waiting.done() and first.empty()
    assert await second.get() == "for second"
    first.put_nowait("for first")
    assert await asyncio.wait_for(waiting, 1.0) == "for first"


class RecordingConnection:
    """What a detached WebSocket's `DirectQueue` writes to, recorded."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.pinged = asyncio.Event()
        self.timed_out = asyncio.Event()

    def send_packet(self, pkt: Any) -> None:
        self.sent.append(pkt)
        self.pinged.set()

    def ping_timed_out(self) -> None:
        self.timed_out.set()


async def test_a_detached_socket_that_does_not_answer_a_ping_is_dropped() -> None:
    eio = LeanEngineServer(async_mode="aiohttp", ping_interval=0.05, ping_timeout=0.05)
    silent, answering = RecordingConnection(), RecordingConnection()
    for sid, connection in (("silent", silent), ("answering", answering)):
        sock = eio.sockets[sid] = AsyncSocket(eio, sid)  # the timers hold sockets weakly
        sock.queue = DirectQueue(cast(Any, connection))
        sock.schedule_ping()
        await asyncio.wait_for(connection.pinged.wait(), 1.0)
        assert [p.encode() for p in connection.sent] == ["2"]
        if connection is answering:
            sock.schedule_ping()  # what a PONG does: last_ping None, the next ping due
    await asyncio.wait_for(silent.timed_out.wait(), 1.0)
    assert not answering.timed_out.is_set()
    await eio.shutdown()
    assert not eio._pong_timers
