"""One contract, two stores: the memory ring buffer and Redis Streams pass the same tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from feedserver.store import EventStore, MemoryStore
from feedserver.store.redis import PURGE_BATCH, RedisStore, claim_key, redis_client
from tests.redis_cluster import RedisClusterServers
from tests.redis_server import RedisServer, running_redis

HISTORY = 5
TS = "2026-01-20T10:30:00.000Z"

StoreFactory = Callable[[], EventStore]


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Opens stores of one kind over one backing state (one redis-server for "redis", a
    real 3-master Redis Cluster for "redis-cluster")."""
    opened: list[EventStore] = []
    async with contextlib.AsyncExitStack() as stack:
        url = None
        if request.param == "redis":
            redis = await stack.enter_async_context(running_redis(tmp_path, appendonly=False))
            url = redis.url
        elif request.param == "redis-cluster":
            url = request.getfixturevalue("redis_cluster").url

        def open_one() -> EventStore:
            store: EventStore = MemoryStore(HISTORY) if url is None else RedisStore(url, HISTORY)
            opened.append(store)
            return store

        yield open_one
        for store in opened:
            await store.close()


@pytest.fixture
def store(open_store: StoreFactory) -> EventStore:
    return open_store()


async def fill(store: EventStore, tenant: str, count: int) -> None:
    for n in range(1, count + 1):
        await store.append(tenant, f"m{n}", TS)


async def seqs(store: EventStore, **query: Any) -> list[int]:
    """The seqs `store.query("t", **query)` returns (limit 50 unless given)."""
    limit = query.pop("limit", None) or 50
    return [e.seq for e in await store.query("t", limit=limit, **query)]


async def test_append_allocates_seq_from_one_per_tenant(store: EventStore) -> None:
    first = await store.append("t", "hello &lt;b&gt;", TS)
    second = await store.append("t", "again", TS)
    other = await store.append("u", "elsewhere", TS)
    assert (first.seq, second.seq, other.seq) == (1, 2, 1)
    assert first.tenant_id == "t" and first.message == "hello &lt;b&gt;"
    assert first.timestamp == TS and first.id == "t-1"
    assert await store.query("t", limit=10) == [first, second]
    assert await store.query("u", limit=10) == [other]


async def test_an_empty_tenant_has_nothing(store: EventStore) -> None:
    counts = await store.counts("t")
    assert (counts.latest_seq, counts.held, counts.last_event_at) == (0, 0, None)
    assert await store.query("t", limit=10) == []
    assert await store.query("t", limit=10, since=0) == []
    assert await store.query("t", limit=10, before=5) == []


async def test_only_the_newest_history_size_events_are_held(store: EventStore) -> None:
    await fill(store, "t", 8)
    counts = await store.counts("t")
    assert (counts.latest_seq, counts.held) == (8, HISTORY)
    assert await seqs(store) == [4, 5, 6, 7, 8]
    assert await seqs(store, since=0) == [4, 5, 6, 7, 8]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, [4, 5, 6, 7, 8]),
        ({"limit": 2}, [7, 8]),
        ({"since": 5}, [6, 7, 8]),
        ({"since": 4, "limit": 2}, [5, 6]),
        ({"since": 8}, []),
        ({"since": 100}, []),
        ({"before": 7}, [4, 5, 6]),
        ({"before": 7, "limit": 2}, [5, 6]),
        ({"before": 4}, []),
        ({"before": 1}, []),
        ({"before": 0}, []),
        ({"before": 100, "limit": 3}, [6, 7, 8]),
        ({"since": 4, "before": 8}, [5, 6, 7]),
        ({"since": 4, "before": 8, "limit": 2}, [6, 7]),
        ({"since": 6, "before": 7}, []),
        ({"since": 7, "before": 6}, []),
    ],
)
async def test_query_windows_follow_select_window(
    store: EventStore, query: dict[str, int], expected: list[int]
) -> None:
    await fill(store, "t", 8)
    assert await seqs(store, **query) == expected


async def test_an_append_may_name_the_tenants_own_history_size(store: EventStore) -> None:
    for n in range(1, 9):
        await store.append("t", f"m{n}", TS, history_size=3)
    await fill(store, "u", 8)  # the store's own length for everyone else
    assert await seqs(store) == [6, 7, 8]
    assert (await store.counts("t")).held == 3
    assert [e.seq for e in await store.query("u", limit=50)] == [4, 5, 6, 7, 8]


async def test_a_changed_history_size_applies_from_the_next_append(store: EventStore) -> None:
    await fill(store, "t", 4)
    await store.append("t", "m5", TS, history_size=2)  # shrinks: trimmed by this append
    assert await seqs(store) == [4, 5]
    for n in range(6, 10):
        await store.append("t", f"m{n}", TS, history_size=HISTORY + 2)  # grows from here
    assert await seqs(store) == [4, 5, 6, 7, 8, 9]
    await store.append_once("t", "k", "m10", TS, ttl=60, history_size=2)
    assert await seqs(store) == [9, 10]
    await fill(store, "t", HISTORY + 1)  # None: back to the store's own length
    assert (await store.counts("t")).held == HISTORY


