"""A python-socketio client subscribed to one tenant that records what it receives.

    async with subscribed(server_url, "tenant_a") as sub:
        ...post events...
        await sub.wait_for_seq(10)
        assert sub.seqs == list(range(1, 11))

Waiting is on the client's own events (no sleeps); a test fails after `within` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import socketio

DEFAULT_TIMEOUT = 15.0


class Subscriber:
    def __init__(self) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.established: dict[str, Any] | None = None
        self.initial: list[dict[str, Any]] = []
        self.caught_up = False  # initial_events received
        self.live: list[dict[str, Any]] = []
        self.system: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        for name, handler in (
            ("connection_established", self._on_established),
            ("initial_events", self._on_initial),
            ("event_created", self._on_event),
            ("system_message", self._on_system),
            ("disconnect", self._on_disconnect),
        ):
            self.client.on(name, handler)

    @property
    def seqs(self) -> list[int]:
        """Seqs of every event received, catch-up first, in arrival order."""
        return [e["seq"] for e in self.initial + self.live]

    @property
    def last_seq(self) -> int:
        seqs = self.seqs
        return seqs[-1] if seqs else (self.established or {}).get("latestSeq", 0)

    async def wait_for_seq(self, seq: int, within: float = DEFAULT_TIMEOUT) -> None:
        """Wait until the last event received has `seq` or a later one."""
        await self.wait_for(lambda: self.last_seq >= seq, within)

    async def wait_for(
        self, condition: Callable[[], bool], within: float = DEFAULT_TIMEOUT
    ) -> None:
        try:
            async with asyncio.timeout(within):
                while not condition():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"condition not met within {within}s; received seqs {self.seqs}"
            ) from None

    async def _on_established(self, info: dict[str, Any], *_: Any) -> None:
        self.established = info
        self._changed.set()

    async def _on_initial(self, events: list[dict[str, Any]], *_: Any) -> None:
        self.initial = events
        self.caught_up = True
        self._changed.set()

    async def _on_event(self, event: dict[str, Any], *_: Any) -> None:
        self.live.append(event)
        self._changed.set()

    async def _on_system(self, notice: dict[str, Any], *_: Any) -> None:
        self.system.append(notice)
        self._changed.set()

    async def _on_disconnect(self, *_: Any) -> None:
        self._changed.set()


@contextlib.asynccontextmanager
async def subscribed(
    url: str, tenant: str, *, transport: str = "websocket", within: float = DEFAULT_TIMEOUT
) -> AsyncIterator[Subscriber]:
    """A connected subscriber that has received its catch-up (`initial_events`)."""
    sub = Subscriber()
    await sub.client.connect(
        url, auth={"tenant": tenant}, transports=[transport], socketio_path="socket.io"
    )
    try:
        await sub.wait_for(lambda: sub.caught_up, within)
        yield sub
    finally:
        await sub.client.disconnect()
