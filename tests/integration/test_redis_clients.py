"""The Redis clients every component opens (`store.redis.redis_client`, `store_client`):
a burst of commands larger than their connection cap waits for connections, it does not
fail, on one redis-server and on a real 3-master Redis Cluster."""

from __future__ import annotations

import asyncio
from typing import Any

from feedserver.store.redis import store_client

BURST = 300  # three times the connections of one client


async def test_a_burst_past_the_connection_cap_waits_and_every_command_succeeds(
    redis_url: str,
) -> None:
    client = store_client(redis_url)
    try:
        # Each holds its connection 0.1 s (nothing to pop), so the burst needs three times
        # the cap at once; one hash tag: on a cluster all go to one master, the worst case.
        waits = [client.blpop([f"feed:{{burst}}:{n}"], timeout=0.1) for n in range(BURST)]
        counts = [client.incr("feed:{burst}:count") for _ in range(BURST)]
        done: list[Any] = await asyncio.gather(*waits, *counts)
        assert done[:BURST] == [None] * BURST
        assert sorted(done[BURST:]) == list(range(1, BURST + 1))
    finally:
        await client.aclose()
