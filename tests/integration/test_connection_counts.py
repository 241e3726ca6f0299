"""Connection counts shared through Redis (cluster.RedisConnections), on one redis-server
and on a real 3-master Redis Cluster: each script touches only its tenant's slot."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from feedserver.cluster import RedisConnections, connections_key
from feedserver.store.redis import store_client
from tests.redis_server import running_redis
from tests.waiting import eventually

pytestmark = pytest.mark.redis


class Opener:
    """Opens nodes' counters over one Redis (or one cluster), at `url`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.opened: list[RedisConnections] = []

    def __call__(self, node_id: str, **options: float) -> RedisConnections:
        node = RedisConnections(self.url, node_id, **options)
        self.opened.append(node)
        return node


@pytest.fixture(params=["redis", "redis-cluster"])
async def open_node(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    """Opens nodes' counters over one Redis (or one cluster); closes those still open."""
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "redis":
            url = (await stack.enter_async_context(running_redis(tmp_path))).url
        else:
            url = request.getfixturevalue("redis_cluster").url

        opener = Opener(url)
        yield opener
        for node in opener.opened:
            await node.close()


async def counted(node: RedisConnections, tenant: str, expected: int) -> None:
    async def seen() -> bool:
        return await node.count(tenant) == expected

    await eventually(seen, f"{node.node_id} counts {expected} of {tenant}")


async def test_each_node_counts_the_others_sockets_of_each_tenant(open_node: Opener) -> None:
    a, b = open_node("a", debounce_s=0), open_node("b", debounce_s=0)
    await a.start()
    await b.start()
    for tenant in ("t1", "t2", "t2", "t3"):  # tenants in different slots of a cluster
        b.opened(tenant)
    a.opened("t2")
    await counted(a, "t2", 3)
    await counted(a, "t1", 1)
    await counted(b, "t2", 3)
    b.closed("t2")
    b.closed("t1")  # b's last socket of t1: its entry goes
    await counted(a, "t2", 2)
    await counted(a, "t1", 0)
    await counted(a, "t3", 1)


async def test_a_node_that_stops_refreshing_stops_counting(open_node: Opener) -> None:
    watcher, dying = open_node("watcher"), open_node("dying", refresh_s=0.4, debounce_s=0)
    await dying.start()
    dying.opened("t1")
    await counted(watcher, "t1", 1)
    # Its refresh task ends without removing anything, as when a node is killed.
    assert dying._task is not None
    dying._task.cancel()
    await counted(watcher, "t1", 0)  # after its TTL (3 x refresh_s, whole seconds)


async def test_a_closed_node_leaves_the_totals_at_once(open_node: Opener) -> None:
    watcher, leaving = open_node("watcher"), open_node("leaving", debounce_s=0)
    await leaving.start()
    leaving.opened("t1")
    await counted(watcher, "t1", 1)
    await leaving.close()
    assert await watcher.count("t1") == 0


async def test_a_change_writes_the_counts_of_the_tenants_it_changed_only(
    open_node: Opener,
) -> None:
    """Between two refreshes of everything, a connect or a disconnect writes its tenant's
    count, not every tenant's: with many tenants a node would otherwise rewrite all of them
    back to back while connections come and go."""
    a, b = open_node("a", debounce_s=0, refresh_s=3600), open_node("b", debounce_s=0)
    await a.start()
    await b.start()
    for tenant in ("t1", "t2"):
        a.opened(tenant)
    await counted(b, "t1", 1)
    await counted(b, "t2", 1)
    client = store_client(open_node.url)  # remove a's entry of t2 behind its back
    await client.hdel(connections_key("t2"), "a")
    await client.aclose()
    a.opened("t1")
    await counted(b, "t1", 2)
    assert await b.count("t2") == 0  # not written again: t2 did not change
    a.closed("t2")  # t2's last socket: its entry (gone already) is removed, nothing else
    a.opened("t3")
    await counted(b, "t3", 1)
    assert (await b.count("t1"), await b.count("t2")) == (2, 0)