def stamp(second: int) -> str:
    """The timestamp of `second` seconds after TS (0..59)."""
    return f"2026-01-20T10:30:{second:02d}.000Z"


async def fill_stamped(store: EventStore, seconds: range, history_size: int = 100) -> None:
    for second in seconds:
        await store.append("t", f"s{second}", stamp(second), history_size=history_size)


async def test_an_append_drops_the_events_stamped_before_its_cutoff(store: EventStore) -> None:
    await fill_stamped(store, range(1, 5))
    event = await store.append("t", "s5", stamp(5), history_size=100, expire_before=stamp(3))
    assert await seqs(store) == [3, 4, 5]  # no cutoff on the read: dropped from the store
    assert (await store.counts("t")).held == 3
    await store.append_once("t", "k", "s6", stamp(6), ttl=60, expire_before=stamp(5))
    assert await seqs(store) == [5, 6]
    assert event.seq == 5


async def test_a_read_never_returns_an_expired_event(store: EventStore) -> None:
    await fill_stamped(store, range(1, 9))  # seqs 1..8, stamped 1..8
    cutoff = stamp(4)
    assert await seqs(store, expire_before=cutoff) == [4, 5, 6, 7, 8]
    assert await seqs(store, since=0, limit=2, expire_before=cutoff) == [4, 5]
    assert await seqs(store, before=6, expire_before=stamp(6)) == []
    assert await seqs(store, since=6, expire_before=stamp(9)) == []
    assert (await store.counts("t")).held == 0  # each read dropped what it did not return


@pytest.mark.parametrize("cutoff", [0, 1, 2, 3, 5, 17, 33, 40, 41, 50])
async def test_expire_drops_exactly_the_events_stamped_before(
    store: EventStore, cutoff: int
) -> None:
    await fill_stamped(store, range(1, 41))  # 40 events: the search takes several steps
    await store.expire("t", stamp(cutoff))
    kept = list(range(max(cutoff, 1), 41))
    assert await seqs(store, limit=100) == kept
    counts = await store.counts("t")
    assert (counts.latest_seq, counts.held) == (40, len(kept))
    assert counts.last_event_at == (stamp(40) if kept else None)


async def test_expiry_keeps_a_full_ring_contiguous(store: EventStore) -> None:
    await fill_stamped(store, range(1, 13), history_size=HISTORY)  # holds 8..12: wrapped
    await store.expire("t", stamp(10))
    assert await seqs(store) == [10, 11, 12]
    await fill_stamped(store, range(13, 16), history_size=HISTORY)
    assert await seqs(store) == [11, 12, 13, 14, 15]
    await store.expire("t", stamp(59))
    await store.expire("nobody", stamp(59))  # nothing held: nothing to do
    assert await seqs(store) == []
    assert (await store.append("t", "again", stamp(59))).seq == 16


async def test_counts_report_latest_held_and_last_timestamp(store: EventStore) -> None:
    await store.append("t", "a", "2026-01-20T10:30:00.000Z")
    await store.append("t", "b", "2026-01-20T10:31:00.000Z")
    counts = await store.counts("t")
    assert (counts.latest_seq, counts.held) == (2, 2)
    assert counts.last_event_at == "2026-01-20T10:31:00.000Z"


async def test_concurrent_appends_never_repeat_or_skip_a_seq(open_store: StoreFactory) -> None:
    # Two store objects over one backing state stand for two nodes where that is possible.
    first = open_store()
    second = first if isinstance(first, MemoryStore) else open_store()
    events = await asyncio.gather(
        *(node.append("t", f"m{n}", TS) for n in range(100) for node in (first, second))
    )
    assert sorted(e.seq for e in events) == list(range(1, 201))
    assert (await first.counts("t")).latest_seq == 200


async def test_ping_answers_true_when_the_store_is_up(store: EventStore) -> None:
    assert await store.ping() is True


async def test_text_survives_the_round_trip_unchanged(store: EventStore) -> None:
    message = "multi\nline\twith ünïcödé, emoji 🎉 and &amp; escapes"
    event = await store.append("t", message, TS)
    assert (await store.query("t", limit=1)) == [event]
    assert event.message == message


@pytest.mark.redis
async def test_redis_events_and_seq_outlive_the_store_object(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, HISTORY)
    await fill(store, "t", 3)
    await store.close()
    reopened = RedisStore(redis_server.url, HISTORY)
    try:
        assert [e.seq for e in await reopened.query("t", limit=10)] == [1, 2, 3]
        assert (await reopened.append("t", "after", TS)).seq == 4
    finally:
        await reopened.close()


@pytest.mark.redis
async def test_redis_events_survive_a_redis_restart_with_aof(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, HISTORY)
    try:
        await fill(store, "t", 3)
        await redis_server.restart()
        assert [e.message for e in await store.query("t", limit=10)] == ["m1", "m2", "m3"]
        assert (await store.append("t", "after", TS)).seq == 4
    finally:
        await store.close()


