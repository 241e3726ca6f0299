"""Engine.IO heartbeats on shared timers: a PING `ping_interval` after the handshake and
after each PONG; no PONG within `ping_timeout` of a PING ends the connection.

Pings due within one tick share one timer, so 10,000 sockets need at most
ping_interval / tick timers, not a sleeping task each (1.5 KB and its CPU per socket).
"""

from __future__ import annotations

import asyncio
import math
import weakref
from typing import Protocol

# A ping is at most one tick early; the tick is small next to a short interval (the
# conformance suites use 300 ms) and 100 ms for the usual 25 s.
MAX_TICK = 0.1


class Pinged(Protocol):
    awaiting_pong: float | None  # loop time of the unanswered PING

    def ping(self) -> bool:
        """Send a PING; False if the socket is gone."""
        ...

    def ping_timed_out(self) -> None: ...


class Heartbeat:
    def __init__(self, interval: float, timeout: float) -> None:
        self.interval = interval
        self.timeout = timeout
        self._tick = min(MAX_TICK, interval / 20)  # interval > 0: the engine checks it
        # tick number -> sockets. Weak: a socket that leaves before its ping (most, under
        # connection churn) is freed when it closes, not held for up to ping_interval.
        self._due: dict[int, list[weakref.ref[Pinged]]] = {}
        self._ping_timers: dict[int, asyncio.TimerHandle] = {}
        self._pong_checks: dict[int, asyncio.TimerHandle] = {}  # ping tick -> its check

    def schedule(self, sock: Pinged) -> None:
        """Ping `sock` `interval` from now, or up to one tick before: never later, so the
        connection of a client that does not answer ends `interval + timeout` after its
        last sign of life, as the Node server's does."""
        loop = asyncio.get_running_loop()
        tick = math.floor((loop.time() + self.interval) / self._tick)
        due = self._due.get(tick)
        if due is None:
            self._due[tick] = due = []
            self._ping_timers[tick] = loop.call_at(tick * self._tick, self._ping, tick)
        due.append(weakref.ref(sock))

    def pong(self, sock: Pinged) -> None:
        """A PONG: the next ping is `interval` away. A PONG nobody asked for changes
        nothing (one ping schedule per socket, whatever the client sends)."""
        if sock.awaiting_pong is not None:
            sock.awaiting_pong = None
            self.schedule(sock)

    def _ping(self, tick: int) -> None:
        del self._ping_timers[tick]
        loop = asyncio.get_running_loop()
        now = loop.time()
        pinged = []
        for ref in self._due.pop(tick, ()):
            sock = ref()
            if sock is not None and sock.ping():
                sock.awaiting_pong = now
                pinged.append(ref)
        if pinged:
            self._pong_checks[tick] = loop.call_at(
                now + self.timeout, self._check, tick, now, pinged
            )

    def _check(self, tick: int, pinged_at: float, refs: list[weakref.ref[Pinged]]) -> None:
        del self._pong_checks[tick]
        for ref in refs:
            sock = ref()
            if sock is not None and sock.awaiting_pong == pinged_at:
                sock.ping_timed_out()

    def close(self) -> None:
        for handle in (*self._ping_timers.values(), *self._pong_checks.values()):
            handle.cancel()
        self._ping_timers.clear()
        self._pong_checks.clear()
        self._due.clear()
