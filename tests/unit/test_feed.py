"""core.Feed over the memory store: publish, history, catch-up and stats."""

from __future__ import annotations

import asyncio
import re

import pytest

from feedserver.core import Feed, LocalBus, LocalConnections, SystemNotice, TenantStats, covers
from feedserver.errors import ForbiddenTenant, RateLimited, TenantSuspended, ValidationFailed
from feedserver.events import Event
from feedserver.store import MemoryStore
from feedserver.tenants import SUSPENDED, Tenant, TenantDirectory, TenantSettings
from tests.faulty_store import HeldAppendStore

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def make_feed(history_size: int = 5, initial_events: int = 3, **extra: object) -> Feed:
    return Feed(
        MemoryStore(history_size),
        TenantDirectory([Tenant("tenant_a"), Tenant("tenant_b")]),
        history_size=history_size,
        initial_events=initial_events,
        max_message_length=20,
        **extra,  # type: ignore[arg-type]
    )


async def publish_many(feed: Feed, count: int, tenant: str = "tenant_a") -> list[Event]:
    return [(await feed.publish(tenant, {"message": f"m{i}"})).event for i in range(1, count + 1)]


def seqs(events: list[Event]) -> list[int]:
    return [e.seq for e in events]


# -- publish --------------------------------------------------------------------------------


async def test_publish_returns_the_stored_escaped_event() -> None:
    feed = make_feed()
    published = await feed.publish("tenant_a", {"message": "  <hi>  "})
    event = published.event
    assert not published.replayed
    assert (event.seq, event.tenant_id, event.message) == (1, "tenant_a", "&lt;hi&gt;")
    assert event.id == "tenant_a-1"
    assert TIMESTAMP.match(event.timestamp)
    assert (await feed.history("tenant_a", limit=10)).events == [event]


async def test_publish_tells_every_listener_in_order() -> None:
    feed = make_feed()
    heard: list[tuple[str, int]] = []

    async def first(event: Event) -> None:
        heard.append(("first", event.seq))

    async def second(event: Event) -> None:
        heard.append(("second", event.seq))

    feed.add_listener(first)
    feed.add_listener(second)
    await publish_many(feed, 2)
    assert heard == [("first", 1), ("second", 1), ("first", 2), ("second", 2)]


@pytest.mark.parametrize(
    "payload", [{"message": ""}, {"message": "x" * 21}, {"message": 1}, {"nope": "x"}, "x", None]
)
async def test_refused_publish_stores_and_broadcasts_nothing(payload: object) -> None:
    feed = make_feed()
    heard: list[Event] = []

    async def listener(event: Event) -> None:
        heard.append(event)

    feed.add_listener(listener)
    with pytest.raises(ValidationFailed):
        await feed.publish("tenant_a", payload)
    assert heard == []
    assert (await feed.history("tenant_a", limit=10)).latest_seq == 0


async def test_a_rate_limited_publish_stores_nothing() -> None:
    class Refuse:
        def __init__(self) -> None:
            self.tenants: list[str] = []

        async def hit(self, tenant: str) -> None:
            self.tenants.append(tenant)
            raise RateLimited(3)

    limiter = Refuse()
    feed = make_feed(limiter=limiter)
    with pytest.raises(RateLimited) as refused:
        await feed.publish("tenant_b", {"message": "hi"})
    assert refused.value.retry_after == 3
    assert limiter.tenants == ["tenant_b"]
    assert (await feed.history("tenant_b", limit=10)).latest_seq == 0


async def test_validation_comes_before_the_rate_limit() -> None:
    class Count:
        hits = 0

        async def hit(self, tenant: str) -> None:
            self.hits += 1

    limiter = Count()
    feed = make_feed(limiter=limiter)
    with pytest.raises(ValidationFailed):
        await feed.publish("tenant_a", {"message": ""})
    await feed.publish("tenant_a", {"message": "ok"})
    assert limiter.hits == 1


# -- system messages ------------------------------------------------------------------------


