"""Shared rate-limit counters (`open_window_counters`) on a real redis-server and a real
Redis Cluster: the same tests, each node with counters of its own over one Redis."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from redis.crc import key_slot

from feedserver.errors import StoreUnavailable
from feedserver.quotas import (
    LIMITS_KEY_PREFIX,
    FixedWindow,
    RequestLimiter,
    WindowCounters,
    open_window_counters,
)
from tests.redis_cluster import RedisClusterServers
from tests.redis_server import running_redis
from tests.waiting import eventually

NodeCounters = Callable[[], WindowCounters]


@pytest.fixture(params=["redis", "redis-cluster"])
async def node_counters(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[NodeCounters]:
    """Opens one node's counters over one redis-server, or over one Redis Cluster."""
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "redis":
            redis = await stack.enter_async_context(running_redis(tmp_path, appendonly=False))
            url = redis.url
        else:
            url = request.getfixturevalue("redis_cluster").url
        yield lambda: open_window_counters(url)


async def test_a_counter_counts_its_window_and_starts_again_after_it(
    node_counters: NodeCounters,
) -> None:
    counters = node_counters()
    assert [await counters.incr("k", 1) for _ in range(3)] == [1, 2, 3]
    assert 0 < await counters.seconds_left("k") <= 1

    async def counted_afresh() -> bool:
        # A hit while the window lasts counts on (4, 5...); the first after it counts 1.
        return await counters.incr("k", 1) == 1

    await eventually(counted_afresh, "a hit counted 1 once the window ended")
    assert await counters.incr("k", 1) == 2


async def test_a_cleared_window_starts_again_at_once(node_counters: NodeCounters) -> None:
    counters = node_counters()
    await counters.incr("k", 60)
    await counters.incr("k", 60)
    await counters.clear("k")
    used, seconds_left = await counters.hit("k", 60)
    assert used == 1 and 58 < seconds_left <= 60


async def test_two_nodes_share_each_clients_request_quota(node_counters: NodeCounters) -> None:
    # Twenty addresses: their counters' keys spread over the cluster's masters.
    addresses = [f"203.0.113.{n}" for n in range(20)]
    a, b = (RequestLimiter(FixedWindow(node_counters(), "ip", 4, 60)) for _ in range(2))
    for address in addresses:
        quotas = [await node.hit(address) for node in (a, b, a, b, a)]
        assert [q.used for q in quotas] == [1, 2, 3, 4, 5]
        assert [q.allowed for q in quotas] == [True] * 4 + [False]
        assert all(1 <= q.reset_after <= 60 for q in quotas)


async def test_hits_sent_to_the_old_master_of_a_moved_counter_are_counted_once(
    replicated_cluster: RedisClusterServers,
) -> None:
    counters = open_window_counters(replicated_cluster.url)
    slot = key_slot(f"{LIMITS_KEY_PREFIX}:k".encode())
    assert await counters.incr("k", 600) == 1  # the client knows the slots, the key exists
    source = replicated_cluster.owner(slot)
    target = next(port for port in replicated_cluster.masters() if port != source)
    await asyncio.to_thread(replicated_cluster.move_slot, slot, target)
    # All sent to the source at once: each answered MOVED, followed to the target.
    counts = await asyncio.gather(*(counters.incr("k", 600) for _ in range(20)))
    assert sorted(counts) == list(range(2, 22))


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1/0", "redis-cluster://127.0.0.1:1"])
async def test_counters_that_cannot_reach_redis_are_unavailable_not_a_crash(url: str) -> None:
    """A 503 (`StoreUnavailable`), as the event store: `limits` wraps redis-py's RedisError,
    not the RedisClusterException of a cluster client that reaches no node."""
    counters = open_window_counters(url)
    await counters.start()  # logged, not raised: the first hit asks again
    for _ in range(2):  # the first fails to connect, the next to learn the slots
        with pytest.raises(StoreUnavailable):
            await counters.incr("k", 1)