# -- idempotency keys and epochs (docs/delivery.md) -----------------------------------------


async def test_a_claimed_key_returns_the_first_event_and_stores_nothing(
    store: EventStore,
) -> None:
    first, created = await store.append_once("t", "k", "one\ntwo", TS, ttl=60)
    again, created_again = await store.append_once("t", "k", "other", TS, ttl=60)
    assert (created, created_again) == (True, False)
    assert again == first and first.message == "one\ntwo"
    assert (await store.counts("t")).latest_seq == 1
    assert (await store.append_once("t", "k2", "m", TS, ttl=60))[0].seq == 2


async def test_concurrent_claims_of_one_key_create_one_event(store: EventStore) -> None:
    results = await asyncio.gather(
        *(store.append_once("t", "k", f"m{i}", TS, ttl=60) for i in range(100))
    )
    assert sum(created for _, created in results) == 1
    assert {event for event, _ in results} == {results[0][0]}
    assert (await store.counts("t")).latest_seq == 1


async def test_the_first_event_is_returned_after_the_ring_buffer_dropped_it(
    store: EventStore,
) -> None:
    first, _ = await store.append_once("t", "k", "one", TS, ttl=60)
    await fill(store, "t", HISTORY + 2)
    assert await store.append_once("t", "k", "again", TS, ttl=60) == (first, False)


async def test_keys_of_one_tenant_never_claim_for_another(store: EventStore) -> None:
    await store.append_once("a", "k", "one", TS, ttl=60)
    event, created = await store.append_once("b", "k", "one", TS, ttl=60)
    assert created and (event.tenant_id, event.seq) == ("b", 1)


async def test_memory_stores_are_each_their_own_epoch() -> None:
    store = MemoryStore(HISTORY)
    assert await store.epoch() == await store.epoch() != await MemoryStore(HISTORY).epoch()


@pytest.mark.redis
async def test_redis_epoch_is_shared_and_changes_when_redis_is_flushed(
    redis_server: RedisServer,
) -> None:
    one, two = RedisStore(redis_server.url, HISTORY), RedisStore(redis_server.url, HISTORY)
    try:
        epoch = await one.epoch()
        assert await two.epoch() == epoch
        await redis_client(redis_server.url).flushall()
        assert await two.epoch() != epoch
    finally:
        await one.close()
        await two.close()


@pytest.mark.redis
async def test_redis_claims_expire_after_their_ttl(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, HISTORY)
    redis = redis_client(redis_server.url)
    try:
        await store.append_once("t", "k", "one", TS, ttl=60)
        assert 59_000 < await redis.pttl(claim_key("t", "k")) <= 60_000
    finally:
        await redis.aclose()
        await store.close()


async def test_purge_forgets_a_tenant_and_nothing_of_the_others(store: EventStore) -> None:
    await fill(store, "t", 3)
    await store.append_once("t", "k", "once", TS, ttl=60)
    await fill(store, "u", 2)
    await store.purge("t")
    counts = await store.counts("t")
    assert (counts.latest_seq, counts.held, counts.last_event_at) == (0, 0, None)
    assert await store.query("t", limit=10) == []
    event, created = await store.append_once("t", "k", "again", TS, ttl=60)
    assert (event.seq, event.message, created) == (1, "again", True)
    assert [e.seq for e in await store.query("u", limit=10)] == [1, 2]
    await store.purge("nobody")  # a tenant without data: nothing to do


@pytest.mark.redis
async def test_redis_purge_unlinks_every_key_of_the_tenant_in_batches(
    redis_server: RedisServer,
) -> None:
    store = RedisStore(redis_server.url, HISTORY)
    redis = redis_client(redis_server.url)
    try:
        for n in range(PURGE_BATCH + 100):  # more keys than one UNLINK takes
            await store.append_once("t", f"k{n}", "m", TS, ttl=60)
        await fill(store, "tt", 2)  # an id that starts like the purged one
        await store.purge("t")
        assert [key async for key in redis.scan_iter(match="*{t}*")] == []
        assert sorted([key async for key in redis.scan_iter(match="feed:{tt}:*")]) == [
            "feed:{tt}:events",
            "feed:{tt}:seq",
        ]
    finally:
        await redis.aclose()
        await store.close()


async def test_a_purge_on_the_cluster_leaves_no_key_of_the_tenant_on_any_master(
    redis_cluster: RedisClusterServers,
) -> None:
    store = RedisStore(redis_cluster.url, HISTORY)
    try:
        for n in range(PURGE_BATCH + 100):  # more keys than one UNLINK takes
            await store.append_once("t", f"k{n}", "m", TS, ttl=60)
        await fill(store, "tt", 2)
        await store.purge("t")
    finally:
        await store.close()
    left: list[str] = []
    for port in redis_cluster.ports:  # every master, not only the one the store scanned
        async with Redis(port=port, decode_responses=True) as master:
            left += [key async for key in master.scan_iter(match="feed:{t*")]
    assert sorted(left) == ["feed:{tt}:events", "feed:{tt}:seq"]
