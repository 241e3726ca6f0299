"""Two feedserver nodes on a real Redis Cluster with replicas, through what a cluster does
to a master: a socket on one node keeps getting every event published on the other,
once, in order, across a graceful failover and a kill of the master of its tenant's slot.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from redis.crc import key_slot

from feedserver.store.redis import stream_key
from tests.conftest import ServerFactory
from tests.feed_subscriber import subscribed
from tests.redis_cluster import RedisClusterServers

pytestmark = [pytest.mark.redis, pytest.mark.timeout(90)]

TENANT = "tenant_a"
# A killed master's replica is promoted within about 2.5 s (1 s node timeout).
RECOVERY_S = 15.0


async def post(http: ClientSession, node: TestServer, message: str) -> int:
    async with http.post(
        node.make_url("/api/events"), json={"message": message}, headers={"X-Tenant-ID": TENANT}
    ) as resp:
        return resp.status


async def post_once_it_is_taken(http: ClientSession, node: TestServer, message: str) -> None:
    """POST until a 201: while the slot has no master the answer is 503 and nothing is
    stored (the dead master refuses the connection), so trying again stores it once."""
    deadline = time.monotonic() + RECOVERY_S
    while (status := await post(http, node, message)) != 201:
        assert status == 503, status
        assert time.monotonic() < deadline, "publishes did not resume"
        await asyncio.sleep(0.1)  # polling a cluster that promotes a replica: no event to await


async def test_a_socket_gets_every_event_once_in_order_through_a_failover_and_a_kill(
    replicated_cluster: RedisClusterServers, start_server: ServerFactory
) -> None:
    a, b = [await start_server(store=replicated_cluster.url) for _ in range(2)]
    master = replicated_cluster.owner(key_slot(stream_key(TENANT).encode()))
    async with ClientSession() as http, subscribed(str(b.make_url("")), TENANT) as sub:
        for n in range(1, 6):
            assert await post(http, a, f"m{n}") == 201
        await sub.wait_for_seq(5)
        promoted = await asyncio.to_thread(replicated_cluster.fail_over, master)
        for n in range(6, 11):  # a graceful failover loses nothing: all acknowledged at once
            assert await post(http, a, f"m{n}") == 201
        await sub.wait_for_seq(10)
        await asyncio.to_thread(replicated_cluster.kill, promoted)
        for n in range(11, 16):  # the replica had everything: nothing lost, seqs go on
            await post_once_it_is_taken(http, a, f"m{n}")
        await sub.wait_for_seq(15, within=RECOVERY_S)
        assert sub.seqs == list(range(1, 16))
        assert [e["message"] for e in sub.live] == [f"m{n}" for n in range(1, 16)]
