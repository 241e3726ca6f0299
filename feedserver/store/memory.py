"""The embedded default store: one fixed-size ring of slots per tenant, in process memory."""

from __future__ import annotations

from ..events import Event
from .base import TenantCounts, select_window


class _Ring:
    """Seq s lives in slot (s - 1) % capacity: append and lookup are O(1), no shifting."""

    __slots__ = ("held", "last_event_at", "latest", "slots")

    def __init__(self, capacity: int) -> None:
        self.slots: list[Event | None] = [None] * capacity
        self.latest = 0
        self.held = 0
        self.last_event_at: str | None = None

    def append(self, tenant: str, message: str, timestamp: str) -> Event:
        event = Event(self.latest + 1, tenant, message, timestamp)
        capacity = len(self.slots)
        self.slots[(event.seq - 1) % capacity] = event
        self.latest = event.seq
        self.held = min(self.held + 1, capacity)
        self.last_event_at = timestamp
        return event

    def window(self, lo: int, hi: int) -> list[Event]:
        capacity = len(self.slots)
        return [self.slots[(seq - 1) % capacity] for seq in range(lo, hi + 1)]  # type: ignore[misc]


class MemoryStore:
    """Not shared between processes and lost on restart; `FEED_STORE=redis://` is durable."""

    backend = "memory"

    def __init__(self, history_size: int) -> None:
        self._history_size = history_size
        self._rings: dict[str, _Ring] = {}

    def _ring(self, tenant: str) -> _Ring:
        ring = self._rings.get(tenant)
        if ring is None:
            ring = self._rings[tenant] = _Ring(self._history_size)
        return ring

    async def append(self, tenant: str, message: str, timestamp: str) -> Event:
        return self._ring(tenant).append(tenant, message, timestamp)

    async def query(
        self, tenant: str, *, limit: int, since: int | None = None, before: int | None = None
    ) -> list[Event]:
        ring = self._ring(tenant)
        lo, hi = select_window(
            ring.latest - ring.held + 1, ring.latest, limit=limit, since=since, before=before
        )
        return ring.window(lo, hi) if lo <= hi else []

    async def counts(self, tenant: str) -> TenantCounts:
        ring = self._ring(tenant)
        return TenantCounts(ring.latest, ring.held, ring.last_event_at)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._rings.clear()
