"""RedisStore on a real Redis Cluster whose slots change hands while appends go on:
resharding a tenant's slot, a graceful failover of its master, and a hard one (a kill).

redis-py's cluster client follows MOVED, ASK and TRYAGAIN by itself, whatever its
`retry` (the store's allows none): those replies come before a command runs, so
following them cannot run an append twice. What it does not follow it raises, and the
store raises that as `StoreUnavailable`. So an append is acknowledged, or refused and
not stored: after a move or a graceful failover the tenant's events are exactly the
acknowledged ones. A kill loses what the master acknowledged and had not replicated
yet: `test_a_killed_master_is_replaced_and_appends_resume` checks only what holds then.

A node follows a tenant through the hints its appends SPUBLISH at the master of its
slot (`HintedFollow`): after each change the hint channel is subscribed at the new
master and the stream read from the cursor, so a follow (`Follower`, driven as the
relay drives `RedisStore.follow`) reads every event once, in order, and soon, not at
the heal. `NoticeChannel` subscribes `feed:notices` the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redis.crc import key_slot

from feedserver.cluster import NOTICES_CHANNEL, NoticeChannel
from feedserver.core import SystemNotice
from feedserver.errors import StoreUnavailable
from feedserver.events import Event
from feedserver.store import pubsub
from feedserver.store.redis import HEAL_S, RedisStore, seq_key, stream_key
from feedserver.tasks import Backoff, stop
from tests.redis_cluster import RedisClusterServers
from tests.waiting import eventually

TS = "2026-01-20T10:30:00.000Z"
TENANT = "acme"
SLOT = key_slot(seq_key(TENANT).encode())
HISTORY = 100_000  # keeps every event of a test
WRITERS = 4  # appending at once, as several nodes would
# Appends after a change, to show they go on (and the client has the new owner).
AFTERWARDS = 20
# How soon after a change the follow returns an event appended after it: its hint channel
# is subscribed at the new owner by then (the heal, HEAL_S, would take far longer).
RESUMED_WITHIN_S = 2.0


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


class Follower:
    """Follows `TENANT` from seq 0 as the relay does (`RedisStore.follow` again and again,
    the cursor moving to each event returned, a refused follow tried again shortly),
    keeping what it read and when."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.cursors = {TENANT: 0}
        self.read: list[Event] = []
        self.read_at: dict[Event, float] = {}
        self.refused = 0
        self._subscribed = asyncio.Event()  # its first follow returned: hints come
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Follower:
        self.store.watch(TENANT)
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._subscribed.wait(), 10)
        return self

    async def __aexit__(self, *_: object) -> None:
        await stop(self._task)

    async def _run(self) -> None:
        while True:
            try:
                events = await self.store.follow(self.cursors, count=500)
            except StoreUnavailable:
                self.refused += 1
                await asyncio.sleep(0.05)  # the relay's backoff, shorter
                continue
            self._subscribed.set()
            for event in events:
                self.read.append(event)
                self.read_at[event] = time.monotonic()
                self.cursors[TENANT] = event.seq

    async def read_up_to(self, seq: int) -> None:
        await eventually(lambda: self.cursors[TENANT] >= seq, f"the follow read seq {seq}")

    def delays(self, appenders: list[Appender], since: float, *, above: int = 0) -> list[float]:
        """For each event acknowledged after `since` with a seq above `above`, how long
        after it the follow read it (infinite if never)."""
        return [
            self.read_at.get(event, math.inf) - at
            for appender in appenders
            for event, at in zip(appender.acked, appender.acked_at, strict=True)
            if at >= since and event.seq > above
        ]


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


async def test_the_latest_seqs_are_read_from_the_promoted_replica_after_a_kill(
    replicated_cluster: RedisClusterServers, store: RedisStore
) -> None:
    """The latest seqs are read in a pipeline (one round trip per master). A pipeline that
    finds its master dead makes the client learn the slots again, as a single command
    does: before, a client that only read seqs (a relay checking its cursors after an
    outage, on a node that appends nothing) asked the dead master again and again."""
    await store.append(TENANT, "m1", TS)
    assert (await store.latest_seqs([TENANT])).keys() == {TENANT}  # it knows the master
    await asyncio.to_thread(replicated_cluster.kill, replicated_cluster.owner(SLOT))
    with contextlib.suppress(StoreUnavailable):  # the dead master, once
        await store.latest_seqs([TENANT])
    assert (await store.latest_seqs([TENANT])).keys() == {TENANT}


async def follow_through(
    store: RedisStore, change: Callable[[], object]
) -> tuple[Follower, list[Appender], float]:
    """Follows `TENANT` while `WRITERS` append and `change` (a cluster operation, run in a
    thread) goes on; returns once the follow has read up to the latest seq, with the time
    at which `change` was over."""
    async with Follower(store) as follower:
        async with appending(store) as appenders:
            await asyncio.to_thread(change)
            changed = time.monotonic()
            await appended_after(appenders, changed)
        await follower.read_up_to((await store.counts(TENANT)).latest_seq)
    return follower, appenders, changed


async def test_a_follow_reads_every_event_once_in_order_while_its_slot_moves(
    replicated_cluster: RedisClusterServers, store: RedisStore
) -> None:
    """The old owner unsubscribes the hint channel (an unrequested SUNSUBSCRIBE) when the
    slot leaves it; the follow subscribes it at the new owner and reads from its cursor,
    so events go on coming by their hints, not at the heal."""
    target = another_master(replicated_cluster, replicated_cluster.owner(SLOT))
    move = functools.partial(replicated_cluster.move_slot, SLOT, target)
    follower, appenders, moved = await follow_through(store, move)

    assert replicated_cluster.owner(SLOT) == target
    assert follower.read == acked(appenders)
    assert max(follower.delays(appenders, moved)) < RESUMED_WITHIN_S < HEAL_S


