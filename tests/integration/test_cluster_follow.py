"""`RedisStore.follow` through hints, on one real redis-server and on a real 3-master
Redis Cluster.

An append publishes a hint (SPUBLISH in its tenant's slot on a cluster) and `HintedFollow`
reads the hinted streams: these tests check what the relay relies on (every event after
the cursors, once, in order, also across masters; a waiting follow ends at an append or a
newly watched tenant; nothing missed for want of a hint; a lost subscription is said).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import RedisCluster
from redis.crc import key_slot

from feedserver.cluster import NoticeChannel
from feedserver.core import SystemNotice
from feedserver.errors import StoreUnavailable
from feedserver.events import Event
from feedserver.store.redis import HintedFollow, RedisStore, seq_key, store_client, stream_key
from feedserver.tasks import stop
from tests.redis_cluster import RedisClusterServers
from tests.redis_server import RedisServer
from tests.waiting import eventually

pytestmark = pytest.mark.redis

TS = "2026-01-20T10:30:00.000Z"
# Tenants whose keys are in slots of all three masters (checked in the first test).
TENANTS = [f"t{n}" for n in range(12)]
# How long a master is stopped: past the client's 2 s command timeout (COMMAND_TIMEOUT_S),
# so that a read of it fails, and past the cluster's 2 s node timeout.
PAUSE_S = 3.0
# How soon an event of a tenant of another master is read while one master is stopped.
UNHELD_S = 1.0


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    store = RedisStore(redis_url, 100, follow_block_ms=60_000)
    yield store
    await store.close()


def watched(store: RedisStore, cursors: dict[str, int]) -> dict[str, int]:
    """`cursors`, each of its tenants watched (as the relay does when it sets a cursor)."""
    for tenant in cursors:
        store.watch(tenant)
    return cursors


async def follow_until(
    store: RedisStore, cursors: dict[str, int], count: int, *, batch: int = 500
) -> list[tuple[str, int]]:
    """(tenant, seq) of what `follow` returns until `count` events came, the cursors
    moving as the relay moves them."""
    read: list[tuple[str, int]] = []
    while len(read) < count:
        for event in await asyncio.wait_for(store.follow(cursors, count=batch), 10):
            read.append((event.tenant_id, event.seq))
            cursors[event.tenant_id] = event.seq
    return read


async def test_follow_returns_every_event_after_the_cursors_once_in_order(
    store: RedisStore, redis_url: str
) -> None:
    client = store_client(redis_url)
    if isinstance(client, RedisCluster):
        await client.initialize()
        masters = {client.get_node_from_key(stream_key(t)).name for t in TENANTS}  # type: ignore[union-attr]
        assert len(masters) == 3
    await client.aclose()
    for tenant in TENANTS:
        for n in range(3):
            await store.append(tenant, f"before {n}", TS)
    cursors = watched(store, {tenant: 1 for tenant in TENANTS})  # the first ones delivered
    read = await follow_until(store, cursors, 2 * len(TENANTS), batch=1)
    assert sorted(read) == sorted((t, s) for t in TENANTS for s in (2, 3))
    for tenant in TENANTS:
        assert [seq for t, seq in read if t == tenant] == [2, 3]  # in order
    assert cursors == {tenant: 3 for tenant in TENANTS}


async def test_a_blocked_follow_returns_at_an_append_not_at_its_block_time(
    store: RedisStore,
) -> None:
    cursors = watched(store, {tenant: 0 for tenant in TENANTS})
    assert await store.follow(cursors, count=10) == []  # read once subscribed: nothing
    for round_ in range(3):  # each wait ends at its append: no hint lost, none stale
        blocked = asyncio.create_task(follow_until(store, cursors, 1))
        await asyncio.sleep(0)  # let it block first
        await store.append(TENANTS[round_ * 5], "live", TS)
        assert await asyncio.wait_for(blocked, 10) == [(TENANTS[round_ * 5], 1)]


async def test_a_tenant_watched_while_a_follow_waits_is_read_from_its_cursor_at_once(
    store: RedisStore,
) -> None:
    await store.append("t0", "before", TS)  # no hint reaches this node for it
    cursors: dict[str, int] = {}
    waiting = asyncio.create_task(store.follow(cursors, count=10))
    await asyncio.sleep(0)  # let it wait first
    cursors["t0"] = 0
    store.watch("t0")
    events = await asyncio.wait_for(waiting, 10)  # not the minute of its block time
    assert [(e.tenant_id, e.seq) for e in events] == [("t0", 1)]


async def test_a_tenant_followed_later_is_read_from_its_cursor_without_a_hint(
    store: RedisStore,
) -> None:
    cursors = watched(store, {"t0": 0})
    await store.append("t0", "one", TS)
    assert await follow_until(store, cursors, 1) == [("t0", 1)]
    # Appended before t1 is followed: no hint reaches this node for these two.
    await store.append("t1", "a", TS)
    await store.append("t1", "b", TS)
    cursors["t1"] = 1
    store.watch("t1")
    assert await follow_until(store, cursors, 1) == [("t1", 2)]


async def test_an_event_whose_hint_was_lost_is_read_at_the_next_heal(redis_url: str) -> None:
    client = store_client(redis_url)
    follow = HintedFollow(client, block_s=60, heal_s=0.3)
    try:
        cursors = {"t0": 0}
        follow.watch("t0")
        assert await follow.follow(cursors, 10) == []
        # Written as the append script does, without its hint.
        await client.xadd(stream_key("t0"), {"message": "quiet", "timestamp": TS}, id="1-0")
        await client.set(seq_key("t0"), 1)
        events = await asyncio.wait_for(follow.follow(cursors, 10), 10)
        while not events:  # a wait that began before the write ends at the heal
            events = await asyncio.wait_for(follow.follow(cursors, 10), 10)
        assert [(e.tenant_id, e.seq, e.message) for e in events] == [("t0", 1, "quiet")]
    finally:
        await follow.close()
        await client.aclose()


async def test_a_system_message_crosses_nodes_on_sharded_pub_sub(
    redis_cluster: RedisClusterServers,
) -> None:
    one, two = (NoticeChannel(redis_cluster.url, f"node-{n}") for n in (1, 2))
    heard: asyncio.Queue[tuple[str, SystemNotice]] = asyncio.Queue()
    for name, channel in (("one", one), ("two", two)):

        async def listener(notice: SystemNotice, name: str = name) -> None:
            heard.put_nowait((name, notice))

        channel.add_listener(listener)
        await channel.start()
    try:
        await asyncio.wait_for(asyncio.gather(one.listening.wait(), two.listening.wait()), 10)
        notice: SystemNotice = {"message": "hello", "level": "info", "timestamp": TS}
        await one.send(notice)
        received = [await asyncio.wait_for(heard.get(), 10) for _ in range(2)]
        assert sorted(received) == [("one", notice), ("two", notice)]  # each once
        assert heard.empty()
    finally:
        await one.close()
        await two.close()


async def follow_until_refused(store: RedisStore, cursors: dict[str, int]) -> None:
    """Follows, nothing new coming, until a follow raises. A follow may return nothing
    first: the confirmation of a subscription makes its stream be read once more."""
    while True:
        assert await store.follow(cursors, count=10) == []


async def test_a_lost_subscription_is_said_once_and_the_follow_goes_on(
    redis_server: RedisServer,
) -> None:
    store = RedisStore(redis_server.url, 100, follow_block_ms=60_000)
    try:
        cursors = watched(store, {"t0": 0})
        await store.append("t0", "before", TS)
        assert await follow_until(store, cursors, 1) == [("t0", 1)]
        waiting = asyncio.create_task(follow_until_refused(store, cursors))
        await redis_server.restart()  # AOF: the data stays, the connections go
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(waiting, 10)
        await store.append("t0", "after", TS)  # restart() returns once Redis answers
        assert await follow_until(store, cursors, 1) == [("t0", 2)]
    finally:
        await store.close()


async def test_hints_come_again_after_an_outage_of_several_failed_reconnects(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    store = RedisStore(redis_server.url, 100, follow_block_ms=60_000)
    try:
        cursors = watched(store, {"t0": 0})
        assert await store.follow(cursors, count=10) == []  # subscribed, read: nothing
        await redis_server.stop()
        await eventually(
            lambda: caplog.text.count("stream hints channel lost") >= 3,
            "three reconnects of the hints failed",
        )
        await redis_server.start()
        with pytest.raises(StoreUnavailable):  # the loss is said once
            await asyncio.wait_for(store.follow(cursors, count=10), 10)
        await store.append("t0", "after", TS)
        # Hinted, not healed (the heal is 30 s away): each follow waits 10 s at most.
        assert await follow_until(store, cursors, 1) == [("t0", 1)]
    finally:
        await store.close()


class Reader:
    """Follows `cursors` as the relay does (`RedisStore.follow` again and again, the
    cursors moving to each event returned, a refused follow tried again shortly), keeping
    each event read with when, and saying each read."""

    def __init__(self, store: RedisStore, cursors: dict[str, int]) -> None:
        self.store = store
        self.cursors = watched(store, cursors)
        self.read: list[tuple[Event, float]] = []
        self.arrived = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                events = await self.store.follow(self.cursors, count=500)
            except StoreUnavailable:
                await asyncio.sleep(0.05)  # the relay's backoff, shorter
                continue
            for event in events:
                self.read.append((event, time.monotonic()))
                self.cursors[event.tenant_id] = event.seq
                self.arrived.set()

    async def until(self, tenant: str, seq: int, within: float) -> float:
        """When `tenant`'s event `seq` was read (AssertionError after `within` s)."""
        async with asyncio.timeout(within):
            while self.cursors[tenant] < seq:
                self.arrived.clear()
                await self.arrived.wait()
        return next(at for event, at in self.read if (event.tenant_id, event.seq) == (tenant, seq))

    def seqs(self, tenant: str) -> list[int]:
        return [event.seq for event, _ in self.read if event.tenant_id == tenant]

    async def close(self) -> None:
        await stop(self._task)


