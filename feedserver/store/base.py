"""The engine interface every store implements, and the window rule they share."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from typing import Protocol

from ..events import Event


@dataclass(frozen=True, slots=True)
class TenantCounts:
    latest_seq: int  # events created so far (seq is contiguous from 1)
    held: int  # events still in the ring buffer
    last_event_at: str | None


class EventStore(Protocol):
    """Per-tenant ring buffer of events with a per-tenant, gap-free `seq`."""

    backend: str
    failures: int  # operations that failed since start (read by the metrics)

    async def append(
        self,
        tenant: str,
        message: str,
        timestamp: str,
        *,
        history_size: int | None = None,
        expire_before: str | None = None,
    ) -> Event:
        """Allocate the next seq for `tenant` and store the event atomically.

        The ring then holds the newest `history_size` events (None: the store's own
        length, FEED_HISTORY_SIZE): a tenant whose length changed is trimmed, or grows, from
        this append on. With `expire_before`, the events stamped before it are dropped too
        (see `expire`).
        """
        ...

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
        """`append` under an idempotency key: `(event, True)` for the first claim of `key`.

        When `tenant` claimed `key` in the last `ttl` seconds, nothing is stored and the
        event of that first claim is returned with False (even if the ring buffer has
        dropped it since). Check, append and claim are one atomic step, so concurrent
        calls with one key create exactly one event.
        """
        ...

    async def epoch(self) -> str:
        """Names this store's seq numbering: an offset read under one epoch means the
        same event wherever the same epoch is reported, and nothing under another."""
        ...

    async def query(
        self,
        tenant: str,
        *,
        limit: int,
        since: int | None = None,
        before: int | None = None,
        expire_before: str | None = None,
    ) -> list[Event]:
        """Events held with since < seq < before, oldest first (see `select_window`).

        With `expire_before`, the events stamped before it are dropped first (`expire`): the
        window is chosen among the others, and none of them is returned.
        """
        ...

    async def expire(self, tenant: str, before: str) -> None:
        """Drop the held events of `tenant` stamped before `before` (a timestamp of the
        same shape; see `unexpired`), from the oldest on: the seqs held stay contiguous."""
        ...

    async def counts(self, tenant: str) -> TenantCounts: ...

    async def purge(self, tenant: str) -> None:
        """Forget everything of `tenant`: events, seqs, idempotency keys (it was deleted).
        Its seqs start again at 1 if it is created again."""
        ...

    async def ping(self) -> bool:
        """True when the store answers; never raises."""
        ...

    async def close(self) -> None: ...


def select_window(
    oldest: int, latest: int, *, limit: int, since: int | None, before: int | None
) -> tuple[int, int]:
    """The inclusive seq range a query returns, given the held range [oldest, latest].

    With only `since` the window is the oldest `limit` events after it (paging forward);
    otherwise it is the newest `limit` events below `before` (or overall). An empty
    window has lo > hi.
    """
    lo, hi = oldest, latest
    if since is not None:
        lo = max(lo, since + 1)
    if before is not None:
        hi = min(hi, before - 1)
    if since is not None and before is None:
        return lo, min(hi, lo + limit - 1)
    return max(lo, hi - limit + 1), hi


def unexpired(events: list[Event], before: str) -> list[Event]:
    """`events` (oldest first) without those stamped before `before`.

    Events are stamped in seq order, so the expired ones are a prefix: what is left stays
    contiguous. (Nodes' clocks are assumed to agree to within the few milliseconds that
    could put an event stamped a little earlier after a later one.)
    """
    return events[bisect_left(events, before, key=_timestamp) :]


def _timestamp(event: Event) -> str:
    return event.timestamp
