"""The embedded default store: one fixed-size ring of slots per tenant, in process memory."""

from __future__ import annotations

import secrets
import time
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Callable

from ..events import Event
from .base import TenantCounts, select_window


class _Ring:
    """Seq s lives in slot (s - 1) % capacity: append and lookup are O(1), no shifting.

    The slots grow as events come, up to `capacity`, so a tenant's ring takes memory for
    the events it holds: with 10,000 tenants of the default 1000 events each, a ring made
    whole at its first append took 8 KB per tenant (80 MB) before a second event came."""

    __slots__ = ("capacity", "held", "last_event_at", "latest", "slots")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        # Slot i exists once an event was put there (or below it): every held seq's does.
        self.slots: list[Event | None] = []
        self.latest = 0
        self.held = 0
        self.last_event_at: str | None = None

    def append(self, tenant: str, message: str, timestamp: str) -> Event:
        event = Event(self.latest + 1, tenant, message, timestamp)
        self._put(event)
        self.latest = event.seq
        self.held = min(self.held + 1, self.capacity)
        self.last_event_at = timestamp
        return event

    def _put(self, event: Event) -> None:
        slots, at = self.slots, (event.seq - 1) % self.capacity
        if at < len(slots):
            slots[at] = event
        else:
            # The next slot in order; or, in a resize, the first event kept, with empty
            # slots before it
            slots.extend([None] * (at - len(slots)))
            slots.append(event)

    def window(self, lo: int, hi: int) -> list[Event]:
        capacity = self.capacity
        return [self.slots[(seq - 1) % capacity] for seq in range(lo, hi + 1)]  # type: ignore[misc]

    def stamp(self, seq: int) -> str:
        """The timestamp of held event `seq`."""
        return self.slots[(seq - 1) % self.capacity].timestamp  # type: ignore[union-attr]

    def expire(self, before: str) -> None:
        """Drop the oldest events while they are stamped before `before`."""
        oldest = self.latest - self.held + 1
        if not self.held or self.stamp(oldest) >= before:
            return  # the common case of an append: one comparison
        dropped = bisect_left(range(oldest, self.latest + 1), before, key=self.stamp)
        # Cleared, not only forgotten: the messages of expired events are freed now. Held
        # seqs' slots all exist, so these slices replace and never insert.
        slots, capacity = self.slots, self.capacity
        start = (oldest - 1) % capacity
        before_wrap = min(dropped, capacity - start)
        slots[start : start + before_wrap] = [None] * before_wrap
        slots[: dropped - before_wrap] = [None] * (dropped - before_wrap)
        self.held -= dropped
        if not self.held:
            self.last_event_at = None  # as in Redis, whose newest entry is gone then

    def resize(self, capacity: int) -> None:
        """Hold at most `capacity` events from now on, keeping the newest of those held."""
        kept = self.window(self.latest - min(self.held, capacity) + 1, self.latest)
        self.capacity = capacity
        self.slots = []
        for event in kept:
            self._put(event)
        self.held = len(kept)


class _Claims:
    """One tenant's idempotency keys with their first event, in claim order.

    Every claim of a store uses the same TTL in practice, so claim order is also expiry
    order and expiring is popping from the front.
    """

    __slots__ = ("_keys",)

    def __init__(self) -> None:
        # OrderedDict: O(1) look at and pop of the oldest entry, however many were popped.
        self._keys: OrderedDict[str, tuple[float, Event]] = OrderedDict()

    def get(self, key: str, now: float) -> Event | None:
        keys = self._keys
        while keys and next(iter(keys.values()))[0] <= now:
            keys.popitem(last=False)
        claim = keys.get(key)
        return None if claim is None else claim[1]

    def put(self, key: str, event: Event, expires_at: float) -> None:
        self._keys[key] = (expires_at, event)


class MemoryStore:
    """Not shared between processes and lost on restart; `FEED_STORE=redis://` is durable."""

    backend = "memory"
    failures = 0  # memory does not fail

    def __init__(self, history_size: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._history_size = history_size
        self._rings: dict[str, _Ring] = {}
        self._claims: dict[str, _Claims] = {}
        self._clock = clock
        # Seqs start again at 1 in every process: each one is its own epoch.
        self._epoch = secrets.token_urlsafe(6)

    def _ring(self, tenant: str) -> _Ring:
        ring = self._rings.get(tenant)
        if ring is None:
            ring = self._rings[tenant] = _Ring(self._history_size)
        return ring

    def _ring_of(self, tenant: str, history_size: int | None, expire_before: str | None) -> _Ring:
        """The ring an append goes to: resized first when the tenant's length changed, its
        expired events dropped."""
        capacity = history_size or self._history_size
        ring = self._rings.get(tenant)
        if ring is None:
            ring = self._rings[tenant] = _Ring(capacity)
        elif ring.capacity != capacity:
            ring.resize(capacity)
        if expire_before is not None:
            ring.expire(expire_before)
        return ring

    async def append(
        self,
        tenant: str,
        message: str,
        timestamp: str,
        *,
        history_size: int | None = None,
        expire_before: str | None = None,
    ) -> Event:
        return self._ring_of(tenant, history_size, expire_before).append(tenant, message, timestamp)

    async def append_once(
        self,
        tenant: str,
        key: str,
        message: str,
        timestamp: str,
        *,
        ttl: int,
        history_size: int | None = None,
        expire_before: str | None = None,
    ) -> tuple[Event, bool]:
        # No await between the check and the claim: atomic on the event loop.
        claims = self._claims.get(tenant)
        if claims is None:
            claims = self._claims[tenant] = _Claims()
        now = self._clock()
        first = claims.get(key, now)
        if first is not None:
            return first, False
        ring = self._ring_of(tenant, history_size, expire_before)
        event = ring.append(tenant, message, timestamp)
        claims.put(key, event, now + ttl)
        return event, True

    async def query(
        self,
        tenant: str,
        *,
        limit: int,
        since: int | None = None,
        before: int | None = None,
        expire_before: str | None = None,
    ) -> list[Event]:
        ring = self._ring(tenant)
        if expire_before is not None:
            ring.expire(expire_before)
        lo, hi = select_window(
            ring.latest - ring.held + 1, ring.latest, limit=limit, since=since, before=before
        )
        return ring.window(lo, hi) if lo <= hi else []

    async def expire(self, tenant: str, before: str) -> None:
        ring = self._rings.get(tenant)
        if ring is not None:
            ring.expire(before)

    async def counts(self, tenant: str) -> TenantCounts:
        ring = self._ring(tenant)
        return TenantCounts(ring.latest, ring.held, ring.last_event_at)

    async def purge(self, tenant: str) -> None:
        self._rings.pop(tenant, None)
        self._claims.pop(tenant, None)

    async def epoch(self) -> str:
        return self._epoch

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._rings.clear()
        self._claims.clear()
