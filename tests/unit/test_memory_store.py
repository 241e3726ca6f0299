"""The memory store's per-tenant ring buffer and the window and expiry rules every store
shares."""

from __future__ import annotations

import asyncio
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from feedserver.events import Event
from feedserver.store import MemoryStore, TenantCounts, select_window
from feedserver.store.base import unexpired

TS = "2026-01-20T10:30:00.000Z"


async def filled(capacity: int, count: int, tenant: str = "tenant_a") -> MemoryStore:
    store = MemoryStore(capacity)
    for i in range(1, count + 1):
        await store.append(tenant, f"m{i}", TS)
    return store


async def seqs(store: MemoryStore, **query: int | None) -> list[int]:
    query.setdefault("limit", 1000)
    events = await store.query("tenant_a", **query)  # type: ignore[arg-type]
    return [e.seq for e in events]


# -- the ring -----------------------------------------------------------------------------


async def test_seq_starts_at_one_and_increases_by_one() -> None:
    store = MemoryStore(3)
    events = [await store.append("tenant_a", f"m{i}", TS) for i in range(7)]
    assert [e.seq for e in events] == list(range(1, 8))
    assert [e.message for e in events] == [f"m{i}" for i in range(7)]
    assert all(e.tenant_id == "tenant_a" and e.timestamp == TS for e in events)


async def test_wrap_around_keeps_the_newest_capacity_events_in_order() -> None:
    store = await filled(capacity=4, count=11)
    assert await seqs(store) == [8, 9, 10, 11]
    assert [e.message for e in await store.query("tenant_a", limit=10)] == [
        "m8",
        "m9",
        "m10",
        "m11",
    ]
    assert await store.counts("tenant_a") == TenantCounts(11, 4, TS)


@pytest.mark.parametrize("count", [0, 1, 4, 5, 8, 9, 13])
async def test_held_and_oldest_follow_the_count(count: int) -> None:
    store = await filled(capacity=4, count=count)
    counts = await store.counts("tenant_a")
    assert counts.latest_seq == count
    assert counts.held == min(count, 4)
    assert await seqs(store) == list(range(max(1, count - 3), count + 1))


async def test_each_tenant_has_its_own_seq_and_ring() -> None:
    store = MemoryStore(2)
    await store.append("tenant_a", "a1", TS)
    await store.append("tenant_a", "a2", TS)
    await store.append("tenant_a", "a3", TS)
    b1 = await store.append("tenant_b", "b1", TS)
    assert b1.seq == 1 and b1.id == "tenant_b-1"
    assert [e.message for e in await store.query("tenant_b", limit=10)] == ["b1"]
    assert (await store.counts("tenant_a")).latest_seq == 3
    assert (await store.counts("tenant_b")).latest_seq == 1


async def test_a_tenant_takes_memory_for_the_events_it_holds_not_its_capacity() -> None:
    store = MemoryStore(10_000)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for tenant in range(100):
            await store.append(f"tenant_{tenant}", "m", TS)
            await store.counts(f"unposted_{tenant}")  # a read makes a ring too
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 200_000  # rings made whole at once: 200 x 80 KB


def stamp(second: int) -> str:
    return f"2026-01-20T10:{second // 60:02d}:{second % 60:02d}.000Z"


# An append at `capacity` (a changed tenant length resizes the ring first) after `gap`
# seconds, or an expiry of what is older than `age` seconds.
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 6), st.integers(0, 2)),
        st.tuples(st.just("expire"), st.integers(0, 8), st.just(0)),
    ),
    max_size=60,
)


@given(_OPS)
def test_the_ring_holds_what_a_list_of_the_newest_events_holds(
    ops: list[tuple[str, int, int]],
) -> None:
    """Appends, resizes and expiries in any order, against the plain model: the newest
    `capacity` events, less those stamped before the expiry's cutoff."""

    async def run() -> None:
        store = MemoryStore(3)
        held: list[tuple[int, str]] = []
        latest, now, last_at = 0, 0, None
        for op, number, gap in ops:
            if op == "append":
                now += gap
                event = await store.append(
                    "tenant_a", f"m{latest + 1}", stamp(now), history_size=number
                )
                latest, last_at = latest + 1, stamp(now)
                held = [*held[-number:], (latest, stamp(now))][-number:]
                assert event.seq == latest
            else:
                cutoff = stamp(max(0, now - number))
                await store.expire("tenant_a", cutoff)
                held = [(seq, ts) for seq, ts in held if ts >= cutoff]
                last_at = last_at if held else None
            events = await store.query("tenant_a", limit=1000)
            assert [(e.seq, e.timestamp) for e in events] == held
            assert [e.message for e in events] == [f"m{seq}" for seq, _ in held]
            assert await store.counts("tenant_a") == TenantCounts(latest, len(held), last_at)

    asyncio.run(run())


async def test_an_unknown_tenant_is_empty() -> None:
    store = MemoryStore(5)
    assert await store.query("tenant_x", limit=5) == []
    counts = await store.counts("tenant_x")
    assert counts == TenantCounts(0, 0, None)


async def test_last_event_at_is_the_newest_timestamp() -> None:
    store = MemoryStore(2)
    await store.append("tenant_a", "x", "2026-01-20T10:30:00.000Z")
    await store.append("tenant_a", "y", "2026-01-20T10:31:00.000Z")
    assert (await store.counts("tenant_a")).last_event_at == "2026-01-20T10:31:00.000Z"


