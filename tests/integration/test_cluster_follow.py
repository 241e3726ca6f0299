"""Following streams on a real 3-master Redis Cluster: `RedisStore.follow` through hints.

XREAD cannot block on streams of several slots, so on a cluster an append SPUBLISHes a
hint in its tenant's slot and `HintedFollow` reads the hinted streams: these tests check
that what the relay relies on still holds there (every event after the cursors, once, in
order; a blocked follow ends at an append or a wake-up; nothing missed for want of a hint).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from feedserver.cluster import NoticeChannel, relay_wake_key
from feedserver.core import SystemNotice
from feedserver.store.redis import HintedFollow, RedisStore, seq_key, store_client, stream_key
from tests.redis_cluster import RedisClusterServers

pytestmark = pytest.mark.redis

TS = "2026-01-20T10:30:00.000Z"
WAKE = relay_wake_key("this-node")
# Tenants whose keys are in slots of all three masters (checked in the first test).
TENANTS = [f"t{n}" for n in range(12)]


@pytest.fixture
async def store(redis_cluster: RedisClusterServers) -> AsyncIterator[RedisStore]:
    store = RedisStore(redis_cluster.url, 100, follow_block_ms=60_000)
    yield store
    await store.close()


async def follow_until(
    store: RedisStore, cursors: dict[str, int], count: int, *, batch: int = 500
) -> list[tuple[str, int]]:
    """(tenant, seq) of what `follow` returns until `count` events came, the cursors
    moving as the relay moves them."""
    read: list[tuple[str, int]] = []
    while len(read) < count:
        followed = await asyncio.wait_for(
            store.follow(cursors, count=batch, wake_key=WAKE, woken="0-0"), 10
        )
        for event in followed.events:
            read.append((event.tenant_id, event.seq))
            cursors[event.tenant_id] = event.seq
    return read


async def test_follow_returns_every_event_after_the_cursors_once_in_order_across_masters(
    store: RedisStore, redis_cluster: RedisClusterServers
) -> None:
    client = store_client(redis_cluster.url)
    await client.initialize()
    masters = {client.get_node_from_key(stream_key(t)).name for t in TENANTS}  # type: ignore[union-attr]
    await client.aclose()
    assert len(masters) == 3
    for tenant in TENANTS:
        for n in range(3):
            await store.append(tenant, f"before {n}", TS)
    cursors = {tenant: 1 for tenant in TENANTS}  # the first event of each is delivered
    read = await follow_until(store, cursors, 2 * len(TENANTS), batch=1)
    assert sorted(read) == sorted((t, s) for t in TENANTS for s in (2, 3))
    for tenant in TENANTS:
        assert [seq for t, seq in read if t == tenant] == [2, 3]  # in order
    assert cursors == {tenant: 3 for tenant in TENANTS}


async def test_a_blocked_follow_returns_at_an_append_not_at_its_block_time(
    store: RedisStore,
) -> None:
    cursors = {tenant: 0 for tenant in TENANTS}
    assert await follow_until(store, cursors, 0) == []
    first = await store.follow(cursors, count=10, wake_key=WAKE, woken="0-0")  # subscribed
    assert first.events == []
    for round_ in range(3):  # each wait ends at its append: no hint lost, none stale
        blocked = asyncio.create_task(follow_until(store, cursors, 1))
        await asyncio.sleep(0)  # let it block first
        await store.append(TENANTS[round_ * 5], "live", TS)
        assert await asyncio.wait_for(blocked, 10) == [(TENANTS[round_ * 5], 1)]


async def test_a_wake_up_ends_a_blocked_follow(store: RedisStore) -> None:
    blocked = asyncio.create_task(store.follow({}, count=10, wake_key=WAKE, woken="0-0"))
    await asyncio.sleep(0)
    await store.wake(WAKE)
    assert (await asyncio.wait_for(blocked, 10)).events == []


async def test_a_tenant_followed_later_is_read_from_its_cursor_without_a_hint(
    store: RedisStore,
) -> None:
    cursors = {"t0": 0}
    await store.append("t0", "one", TS)
    assert await follow_until(store, cursors, 1) == [("t0", 1)]
    # Appended before t1 is followed: no hint reaches this node for these two.
    await store.append("t1", "a", TS)
    await store.append("t1", "b", TS)
    cursors["t1"] = 1
    assert await follow_until(store, cursors, 1) == [("t1", 2)]


async def test_an_event_whose_hint_was_lost_is_read_at_the_next_heal(
    redis_cluster: RedisClusterServers,
) -> None:
    client = store_client(redis_cluster.url)
    follow = HintedFollow(client, block_s=60, heal_s=0.3)  # type: ignore[arg-type]
    try:
        cursors = {"t0": 0}
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
