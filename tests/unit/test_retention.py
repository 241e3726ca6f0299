"""Retention max-age through core.Feed over the memory store, on a clock the test moves:
what a read, a catch-up and a recovery return once events expire, and the idle sweep."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from feedserver.core import Feed, RetentionSweep
from feedserver.events import Event, UtcClock
from feedserver.store import MemoryStore
from feedserver.tenants import Tenant, TenantDirectory, TenantSettings
from tests.faulty_store import FlakyExpireStore
from tests.waiting import WITHIN

START_NS = int(datetime(2026, 1, 20, 10, 30, tzinfo=UTC).timestamp()) * 1_000_000_000
SECOND_NS = 1_000_000_000


class Clock:
    """The time the feed stamps and expires by; the test moves it."""

    def __init__(self) -> None:
        self.now_ns = START_NS

    def advance(self, seconds: float) -> None:
        self.now_ns += int(seconds * SECOND_NS)


def make_feed(
    clock: Clock,
    *,
    retention: int | None = None,
    server_retention: int | None = None,
    history_size: int = 100,
    initial_events: int = 2,
    store: MemoryStore | None = None,
) -> Feed:
    settings = TenantSettings(retention_seconds=retention)
    return Feed(
        store or MemoryStore(history_size),
        TenantDirectory([Tenant("tenant_a", settings=settings), Tenant("tenant_b")]),
        history_size=history_size,
        initial_events=initial_events,
        max_message_length=20,
        retention_seconds=server_retention,
        clock=UtcClock(lambda: clock.now_ns),
    )


async def publish(feed: Feed, count: int, tenant: str = "tenant_a") -> list[int]:
    return [(await feed.publish(tenant, {"message": f"m{i}"})).event.seq for i in range(count)]


def seqs(events: list[Event]) -> list[int]:
    return [e.seq for e in events]


async def held(feed: Feed, tenant: str = "tenant_a") -> int:
    """What the store holds, read without expiring anything."""
    return (await feed.store.counts(tenant)).held


async def test_an_expired_event_is_in_no_read_and_the_next_publish_drops_it() -> None:
    clock = Clock()
    feed = make_feed(clock, retention=60, initial_events=10)
    await publish(feed, 3)  # 1..3 at 0 s
    clock.advance(30)
    await publish(feed, 2)  # 4, 5 at 30 s
    clock.advance(30)  # 1..3 are 60 s old: at the limit, still kept
    assert seqs((await feed.history("tenant_a", limit=50)).events) == [1, 2, 3, 4, 5]
    clock.advance(0.001)
    history = await feed.history("tenant_a", limit=50)
    assert (seqs(history.events), history.latest_seq) == ([4, 5], 5)
    assert seqs((await feed.history("tenant_a", limit=50, since=0)).events) == [4, 5]
    assert seqs((await feed.catch_up("tenant_a", None)).events) == [4, 5]
    clock.advance(30)
    assert await publish(feed, 1) == [6]
    assert await held(feed) == 1  # 4 and 5 went with that append


async def test_recovery_from_an_offset_whose_events_expired_starts_afresh() -> None:
    """As when the ring buffer overflowed: not recovered, and not a partial replay."""
    clock = Clock()
    feed = make_feed(clock, retention=60, initial_events=2)
    await publish(feed, 4)  # 1..4 at 0 s
    clock.advance(50)
    await publish(feed, 3)  # 5..7 at 50 s
    clock.advance(11)  # 1..4 expired
    recovered = await feed.recover("tenant_a", 2)
    assert (seqs(recovered.events), recovered.latest_seq, recovered.recovered) == (
        [6, 7],
        7,
        False,
    )
    caught_up = await feed.catch_up("tenant_a", 2)  # auth.since: what is still held
    assert (seqs(caught_up.events), caught_up.recovered) == ([5, 6, 7], False)
    resumed = await feed.recover("tenant_a", 4)  # nothing it missed has expired
    assert (seqs(resumed.events), resumed.recovered) == ([5, 6, 7], True)


async def test_recovery_after_every_missed_event_expired_is_not_an_empty_success() -> None:
    clock = Clock()
    feed = make_feed(clock, retention=60)
    await publish(feed, 3)
    clock.advance(61)
    for read in (feed.recover("tenant_a", 1), feed.catch_up("tenant_a", 1)):
        answer = await read
        assert (answer.events, answer.latest_seq, answer.recovered) == ([], 3, False)
    assert (await feed.recover("tenant_a", 3)).recovered is True  # it missed nothing


@pytest.mark.parametrize(
    ("tenant_retention", "server_retention", "kept"),
    [
        (None, None, [1, 2]),  # by count only
        (None, 60, []),  # FEED_RETENTION_SECONDS
        (120, 60, [1, 2]),  # the tenant's own replaces the server's
        (30, None, []),
    ],
)
async def test_a_tenants_retention_replaces_the_servers(
    tenant_retention: int | None, server_retention: int | None, kept: list[int]
) -> None:
    clock = Clock()
    feed = make_feed(clock, retention=tenant_retention, server_retention=server_retention)
    await publish(feed, 2)
    clock.advance(90)
    assert seqs((await feed.history("tenant_a", limit=50)).events) == kept


async def test_a_changed_retention_applies_to_the_next_read() -> None:
    clock = Clock()
    feed = make_feed(clock)
    await publish(feed, 2)
    clock.advance(90)
    assert len((await feed.history("tenant_a", limit=50)).events) == 2
    short = Tenant("tenant_a", settings=TenantSettings(retention_seconds=60))
    await feed.tenants.apply("tenant_a", short)
    assert (await feed.history("tenant_a", limit=50)).events == []


async def test_stats_hold_only_what_a_read_may_return() -> None:
    clock = Clock()
    feed = make_feed(clock, retention=60)
    await publish(feed, 3)
    clock.advance(61)
    await publish(feed, 1, tenant="tenant_b")  # no retention: kept
    stats = await feed.stats(["tenant_a", "tenant_b"])
    assert (stats["tenant_a"].events, stats["tenant_a"].held) == (3, 0)
    assert stats["tenant_a"].last_event_at is None
    assert (stats["tenant_b"].events, stats["tenant_b"].held) == (1, 1)


async def test_the_sweep_drops_the_expired_events_of_idle_tenants_in_turn() -> None:
    clock = Clock()
    tenants = [Tenant(f"t{n}", settings=TenantSettings(retention_seconds=60)) for n in range(3)]
    feed = Feed(
        MemoryStore(10),
        TenantDirectory([*tenants, Tenant("kept")]),
        history_size=10,
        initial_events=2,
        max_message_length=20,
        clock=UtcClock(lambda: clock.now_ns),
    )
    for tenant in ["t0", "t1", "t2", "kept"]:
        await publish(feed, 2, tenant)
    clock.advance(61)
    sweep = RetentionSweep(feed, per_tick=2)
    await sweep.tick()
    assert [await held(feed, t) for t in ["t0", "t1", "t2", "kept"]] == [0, 0, 2, 2]
    await sweep.tick()  # the next turn starts where the last one stopped
    assert [await held(feed, t) for t in ["t0", "t1", "t2", "kept"]] == [0, 0, 0, 2]
    await sweep.tick()  # nothing left to drop: harmless
    assert await held(feed, "kept") == 2


async def test_the_sweep_runs_on_its_own_and_outlives_a_store_outage() -> None:
    clock = Clock()
    store = FlakyExpireStore(100, failures=2)
    feed = make_feed(clock, retention=60, store=store)
    await publish(feed, 2)
    clock.advance(61)
    sweeping = asyncio.create_task(RetentionSweep(feed, interval=0).run())
    try:
        await asyncio.wait_for(store.expired.wait(), WITHIN)
    finally:
        sweeping.cancel()
    assert await held(feed) == 0
    assert store.failed == ["tenant_a", "tenant_a"]


async def test_a_sweep_tick_costs_its_turn_not_a_pass_over_every_tenant() -> None:
    clock = Clock()
    kept = [Tenant(f"c{n}") for n in range(10_000)]  # by count only: nothing to sweep
    retained = [Tenant(f"r{n}", settings=TenantSettings(retention_seconds=60)) for n in range(3)]
    feed = Feed(
        MemoryStore(10),
        TenantDirectory([*kept, *retained]),
        history_size=10,
        initial_events=2,
        max_message_length=20,
        clock=UtcClock(lambda: clock.now_ns),
    )
    sweep = RetentionSweep(feed, per_tick=2)
    asked: list[str] = []
    retention_of = feed.retention_of

    def counted(tenant: str) -> int | None:
        asked.append(tenant)
        return retention_of(tenant)

    feed.retention_of = counted  # type: ignore[method-assign]
    await sweep.tick()
    await sweep.tick()
    # Each tick asks about the tenants it expires (at most per_tick), not all 10,003.
    assert asked == ["r0", "r1", "r2", "r0"]


async def test_the_sweep_follows_the_tenants_whose_retention_changes() -> None:
    clock = Clock()
    feed = make_feed(clock)  # tenant_a, tenant_b: no retention yet
    sweep = RetentionSweep(feed, per_tick=10)
    await publish(feed, 2, "tenant_b")
    with_retention = Tenant("tenant_b", settings=TenantSettings(retention_seconds=60))
    await feed.tenants.apply("tenant_b", with_retention)
    clock.advance(61)
    await sweep.tick()
    assert await held(feed, "tenant_b") == 0
    await publish(feed, 2, "tenant_b")
    await feed.tenants.apply("tenant_b", Tenant("tenant_b"))  # back to count only
    clock.advance(61)
    await sweep.tick()
    assert await held(feed, "tenant_b") == 2
    await feed.tenants.apply("tenant_c", Tenant("tenant_c", settings=with_retention.settings))
    await publish(feed, 1, "tenant_c")
    await feed.tenants.apply("tenant_b", None)
    clock.advance(61)
    expired: list[str] = []
    expire = feed.expire

    async def recorded(tenant: str) -> None:
        expired.append(tenant)
        await expire(tenant)

    feed.expire = recorded  # type: ignore[method-assign]
    await sweep.tick()
    assert expired == ["tenant_c"]
