"""Many real socket.io JS clients in one node process, that reconnect by themselves.

`tests/js/swarm.mjs` holds `count` sockets (socket.io-client@4, reconnection on) that keep
the list an application would show: `initial_events` replaces it, `event_created` appends.
Reading its JSON lines is `JsClient`'s job (tests/js_client.py); this adds the swarm's
commands:

    async with js_swarm([url], count=2, auth={"tenant": "tenant_a"}) as swarm:
        await swarm.expect_type("connect")
        await swarm.drop(0)                 # close socket 0's transport; it reconnects
        report = await swarm.report()       # [{client, held, connects, recovered, ...}]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from tests.js_client import JS_DIR, JsClient, _require_node
from tests.lines import Line

SCRIPT = JS_DIR / "swarm.mjs"
CONNECT_ALL_TIMEOUT = 30.0


class JsSwarm(JsClient):
    async def drop(self, client: int, url: object | None = None) -> None:
        """Close socket `client`'s transport, as a network cut; with `url`, it reconnects there."""
        command: dict[str, Any] = {"op": "drop", "client": client}
        if url is not None:
            command["url"] = str(url).rstrip("/")
        await self._command(command)

    async def report(self, *, held: bool = True) -> list[Line]:
        """Every socket's state: held seqs (unless `held` is False), last seq held, connects,
        recovered connects, bad offsets, connected."""
        await self._command({"op": "report", "held": held})
        line = await self.expect(lambda line: line["type"] == "report")
        clients: list[Line] = line["clients"]
        return clients

    async def all_connected(self, count: int) -> None:
        """Wait for the `connect` of `count` distinct sockets."""
        seen: set[int] = set()
        while len(seen) < count:
            line = await self.expect_type("connect", CONNECT_ALL_TIMEOUT)
            seen.add(line["client"])


@contextlib.asynccontextmanager
async def js_swarm(
    urls: Sequence[object],
    *,
    count: int = 1,
    verbose: bool = False,
    **options: Any,
) -> AsyncIterator[JsSwarm]:
    """Start `count` sockets `io(urls[i % len(urls)], options)` in one node process."""
    _require_node()
    spec = {
        "urls": [str(url).rstrip("/") for url in urls],
        "count": count,
        "verbose": verbose,
        "options": options,
    }
    process = await asyncio.create_subprocess_exec(
        "node",
        str(SCRIPT),
        json.dumps(spec),
        cwd=JS_DIR,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=16 << 20,  # one report line holds every socket's list
    )
    swarm = JsSwarm(process)
    try:
        yield swarm
    finally:
        await swarm.close()
