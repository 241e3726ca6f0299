"""When connections write: one scheduler for the loop, so that a busy server writes each
connection once for many events.

A connection's own packets (the connect sequence, acks, pings, pongs) are written at the
end of the loop pass that produced them: packets of one pass share a send(). Broadcast
frames are written after a pause that follows the previous flush (`PAUSE_PER_FLUSH` times
its duration, at most `max_pause`): at low rates that delays nothing, under load it caps
writing at a third of the loop's time, leaves the rest to ingest, and makes each send()
carry every frame that arrived in between (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

# Longest pause between two broadcast flushes (seconds): the most a busy server adds to a
# delivery's latency to write several events to a socket in one send().
DEFAULT_MAX_PAUSE = 0.020
# Measured at 1000 subscribers, 80 ev/s: 2 instead of 1 cut server CPU per delivery from
# ~9 to ~7 us (and the subscribers' own CPU as much) for ~5 ms more at p50 and p99.
PAUSE_PER_FLUSH = 2


class Writer(Protocol):
    def flush(self) -> None:
        """Write what is pending, if anything (the connection may have written it already)."""


class WriteScheduler:
    def __init__(self, max_pause: float = DEFAULT_MAX_PAUSE) -> None:
        if max_pause < 0:
            raise ValueError("max_pause must be >= 0")
        self.max_pause = max_pause
        self._soon: list[Writer] = []
        self._soon_handle: asyncio.Handle | None = None
        self._paced: list[Writer] = []
        self._paced_handle: asyncio.Handle | None = None
        self._quiet_until = 0.0  # loop time before which no paced flush starts

    def soon(self, writer: Writer) -> None:
        """Flush `writer` at the end of this loop pass."""
        self._soon.append(writer)
        if self._soon_handle is None:
            self._soon_handle = asyncio.get_running_loop().call_soon(self._flush_soon)

    def paced(self, writer: Writer) -> None:
        """Flush `writer` with the next paced flush (call once per pending batch)."""
        self._paced.append(writer)
        if self._paced_handle is not None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() >= self._quiet_until:
            self._paced_handle = loop.call_soon(self._flush_paced)
        else:
            self._paced_handle = loop.call_at(self._quiet_until, self._flush_paced)

    def _flush_soon(self) -> None:
        self._soon_handle = None
        writers, self._soon = self._soon, []
        for writer in writers:
            writer.flush()

    def _flush_paced(self) -> None:
        self._paced_handle = None
        writers, self._paced = self._paced, []
        loop = asyncio.get_running_loop()
        started = loop.time()
        for writer in writers:
            writer.flush()
        ended = loop.time()
        self._quiet_until = ended + min((ended - started) * PAUSE_PER_FLUSH, self.max_pause)

    def close(self) -> None:
        for handle in (self._soon_handle, self._paced_handle):
            if handle is not None:
                handle.cancel()
        self._soon_handle = self._paced_handle = None
        self._soon.clear()
        self._paced.clear()