async def test_a_system_message_reaches_every_notice_listener_of_the_bus_once() -> None:
    bus = LocalBus()
    feed = make_feed(bus=bus)
    heard: list[tuple[str, SystemNotice]] = []

    async def first(notice: SystemNotice) -> None:
        heard.append(("first", notice))

    async def second(notice: SystemNotice) -> None:
        heard.append(("second", notice))

    feed.add_notice_listener(first)
    bus.add_notice_listener(second)  # one list: the bus's
    notice = await feed.post_system_message("  <b>noon</b>  ", "warning")
    assert (notice["message"], notice["level"]) == ("&lt;b&gt;noon&lt;/b&gt;", "warning")
    assert TIMESTAMP.match(notice["timestamp"])
    assert heard == [("first", notice), ("second", notice)]


async def test_a_system_message_is_not_an_event() -> None:
    feed = make_feed()
    heard: list[Event] = []

    async def listener(event: Event) -> None:
        heard.append(event)

    feed.add_listener(listener)
    await feed.post_system_message("hello", "info")
    assert heard == []
    assert (await feed.history("tenant_a", limit=10)).latest_seq == 0


@pytest.mark.parametrize("message", ["", "x" * 21, "bad\x00"])
async def test_a_refused_system_message_reaches_no_listener(message: str) -> None:
    feed = make_feed()
    heard: list[SystemNotice] = []

    async def listener(notice: SystemNotice) -> None:
        heard.append(notice)

    feed.add_notice_listener(listener)
    with pytest.raises(ValidationFailed):
        await feed.post_system_message(message, "info")
    assert heard == []


# -- history --------------------------------------------------------------------------------


async def test_history_pages_with_since_and_before() -> None:
    feed = make_feed(history_size=10)
    await publish_many(feed, 8)
    newest = await feed.history("tenant_a", limit=3)
    assert (seqs(newest.events), newest.latest_seq) == ([6, 7, 8], 8)
    back = await feed.history("tenant_a", limit=3, before=6)
    assert seqs(back.events) == [3, 4, 5]
    forward = await feed.history("tenant_a", limit=3, since=2)
    assert seqs(forward.events) == [3, 4, 5]
    between = await feed.history("tenant_a", limit=3, since=1, before=8)
    assert seqs(between.events) == [5, 6, 7]
    assert (await feed.history("tenant_a", limit=3, since=8)).events == []


async def test_history_of_a_tenant_without_events() -> None:
    history = await make_feed().history("tenant_b", limit=50)
    assert (history.events, history.latest_seq) == ([], 0)


# -- catch-up -------------------------------------------------------------------------------


async def test_catch_up_without_since_is_the_last_initial_events() -> None:
    feed = make_feed(history_size=5, initial_events=3)
    await publish_many(feed, 4)
    catch_up = await feed.catch_up("tenant_a", None)
    assert (seqs(catch_up.events), catch_up.latest_seq, catch_up.recovered) == ([2, 3, 4], 4, False)


async def test_catch_up_with_since_within_the_buffer_recovers_every_missed_event() -> None:
    feed = make_feed(history_size=5, initial_events=1)
    await publish_many(feed, 7)  # holds 3..7
    for since, missed in [(2, [3, 4, 5, 6, 7]), (4, [5, 6, 7]), (6, [7])]:
        catch_up = await feed.catch_up("tenant_a", since)
        assert (seqs(catch_up.events), catch_up.latest_seq, catch_up.recovered) == (
            missed,
            7,
            True,
        )


async def test_catch_up_with_since_equal_to_latest_recovers_nothing_missing() -> None:
    feed = make_feed()
    await publish_many(feed, 3)
    catch_up = await feed.catch_up("tenant_a", 3)
    assert (catch_up.events, catch_up.latest_seq, catch_up.recovered) == ([], 3, True)


async def test_catch_up_with_since_zero_on_an_empty_tenant_is_recovered() -> None:
    catch_up = await make_feed().catch_up("tenant_a", 0)
    assert (catch_up.events, catch_up.latest_seq, catch_up.recovered) == ([], 0, True)


async def test_catch_up_with_since_older_than_the_buffer_is_every_event_still_held() -> None:
    feed = make_feed(history_size=5, initial_events=2)
    await publish_many(feed, 9)  # holds 5..9; 2..4 were dropped
    for since in (0, 1, 3):
        catch_up = await feed.catch_up("tenant_a", since)
        assert (seqs(catch_up.events), catch_up.latest_seq, catch_up.recovered) == (
            [5, 6, 7, 8, 9],
            9,
            False,
        )


