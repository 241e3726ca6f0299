"""RedisStore on a real Redis Cluster whose slots change hands while appends go on:
resharding a tenant's slot, a graceful failover of its master, and a hard one (a kill).

redis-py's cluster client follows MOVED, ASK and TRYAGAIN by itself, whatever its
`retry` (the store's allows none): those replies come before a command runs, so
following them cannot run an append twice. What it does not follow it raises, and the
store raises that as `StoreUnavailable`. So an append is acknowledged, or refused and
not stored: after a move or a graceful failover the tenant's events are exactly the
acknowledged ones. A kill loses what the master acknowledged and had not replicated
yet: `test_a_killed_master_is_replaced_and_appends_resume` checks only what holds then.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator

import pytest
from redis.crc import key_slot

from feedserver.errors import StoreUnavailable
from feedserver.events import Event
from feedserver.store.redis import RedisStore, seq_key, stream_key
from tests.redis_cluster import RedisClusterServers
from tests.waiting import eventually

TS = "2026-01-20T10:30:00.000Z"
TENANT = "acme"
SLOT = key_slot(seq_key(TENANT).encode())
HISTORY = 100_000  # keeps every event of a test
WRITERS = 4  # appending at once, as several nodes would
# Appends after a change, to show they go on (and the client has the new owner).
AFTERWARDS = 20


class Appender:
    """Appends to `TENANT`, keeping the acknowledged events and when each came back, and
    counting the appends refused (`StoreUnavailable`; anything else is raised)."""

    def __init__(self, store: RedisStore, name: str = "m") -> None:
        self.store = store
        self.name = name
        self.acked: list[Event] = []
        self.acked_at: list[float] = []
        self.refused = 0
        self._numbers = itertools.count(1)

    async def append(self) -> bool:
        try:
            event = await self.store.append(TENANT, f"{self.name}{next(self._numbers)}", TS)
        except StoreUnavailable:
            self.refused += 1
            return False
        self.acked.append(event)
        self.acked_at.append(time.monotonic())
        return True

    async def append_until(self, stop: asyncio.Event) -> None:
        """One append after the other (as one client), until `stop`."""
        while not stop.is_set():
            if not await self.append():
                # A refusal comes back at once while the cluster is down: a client waits.
                await asyncio.sleep(0.01)

    def acked_since(self, moment: float) -> list[Event]:
        return [e for e, at in zip(self.acked, self.acked_at, strict=True) if at >= moment]

    def longest_gap(self) -> float:
        """The longest time between two acknowledgements: the outage as this client saw it."""
        return max((b - a for a, b in itertools.pairwise(self.acked_at)), default=0.0)


@contextlib.asynccontextmanager
async def appending(store: RedisStore) -> AsyncIterator[list[Appender]]:
    """`WRITERS` appenders appending at once until the block ends."""
    appenders = [Appender(store, f"w{n}-") for n in range(WRITERS)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(a.append_until(stop)) for a in appenders]
    try:
        await eventually(lambda: all(a.acked for a in appenders), "every writer appended")
        yield appenders
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def appended_after(appenders: list[Appender], moment: float) -> None:
    """Returns once `AFTERWARDS` appends were acknowledged after `moment`."""

    def enough() -> bool:
        return sum(len(a.acked_since(moment)) for a in appenders) >= AFTERWARDS

    await eventually(enough, f"{AFTERWARDS} appends acknowledged afterwards")


def acked(appenders: list[Appender]) -> list[Event]:
    return sorted((e for a in appenders for e in a.acked), key=lambda e: e.seq)


@pytest.fixture
async def store(replicated_cluster: RedisClusterServers) -> AsyncIterator[RedisStore]:
    store = RedisStore(replicated_cluster.url, HISTORY)
    yield store
    await store.close()


async def stored(store: RedisStore) -> list[Event]:
    return await store.query(TENANT, limit=HISTORY, since=0)


async def assert_exactly(store: RedisStore, events: list[Event]) -> None:
    """The tenant holds `events` (in seq order) and nothing else, seqs 1, 2, 3..."""
    assert await stored(store) == events
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert (await store.counts(TENANT)).latest_seq == len(events)


def another_master(cluster: RedisClusterServers, than: int) -> int:
    return next(port for port in cluster.masters() if port != than)


async def test_appends_at_each_step_of_a_slot_move_are_acknowledged_or_refused_whole(
    replicated_cluster: RedisClusterServers, store: RedisStore
) -> None:
    appender = Appender(store)
    source = replicated_cluster.owner(SLOT)
    target = another_master(replicated_cluster, source)

    async def appends(count: int) -> list[bool]:
        """`count` appends at once, each on a connection of its own."""
        return list(await asyncio.gather(*(appender.append() for _ in range(count))))

    assert await appends(5) == [True] * 5
    move = await asyncio.to_thread(replicated_cluster.begin_slot_move, SLOT, target)
    # Both keys still on the source, which serves the appends.
    assert await appends(5) == [True] * 5
    # The seq on the target, the stream on the source: neither runs a script over both
    # (TRYAGAIN, followed until redis-py gives up), so the appends are refused.
    await asyncio.to_thread(move.migrate, [seq_key(TENANT)])
    assert await appends(3) == [False] * 3
    # Both on the target, the slot still the source's: it sends them there (ASK).
    await asyncio.to_thread(move.migrate, [stream_key(TENANT)])
    assert await appends(5) == [True] * 5
    await asyncio.to_thread(move.finish)
    # Sent to the source, which now answers MOVED; followed to the target, at once.
    assert await appends(20) == [True] * 20

    assert replicated_cluster.owner(SLOT) == target
    assert store.failures == appender.refused == 3
    await assert_exactly(store, sorted(appender.acked, key=lambda e: e.seq))


async def test_a_new_idempotency_key_is_refused_until_its_slot_has_moved(
    replicated_cluster: RedisClusterServers, store: RedisStore
) -> None:
    """Its claim key does not exist yet: neither side of an open move runs a command with
    some of its keys missing (TRYAGAIN). A key already claimed is answered when all the
    tenant's keys are on one side."""

    async def publish(key: str) -> tuple[int, bool] | None:
        try:
            event, created = await store.append_once(TENANT, key, key, TS, ttl=600)
        except StoreUnavailable:
            return None
        return event.seq, created

    assert await publish("first") == (1, True)
    source = replicated_cluster.owner(SLOT)
    move = await asyncio.to_thread(
        replicated_cluster.begin_slot_move, SLOT, another_master(replicated_cluster, source)
    )
    assert (await publish("new"), await publish("first")) == (None, (1, False))
    await asyncio.to_thread(move.migrate, move.keys())
    assert (await publish("new"), await publish("first")) == (None, (1, False))
    await asyncio.to_thread(move.finish)
    assert (await publish("new"), await publish("first")) == ((2, True), (1, False))


