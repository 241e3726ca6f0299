"""Engine.IO's server side of a socket, with fewer per-socket asyncio objects.

python-engineio keeps each idle WebSocket in five tasks beside aiohttp's own: a writer, the
`Queue.get` that its `poll()` wraps in `asyncio.wait_for`, a `websocket_wait` task per
received message, and a `_send_ping` task sleeping `ping_interval`. Each task costs about
1.5 KB and its creation CPU (docs/benchmarks.md, "10k connections").

`LeanEngineServer` is `engineio.AsyncServer` whose sockets' pings are timer callbacks
instead of a sleeping `_send_ping` task each (same times, same PING packet), and whose
sockets' packet queues (`EngineQueue`) leave out two deques that they never use. Every
WebSocket leaves aiohttp and engineio's handler altogether (`eio_websocket`); its queue
is a `DirectQueue`, and since it has no receive timeout, a ping it has not answered
within `ping_timeout` drops its connection (`_check_pongs`).

Every engineio / aiohttp detail this relies on is in `REQUIRED_INTERNALS`; `check_internals()`
verifies them (when the server is built, and in tests/unit/test_eio_transport_internals.py),
including digests of the engineio functions whose behaviour is replaced here, so an upgrade
that changes them fails loudly instead of drifting apart.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import inspect
import math
import time
import weakref
from typing import Any, ClassVar, Literal

import engineio
import socketio
from engineio import packet as eio_packet
from engineio.async_socket import AsyncSocket

from .eio_websocket import DirectQueue
from .internals import InternalsChanged

# Pings due within one tick share one timer: 10,000 sockets need at most
# ping_interval / PING_TICK timers instead of 10,000 sleeping tasks.
PING_TICK = 0.1


class EngineQueue(asyncio.Queue[Any]):
    """engineio's packet queue: an unbounded `asyncio.Queue` without two idle deques.

    An empty deque costs 760 bytes, and asyncio.Queue makes four. `_putters` holds put()
    calls waiting for room, which an unbounded queue never has: every queue shares one that
    holds nothing. The deque of join() waiters is made by the first join(), which only
    engineio's `close(wait=True)` calls. `_getters` stays as it is (`recovery`
    reads it).
    """

    _no_putters: ClassVar[collections.deque[Any]] = collections.deque(maxlen=0)

    def __init__(self) -> None:
        super().__init__()
        self._putters = self._no_putters
        self._finished = _JoinEvent()


class _JoinEvent(asyncio.Event):
    """`asyncio.Event`, initially set, whose deque of waiters is made by the first wait()."""

    # What set() iterates until someone waits: nobody.
    _waiters: collections.deque[Any] = collections.deque(maxlen=0)

    def __init__(self) -> None:  # not Event.__init__, which makes the deque
        self._value = True  # a new queue has no unfinished packets

    async def wait(self) -> Literal[True]:
        if "_waiters" not in vars(self):
            self._waiters = collections.deque()
        return await super().wait()


class LeanEngineServer(engineio.AsyncServer):  # type: ignore[misc]
    """`engineio.AsyncServer` whose sockets are pinged by shared timers, not a task each,
    and queue their packets in an `EngineQueue`.

    engineio's `AsyncSocket.schedule_ping` starts `_send_ping` as a background task, which
    sleeps `ping_interval`, then stamps `last_ping` and queues a PING unless the socket is
    closing. Here that start puts the socket in the batch due at the next `PING_TICK` after
    `ping_interval`, and one timer per batch does the same for all of them, synchronously
    (the queue is unbounded, so engineio's `send` never waits either). A ping is at most one
    tick late, far inside the client's `pingTimeout`. Ping timeouts are found by engineio's
    client monitor, and for WebSockets by `_check_pongs`, which drops the connection.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        check_internals(self)
        # tick number -> sockets. Weak: a socket that leaves before its ping (most, under
        # connection churn) is freed when it closes, not held for up to ping_interval.
        self._ping_due: dict[int, list[weakref.ref[AsyncSocket]]] = {}
        self._ping_timers: dict[int, asyncio.TimerHandle] = {}
        self._pong_timers: dict[int, asyncio.TimerHandle] = {}  # ping tick -> its check

    def create_queue(self) -> EngineQueue:
        return EngineQueue()

    def start_background_task(self, target: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(target, "__func__", None) is AsyncSocket._send_ping:
            self._schedule_ping(target.__self__)
            return None  # schedule_ping ignores what this returns
        return super().start_background_task(target, *args, **kwargs)

    def _schedule_ping(self, sock: AsyncSocket) -> None:
        loop = asyncio.get_running_loop()
        tick = math.ceil((loop.time() + self.ping_interval) / PING_TICK)
        due = self._ping_due.get(tick)
        if due is None:
            self._ping_due[tick] = due = []
            self._ping_timers[tick] = loop.call_at(tick * PING_TICK, self._ping, tick)
        due.append(weakref.ref(sock))

    def _ping(self, tick: int) -> None:
        del self._ping_timers[tick]
        now = time.time()
        ping = eio_packet.Packet(eio_packet.PING)  # encodes to "2": one for the whole batch
        pinged = []
        for ref in self._ping_due.pop(tick):
            sock = ref()
            if sock is not None and not sock.closing and not sock.closed:
                sock.last_ping = now
                sock.queue.put_nowait(ping)
                if isinstance(sock.queue, DirectQueue):
                    pinged.append(ref)
        if pinged:
            # A detached WebSocket has no receive timeout: its connection is dropped if
            # the PONG has not come when engineio would call the client gone.
            self._pong_timers[tick] = asyncio.get_running_loop().call_later(
                self.ping_timeout + PING_TICK, self._check_pongs, tick, now, pinged
            )

    def _check_pongs(
        self, tick: int, pinged_at: float, sockets: list[weakref.ref[AsyncSocket]]
    ) -> None:
        del self._pong_timers[tick]
        for ref in sockets:
            sock = ref()
            # a PONG sets last_ping to None (schedule_ping), the next ping to a later time
            if sock is not None and sock.last_ping == pinged_at:  # all on a DirectQueue
                sock.queue.connection.ping_timed_out()

    def on(self, event: str, handler: Any = None) -> Any:
        """engineio's `on`; the `disconnect` handler (socketio's) is wrapped to end a
        long-polling client's pending poll when the client closes (`_end_poll_on_close`)."""
        if event == "disconnect" and handler is not None:
            handler = self._end_poll_on_close(handler)
        return super().on(event, handler)

    def _end_poll_on_close(self, handler: Any) -> Any:
        """A long-polling client that sends CLOSE waits for its pending GET to end (the
        python-socketio client's `disconnect()` does): engineio closes the socket with
        abort=True and leaves the poll open until `ping_interval` runs out, ~30 s. The Node
        server answers it with a NOOP at once (the Engine.IO suite checks that); so does
        this."""

        async def on_disconnect(sid: str, reason: Any) -> Any:
            sock = self.sockets.get(sid)
            try:
                return await handler(sid, reason)
            finally:
                if (
                    reason == self.reason.CLIENT_DISCONNECT
                    and sock is not None
                    and not isinstance(sock.queue, DirectQueue)
                ):
                    sock.queue.put_nowait(eio_packet.Packet(eio_packet.NOOP))
                    sock.queue.put_nowait(None)  # engineio's end-of-connection sentinel

        return on_disconnect

    async def shutdown(self) -> None:
        for timer in (*self._ping_timers.values(), *self._pong_timers.values()):
            timer.cancel()
        self._ping_timers.clear()
        self._pong_timers.clear()
        self._ping_due.clear()
        await super().shutdown()


class LeanSocketServer(socketio.AsyncServer):  # type: ignore[misc]
    """`socketio.AsyncServer` on a `LeanEngineServer`."""

    def _engineio_server_class(self) -> type[engineio.AsyncServer]:
        return LeanEngineServer


# -- the internals we rely on -------------------------------------------------------------

# sha256 of the engineio functions whose behaviour this module copies or replaces; a new
# digest means python-engineio changed them: compare with the code above, then update.
COPIED_FUNCTIONS = {
    "schedule_ping": "fe316639159cd70d34cdb911a055fc1a0056ff15615b8460a1ab6593c95e9372",
    "_send_ping": "67db82a704ea49d0ad34e967728cec06020d036431d67c1612162a907526cb43",
    "send": "0437276ccba7ab091471e29f4bc6a0f178da7b16a590c707d6c69a97609e6d14",
    "check_ping_timeout": "77616d5ca7809257d5d1866f271e7cc3e114663cfe2772cafda63a7393c880d0",
}

REQUIRED_INTERNALS = (
    "engineio AsyncSocket: server, sid, queue, connected, upgrading, upgraded, closing, "
    "closed, last_ping, receive(pkt), close(wait=, abort=, reason=); the functions in "
    "COPIED_FUNCTIONS unchanged (by digest)",
    "engineio AsyncSocket._upgrade_websocket hands the driver self._websocket_handler",
    "engineio AsyncServer: max_http_buffer_size, ping_interval, ping_timeout, logger, "
    "reason.TRANSPORT_CLOSE, create_queue() (called without arguments), "
    "start_background_task(target)",
    "asyncio.Queue: put() waits only while full(), __init__ makes _putters and _finished = "
    "locks.Event(); asyncio.Event: __init__ sets only _waiters and _value, wait() appends to "
    "_waiters, set() iterates it",
    "engineio packet: Packet(PING)",
    "socketio AsyncServer._engineio_server_class()",
)


def function_digest(function: Any) -> str:
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()


def check_internals(eio: engineio.AsyncServer) -> None:
    """Raise `InternalsChanged` naming what is missing; see `REQUIRED_INTERNALS`."""
    problems: list[str] = []

    def need(ok: bool, what: str) -> None:
        if not ok:
            problems.append(what)

    for name, digest in COPIED_FUNCTIONS.items():
        function = getattr(AsyncSocket, name, None)
        need(
            function is not None and function_digest(function) == digest,
            f"AsyncSocket.{name} unchanged",
        )
    base_init = inspect.getsource(engineio.base_socket.BaseSocket.__init__)
    for attr in ("server", "sid", "queue", "last_ping", "connected", "upgrading", "upgraded"):
        need(f"self.{attr} =" in base_init, f"BaseSocket sets self.{attr}")
    upgrade_src = inspect.getsource(AsyncSocket._upgrade_websocket)
    need(
        "self._websocket_handler, self.server)" in upgrade_src,
        "_upgrade_websocket passes _websocket_handler to the driver",
    )
    for attr in ("max_http_buffer_size", "ping_interval", "ping_timeout", "logger"):
        need(hasattr(eio, attr), f"engineio AsyncServer.{attr}")
    need(hasattr(eio.reason, "TRANSPORT_CLOSE"), "engineio reason.TRANSPORT_CLOSE")
    need(
        "self.server.create_queue()" in inspect.getsource(engineio.base_socket.BaseSocket.__init__),
        "BaseSocket makes its queue with server.create_queue()",
    )
    need("while self.full():" in inspect.getsource(asyncio.Queue.put), "Queue.put waits if full")
    queue_init = inspect.getsource(asyncio.Queue.__init__)
    need(
        "self._putters = collections.deque()" in queue_init
        and "self._finished = locks.Event()" in queue_init,
        "asyncio.Queue.__init__ makes _putters and _finished",
    )
    event_init = inspect.getsource(asyncio.Event.__init__)
    need(
        event_init.count("self.") == 2 and "self._waiters = collections.deque()" in event_init,
        "asyncio.Event.__init__ sets only _waiters and _value",
    )
    need(
        "self._waiters.append(fut)" in inspect.getsource(asyncio.Event.wait)
        and "for fut in self._waiters:" in inspect.getsource(asyncio.Event.set),
        "asyncio.Event.wait/set use _waiters",
    )
    need(hasattr(eio_packet, "PING"), "engineio packet.PING")
    need(
        hasattr(socketio.AsyncServer, "_engineio_server_class"),
        "socketio AsyncServer._engineio_server_class",
    )
    if problems:
        raise InternalsChanged(
            "feedserver.eio_transport relies on internals that changed: " + "; ".join(problems)
        )