async def test_recover_from_an_offset_older_than_the_buffer_starts_afresh() -> None:
    """Native recovery that cannot fill the gap: the client is a new one (PROTOCOL)."""
    feed = make_feed(history_size=5, initial_events=2)
    await publish_many(feed, 9)
    catch_up = await feed.recover("tenant_a", 3)
    assert (seqs(catch_up.events), catch_up.latest_seq, catch_up.recovered) == ([8, 9], 9, False)
    recovered = await feed.recover("tenant_a", 6)
    assert (seqs(recovered.events), recovered.latest_seq, recovered.recovered) == (
        [7, 8, 9],
        9,
        True,
    )


async def test_catch_up_with_since_in_the_future_starts_afresh() -> None:
    feed = make_feed(history_size=5, initial_events=2)
    await publish_many(feed, 3)
    catch_up = await feed.catch_up("tenant_a", 10)
    assert (seqs(catch_up.events), catch_up.latest_seq, catch_up.recovered) == ([2, 3], 3, False)


async def test_catch_up_with_initial_events_zero_sends_nothing_without_since() -> None:
    feed = make_feed(initial_events=0)
    await publish_many(feed, 2)
    catch_up = await feed.catch_up("tenant_a", None)
    assert (catch_up.events, catch_up.latest_seq) == ([], 2)
    assert seqs((await feed.catch_up("tenant_a", 1)).events) == [2]


# -- stats ----------------------------------------------------------------------------------


async def test_stats_count_created_held_connections_and_last_event() -> None:
    connections = LocalConnections()
    feed = make_feed(history_size=3, connections=connections)
    events = await publish_many(feed, 5)
    await publish_many(feed, 1, tenant="tenant_b")
    connections.opened("tenant_a")
    connections.opened("tenant_a")
    connections.opened("tenant_b")
    connections.closed("tenant_b")
    connections.closed("tenant_b")  # never below zero
    stats = await feed.stats(("tenant_a", "tenant_b", "tenant_c"))
    assert stats["tenant_a"] == TenantStats(5, 3, 2, events[-1].timestamp)
    assert stats["tenant_b"].events == 1 and stats["tenant_b"].connections == 0
    assert stats["tenant_c"] == TenantStats(0, 0, 0, None)
    assert stats["tenant_a"].to_json() == {
        "events": 5,
        "held": 3,
        "connections": 2,
        "lastEventAt": events[-1].timestamp,
    }


async def test_stats_only_for_the_tenants_asked() -> None:
    feed = make_feed()
    await publish_many(feed, 1, tenant="tenant_b")
    assert list(await feed.stats(("tenant_a",))) == ["tenant_a"]


# -- tenants --------------------------------------------------------------------------------


async def test_an_unknown_tenant_may_not_publish_or_subscribe() -> None:
    feed = make_feed()
    with pytest.raises(ForbiddenTenant):
        await feed.publish("tenant_z", {"message": "hi"})
    with pytest.raises(ForbiddenTenant):
        await feed.catch_up("tenant_z", None)


async def test_a_suspended_tenant_may_not_publish_or_subscribe_but_reads_its_history() -> None:
    feed = make_feed()
    [event] = await publish_many(feed, 1)
    await feed.tenants.apply("tenant_a", Tenant("tenant_a", SUSPENDED))
    for refused in (
        feed.publish("tenant_a", {"message": "hi"}),
        feed.catch_up("tenant_a", None),
        feed.recover("tenant_a", 0),
    ):
        with pytest.raises(TenantSuspended):
            await refused
    assert (await feed.history("tenant_a", limit=10)).events == [event]
    assert (await feed.publish("tenant_b", {"message": "others go on"})).event.seq == 1


async def test_a_tenant_may_have_a_message_length_of_its_own() -> None:
    feed = make_feed()  # max_message_length=20
    terse = Tenant("tenant_a", settings=TenantSettings(max_message_length=3))
    await feed.tenants.apply("tenant_a", terse)
    with pytest.raises(ValidationFailed):
        await feed.publish("tenant_a", {"message": "abcd"})
    assert (await feed.publish("tenant_b", {"message": "a" * 20})).event.seq == 1