async def test_appends_during_resharding_of_their_slot_are_kept_in_seq_order(
    replicated_cluster: RedisClusterServers, store: RedisStore
) -> None:
    # Idempotency keys: more keys in the slot, moved 100 per MIGRATE, so that the move
    # takes a while and the tenant's seq and stream may travel in different batches.
    once = [await store.append_once(TENANT, f"k{n}", f"once {n}", TS, ttl=600) for n in range(2000)]
    source = replicated_cluster.owner(SLOT)
    target = another_master(replicated_cluster, source)
    async with appending(store) as appenders:
        started = time.monotonic()
        await asyncio.to_thread(replicated_cluster.move_slot, SLOT, target)
        moved = time.monotonic()
        await appended_after(appenders, moved)

    assert replicated_cluster.owner(SLOT) == target
    during = sum(len(a.acked_since(started)) - len(a.acked_since(moved)) for a in appenders)
    assert during > 0, "no append was acknowledged while the slot moved"
    assert store.failures == sum(a.refused for a in appenders)
    await assert_exactly(store, [event for event, _ in once] + acked(appenders))


async def test_appends_resume_on_the_promoted_replica_after_a_graceful_failover(
    replicated_cluster: RedisClusterServers, store: RedisStore
) -> None:
    master = replicated_cluster.owner(SLOT)
    async with appending(store) as appenders:
        promoted = await asyncio.to_thread(replicated_cluster.fail_over, master)
        await appended_after(appenders, time.monotonic())

    assert replicated_cluster.owner(SLOT) == promoted != master
    # The replica caught up before it took over: nothing acknowledged is missing.
    await assert_exactly(store, acked(appenders))
    assert max(a.longest_gap() for a in appenders) < 3.0


async def test_a_killed_master_is_replaced_and_appends_resume(
    replicated_cluster: RedisClusterServers, store: RedisStore
) -> None:
    """What the master acknowledged in its last moments and had not sent to its replica is
    lost, and the promoted replica allocates those seqs again: so only what comes after
    the promotion is checked."""
    master = replicated_cluster.owner(SLOT)
    async with appending(store) as appenders:
        promoted = await asyncio.to_thread(replicated_cluster.kill, master)
        recovered = time.monotonic()
        await appended_after(appenders, recovered)

    assert replicated_cluster.owner(SLOT) == promoted != master
    after = [a.acked_since(recovered) for a in appenders]
    for seqs in ([e.seq for e in events] for events in after):
        assert seqs == sorted(set(seqs)), "one client's seqs go up, none twice"
    events = await stored(store)
    assert set(itertools.chain(*after)) <= set(events)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert (await store.counts(TENANT)).latest_seq == len(events)