async def test_a_follow_reads_every_event_once_in_order_through_a_graceful_failover(
    replicated_cluster: RedisClusterServers, store: RedisStore
) -> None:
    """The demoted master unsubscribes the hint channel too; the follow subscribes it at
    the promoted replica and reads from its cursor."""
    master = replicated_cluster.owner(SLOT)
    fail_over = functools.partial(replicated_cluster.fail_over, master)
    follower, appenders, promoted = await follow_through(store, fail_over)

    assert replicated_cluster.owner(SLOT) != master
    assert follower.read == acked(appenders)
    assert max(follower.delays(appenders, promoted)) < RESUMED_WITHIN_S


async def test_a_follow_goes_on_after_a_kill_with_the_events_acknowledged_since(
    replicated_cluster: RedisClusterServers, store: RedisStore, caplog: pytest.LogCaptureFixture
) -> None:
    """The subscription's connection to the killed master fails; the subscriber asks the
    cluster again with a backoff (a few attempts until the replica takes over, not a spin)
    and subscribes at the promoted replica. What the master acknowledged and had not
    replicated is lost and its seqs are given again (docs/scaling.md): a follow that read
    them is past the events that now have them, and reads every one after them."""
    caplog.set_level(logging.WARNING, logger=pubsub.__name__)
    master = replicated_cluster.owner(SLOT)
    kill = functools.partial(replicated_cluster.kill, master)
    follower, appenders, promoted = await follow_through(store, kill)

    assert replicated_cluster.owner(SLOT) != master
    seqs = [event.seq for event in follower.read]
    assert seqs == sorted(set(seqs))  # each once, in order
    everything = await stored(store)
    lost = set(follower.read) - set(everything)
    passed = max((event.seq for event in lost), default=0)
    assert [e for e in follower.read if e.seq > passed] == [e for e in everything if e.seq > passed]
    # Its backoff (0.2, 0.4, 0.8, 1.6, then 2 s) may have been waiting when the replica took over.
    resumed_within = RESUMED_WITHIN_S + Backoff().cap
    assert max(follower.delays(appenders, promoted, above=passed)) < resumed_within
    # The connection lost, then each attempt while no replica had taken over (about 2.5 s).
    assert len([r for r in caplog.records if r.name == pubsub.__name__]) <= 6


@pytest.mark.parametrize("failover", ["fail_over", "kill"])
async def test_system_messages_cross_again_once_the_notice_channel_master_is_replaced(
    replicated_cluster: RedisClusterServers, failover: str
) -> None:
    """`feed:notices` is SSUBSCRIBEd at its slot's master: after a failover of it each
    NoticeChannel is subscribed at the promoted replica (`listening`), and a notice sent
    by one reaches the other."""
    channels = [NoticeChannel(replicated_cluster.url, node) for node in ("a", "b")]
    received: asyncio.Queue[SystemNotice] = asyncio.Queue()
    channels[1].add_listener(received.put)
    try:
        for channel in channels:
            await channel.start()
            await asyncio.wait_for(channel.listening.wait(), 10)
        master = replicated_cluster.owner(key_slot(NOTICES_CHANNEL.encode()))
        promoted = await asyncio.to_thread(getattr(replicated_cluster, failover), master)
        for channel in channels:
            await asyncio.wait_for(channel.listening.wait(), 10)
        notice = {"message": f"after {failover}", "level": "info", "timestamp": TS}
        await channels[0].send(notice)
        assert await asyncio.wait_for(received.get(), 10) == notice
        assert replicated_cluster.owner(key_slot(NOTICES_CHANNEL.encode())) == promoted
    finally:
        for channel in channels:
            await channel.close()


async def test_a_cluster_with_no_node_up_fails_every_call_as_one_redis_down_does(
    replicated_cluster: RedisClusterServers, caplog: pytest.LogCaptureFixture
) -> None:
    """`StoreUnavailable` (a 503, and a retry later for the relay) and a notice sent to
    this node's clients only. Once no node answers, redis-py's cluster client raises
    RedisClusterException, which is not a RedisError, from its refresh of the slots: at
    the first command after a failed one."""
    store = RedisStore(replicated_cluster.url, HISTORY, follow_block_ms=500)
    notices = NoticeChannel(replicated_cluster.url, "a")
    try:
        cursors = {TENANT: 0}
        store.watch(TENANT)
        await store.follow(cursors, count=10)  # subscribed
        await store.append(TENANT, "hinted", TS)  # to be read by the next follow
        await asyncio.to_thread(replicated_cluster.stop)
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: store.append(TENANT, "down", TS),
            lambda: store.append_once(TENANT, "k", "down", TS, ttl=60),
            lambda: store.query(TENANT, limit=10),
            lambda: store.counts(TENANT),
            lambda: store.latest_seqs([TENANT]),
            lambda: store.follow(cursors, count=10),
        ]
        for call in calls:
            for _ in range(2):  # the first fails to connect, the next to refresh the slots
                with pytest.raises(StoreUnavailable):
                    await call()
        assert not await store.ping()
        for _ in range(2):
            await notices.send({"message": "down", "level": "info", "timestamp": TS})
        assert caplog.text.count("a system message reached this node's clients only") == 2
    finally:
        await notices.close()
        await store.close()