async def test_a_stopped_master_does_not_hold_up_the_tenants_of_the_others(
    redis_cluster: RedisClusterServers,
) -> None:
    def master(tenant: str) -> int:
        return redis_cluster.owner(key_slot(stream_key(tenant).encode()))

    a = TENANTS[0]
    b = next(tenant for tenant in TENANTS if master(tenant) != master(a))
    paused = master(a)
    # Else the others refuse every command once they agree the stopped one failed (its
    # slots are not covered): a cluster that serves what it can is what this is about.
    redis_cluster.configure("cluster-require-full-coverage", "no")
    store = RedisStore(redis_cluster.url, 100)
    reader = Reader(store, {a: 0, b: 0})
    try:
        await store.append(a, "a1", TS)
        await store.append(b, "b1", TS)
        await reader.until(a, 1, 10)
        await reader.until(b, 1, 10)
        await store.append(a, "a2", TS)
        # Before the reader has run: its read of a's hinted stream is sent to a stopped
        # master, which answers nothing until the client's timeout.
        redis_cluster.pause(paused)
        try:
            stopped = time.monotonic()
            delays: list[float] = []
            while time.monotonic() - stopped < PAUSE_S:
                sent = time.monotonic()
                seq = (await store.append(b, f"b{len(delays) + 2}", TS)).seq
                delays.append(await reader.until(b, seq, 10) - sent)
                await asyncio.sleep(0.2)  # spread over the pause
        finally:
            redis_cluster.resume(paused)
        resumed = time.monotonic()
        # Appended after the resume: they go to the master a's earlier read was sent to.
        for n in (3, 4):
            await store.append(a, f"a{n}", TS)
        read_a = await reader.until(a, 4, 10) - resumed
        logging.getLogger(__name__).warning(
            "b read %s s after append while %d was stopped; a's events %.3f s after resume",
            [round(d, 3) for d in delays],
            paused,
            read_a,
        )
        assert max(delays) < UNHELD_S, delays
        assert reader.seqs(a) == [1, 2, 3, 4]  # once, in order
        assert reader.seqs(b) == list(range(1, len(delays) + 2))
    finally:
        await reader.close()
        await store.close()
        redis_cluster.configure("cluster-require-full-coverage", "yes")
