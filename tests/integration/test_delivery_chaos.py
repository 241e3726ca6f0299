"""Chaos: 50 real JS clients on two nodes, connections cut at random while events flow,
on one redis-server and on a real 3-master Redis Cluster.

Every client is a plain socket.io-client@4 socket (tests/js/swarm.mjs) that only
reconnects; socket.io's own connection state recovery and the server do the rest. At the
end every client must hold every event exactly once, in order.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from typing import Any

import pytest
from aiohttp import ClientSession, TCPConnector
from aiohttp.test_utils import TestServer

from tests.conftest import ServerFactory
from tests.js_swarm import JsSwarm, js_swarm

pytestmark = [pytest.mark.redis, pytest.mark.node, pytest.mark.timeout(150)]

CLIENTS = 50
CHAOS_S = 20.0
EVENTS_PER_S = 100
CUTS_PER_S = 20
SETTLE_S = 30.0


async def post_for(nodes: list[TestServer], seconds: float) -> int:
    """Post at EVENTS_PER_S, alternating nodes, for `seconds`; return how many were posted."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    posted = 0
    async with ClientSession(connector=TCPConnector(limit=20)) as http:

        async def post(node: TestServer, n: int) -> None:
            async with http.post(
                node.make_url("/api/events"),
                json={"message": f"chaos {n}"},
                headers={"X-Tenant-ID": "tenant_a"},
            ) as resp:
                assert resp.status == 201, await resp.text()

        pending: set[asyncio.Task[None]] = set()
        for n in itertools.count():
            due = started + n / EVENTS_PER_S
            if due - started >= seconds:
                break
            await asyncio.sleep(max(0.0, due - loop.time()))  # pacing, not synchronisation
            task = asyncio.create_task(post(nodes[n % len(nodes)], n))
            pending.add(task)
            task.add_done_callback(pending.discard)
            posted += 1
        await asyncio.gather(*pending)
    return posted


async def cut_for(swarm: JsSwarm, nodes: list[TestServer], seconds: float) -> int:
    """Close a random client's transport CUTS_PER_S times a second; it reconnects to a
    random node."""
    rng = random.Random(20261127)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    cuts = 0
    while loop.time() < deadline:
        await swarm.drop(rng.randrange(CLIENTS), url=rng.choice(nodes).make_url(""))
        cuts += 1
        await asyncio.sleep(1 / CUTS_PER_S)
    return cuts


async def settled(swarm: JsSwarm, total: int) -> list[dict[str, Any]]:
    """Reports until every client is connected and holds the last event, or SETTLE_S."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_S
    while True:
        states = await swarm.report(held=False)
        if all(c["connected"] and c["last"] == total for c in states):
            break
        if loop.time() > deadline:
            break
        await asyncio.sleep(0.25)  # polling the clients' state, bounded by SETTLE_S
    return await swarm.report()


async def test_every_client_holds_every_event_once_in_order_through_random_cuts(
    start_server: ServerFactory, redis_url: str
) -> None:
    nodes = [await start_server(store=redis_url) for _ in range(2)]
    urls = [node.make_url("") for node in nodes]
    # WebSocket only: long-polling recovery is covered in test_connection_recovery, and the
    # whole test (both nodes, the posting, the cutting) shares one Python process.
    swarm_options: dict[str, Any] = {"auth": {"tenant": "tenant_a"}, "transports": ["websocket"]}
    async with js_swarm(urls, count=CLIENTS, **swarm_options) as swarm:
        await swarm.all_connected(CLIENTS)
        total, cuts = await asyncio.gather(post_for(nodes, CHAOS_S), cut_for(swarm, nodes, CHAOS_S))
        report = await settled(swarm, total)

    expected = list(range(1, total + 1))
    missing = sum(len(set(expected) - set(c["held"])) for c in report)
    duplicates = sum(len(c["held"]) - len(set(c["held"])) for c in report)
    out_of_order = sum(c["held"] != sorted(c["held"]) for c in report)
    reconnects = sum(c["connects"] - 1 for c in report)
    recovered = sum(c["recovered"] for c in report)
    print(
        f"\nchaos: {total} events, {CLIENTS} clients on 2 nodes, {cuts} cuts, "
        f"{reconnects} reconnects ({recovered} recovered): "
        f"missing {missing}, duplicates {duplicates}, out of order {out_of_order} clients"
    )
    assert (missing, duplicates, out_of_order) == (0, 0, 0)
    assert all(c["held"] == expected and c["badOffsets"] == 0 for c in report)
    assert recovered == reconnects > 0