async def with_history_size(feed: Feed, size: int | None, tenant: str = "tenant_a") -> None:
    await feed.tenants.apply(tenant, Tenant(tenant, settings=TenantSettings(history_size=size)))


async def test_a_tenant_may_have_a_history_size_of_its_own() -> None:
    feed = make_feed(history_size=5, initial_events=10)
    await with_history_size(feed, 2)
    await publish_many(feed, 4)
    await publish_many(feed, 7, tenant="tenant_b")
    assert seqs((await feed.history("tenant_a", limit=50)).events) == [3, 4]
    assert seqs((await feed.catch_up("tenant_a", None)).events) == [3, 4]
    assert (await feed.stats(("tenant_a",)))["tenant_a"].held == 2  # what reads can see
    assert seqs((await feed.history("tenant_b", limit=50)).events) == [3, 4, 5, 6, 7]
    await with_history_size(feed, 8)  # grows: the store kept FEED_HISTORY_SIZE (5) anyway
    assert seqs((await feed.history("tenant_a", limit=50)).events) == [1, 2, 3, 4]
    await publish_many(feed, 3)
    assert seqs((await feed.history("tenant_a", limit=50)).events) == [1, 2, 3, 4, 5, 6, 7]


async def test_a_shrunk_history_size_bounds_every_read_before_the_next_append() -> None:
    feed = make_feed(history_size=5, initial_events=10)
    await publish_many(feed, 5)
    await with_history_size(feed, 2)  # the store keeps 1..5 (FEED_HISTORY_SIZE, 5)
    assert seqs((await feed.history("tenant_a", limit=50)).events) == [4, 5]
    # Paging from the start stays within the tenant's window too.
    assert seqs((await feed.history("tenant_a", limit=50, since=0)).events) == [4, 5]
    assert seqs((await feed.history("tenant_a", limit=50, before=5)).events) == [4]
    caught_up = await feed.catch_up("tenant_a", 1)  # 2..5 missed: more than it keeps
    assert (seqs(caught_up.events), caught_up.latest_seq, caught_up.recovered) == (
        [4, 5],
        5,
        False,
    )
    recovered = await feed.recover("tenant_a", 3)
    assert (seqs(recovered.events), recovered.recovered) == ([4, 5], True)
    assert (await feed.recover("tenant_a", 2)).recovered is False


@pytest.mark.parametrize(
    ("since", "latest", "held", "expected"),
    [
        (3, 3, [], True),  # nothing missed
        (0, 0, [], True),
        (2, 5, [3, 4, 5], True),
        (2, 5, [3, 4, 5, 6], True),  # one more was stored since `latest` was read
        (2, 5, [4, 5], False),  # 3 was dropped
        (2, 5, [3, 4], False),  # 5 left out
        (2, 5, [], False),  # all of them dropped
    ],
)
def test_covers_means_every_event_after_since(
    since: int, latest: int, held: list[int], expected: bool
) -> None:
    events = [Event(seq, "tenant_a", "m", "2026-01-20T10:30:00.000Z") for seq in held]
    assert covers(since, latest, events) is expected


async def test_a_deleted_tenant_is_purged_and_starts_again_at_seq_one() -> None:
    feed = make_feed()
    await publish_many(feed, 3)
    await publish_many(feed, 2, tenant="tenant_b")
    await feed.tenants.apply("tenant_a", None)
    await feed.tenants.apply("tenant_a", Tenant("tenant_a"))
    assert (await feed.history("tenant_a", limit=10)).latest_seq == 0
    assert (await feed.publish("tenant_a", {"message": "again"})).event.seq == 1
    assert (await feed.history("tenant_b", limit=10)).latest_seq == 2


async def test_a_publish_stored_while_its_tenant_was_deleted_leaves_nothing() -> None:
    store = HeldAppendStore(5)
    feed = Feed(
        store,
        TenantDirectory([Tenant("tenant_a")]),
        history_size=5,
        initial_events=3,
        max_message_length=20,
    )
    in_flight = asyncio.ensure_future(feed.publish("tenant_a", {"message": "late"}))
    await store.appending.wait()
    await feed.tenants.apply("tenant_a", None)  # purges what there is: nothing yet
    store.release.set()
    with pytest.raises(ForbiddenTenant):
        await in_flight
    assert (await store.counts("tenant_a")).latest_seq == 0