async def test_ping_and_close() -> None:
    store = await filled(capacity=3, count=2)
    assert store.backend == "memory"
    assert await store.ping() is True
    await store.close()
    assert await store.counts("tenant_a") == TenantCounts(0, 0, None)


# -- since / before / limit through the store -----------------------------------------------


async def test_no_cursor_returns_the_newest_limit() -> None:
    store = await filled(capacity=10, count=25)
    assert await seqs(store, limit=3) == [23, 24, 25]
    assert await seqs(store, limit=1) == [25]
    assert await seqs(store, limit=500) == list(range(16, 26))


async def test_since_pages_forward_from_the_oldest_after_it() -> None:
    store = await filled(capacity=10, count=25)
    assert await seqs(store, since=17, limit=3) == [18, 19, 20]
    assert await seqs(store, since=23, limit=3) == [24, 25]
    assert await seqs(store, since=25, limit=3) == []
    assert await seqs(store, since=99, limit=3) == []
    # Older than the buffer: starts at the oldest held event.
    assert await seqs(store, since=2, limit=3) == [16, 17, 18]
    assert await seqs(store, since=0, limit=100) == list(range(16, 26))


async def test_before_pages_back_from_the_newest_below_it() -> None:
    store = await filled(capacity=10, count=25)
    assert await seqs(store, before=20, limit=3) == [17, 18, 19]
    assert await seqs(store, before=18, limit=5) == [16, 17]
    assert await seqs(store, before=16, limit=5) == []
    assert await seqs(store, before=0, limit=5) == []
    assert await seqs(store, before=1000, limit=2) == [24, 25]


async def test_since_and_before_give_the_newest_limit_in_between() -> None:
    store = await filled(capacity=10, count=25)
    assert await seqs(store, since=17, before=24, limit=100) == [18, 19, 20, 21, 22, 23]
    assert await seqs(store, since=17, before=24, limit=2) == [22, 23]
    assert await seqs(store, since=20, before=21, limit=5) == []
    assert await seqs(store, since=22, before=20, limit=5) == []
    assert await seqs(store, since=1, before=18, limit=5) == [16, 17]


# -- select_window, the pure rule -----------------------------------------------------------


@pytest.mark.parametrize(
    ("oldest", "latest", "limit", "since", "before", "expected"),
    [
        (1, 0, 50, None, None, None),  # nothing held
        (1, 10, 50, None, None, (1, 10)),
        (1, 10, 3, None, None, (8, 10)),
        (1, 10, 3, 0, None, (1, 3)),
        (1, 10, 3, 8, None, (9, 10)),
        (1, 10, 3, 10, None, None),
        (5, 10, 3, 1, None, (5, 7)),
        (1, 10, 3, None, 5, (2, 4)),
        (1, 10, 3, None, 1, None),
        (1, 10, 3, None, 11, (8, 10)),
        (1, 10, 3, 2, 9, (6, 8)),
        (1, 10, 10, 2, 9, (3, 8)),
        (1, 10, 3, 5, 6, None),
    ],
)
def test_select_window_examples(
    oldest: int,
    latest: int,
    limit: int,
    since: int | None,
    before: int | None,
    expected: tuple[int, int] | None,
) -> None:
    lo, hi = select_window(oldest, latest, limit=limit, since=since, before=before)
    if expected is None:
        assert lo > hi
    else:
        assert (lo, hi) == expected


@given(
    oldest=st.integers(1, 60),
    held=st.integers(0, 60),
    limit=st.integers(1, 70),
    since=st.none() | st.integers(0, 140),
    before=st.none() | st.integers(0, 140),
)
def test_select_window_matches_the_definition(
    oldest: int, held: int, limit: int, since: int | None, before: int | None
) -> None:
    latest = oldest + held - 1
    candidates = [
        s
        for s in range(oldest, latest + 1)
        if (since is None or s > since) and (before is None or s < before)
    ]
    expected = candidates[:limit] if since is not None and before is None else candidates[-limit:]
    lo, hi = select_window(oldest, latest, limit=limit, since=since, before=before)
    assert list(range(lo, hi + 1)) == expected


# -- unexpired, the pure rule of retention ---------------------------------------------------


@given(
    seconds=st.lists(st.integers(0, 59), max_size=30).map(sorted),
    cutoff=st.integers(0, 60),
)
def test_unexpired_keeps_exactly_the_events_stamped_at_or_after_the_cutoff(
    seconds: list[int], cutoff: int
) -> None:
    events = [
        Event(seq, "tenant_a", "m", f"2026-01-20T10:30:{second:02d}.000Z")
        for seq, second in enumerate(seconds, 1)
    ]
    before = f"2026-01-20T10:30:{cutoff:02d}.000Z" if cutoff < 60 else "2026-01-20T10:31:00.000Z"
    kept = unexpired(events, before)
    assert kept == [e for e in events if e.timestamp >= before]
    assert kept == events[len(events) - len(kept) :]  # the old end goes: no gap


async def test_expiry_frees_the_slots_of_expired_events() -> None:
    store = MemoryStore(4)
    for second in range(6):  # holds 3..6, wrapped round the end of the slots
        await store.append("tenant_a", f"m{second}", f"2026-01-20T10:30:{second:02d}.000Z")
    await store.expire("tenant_a", "2026-01-20T10:30:05.000Z")
    ring = store._rings["tenant_a"]
    assert [e.seq if e else None for e in ring.slots] == [None, 6, None, None]
