"""The curl line of the README works against a real server."""

from __future__ import annotations

from aiohttp import ClientSession
from aiohttp.test_utils import TestServer


async def test_post_then_list_returns_the_escaped_event(server: TestServer) -> None:
    async with ClientSession(str(server.make_url(""))) as http:
        headers = {"X-Tenant-ID": "tenant_a"}
        async with http.post("/api/events", json={"message": "hi <b>"}, headers=headers) as resp:
            assert resp.status == 201
            event = await resp.json()
        assert event["seq"] == 1 and event["message"] == "hi &lt;b&gt;"
        async with http.get("/api/events", headers=headers) as resp:
            body = await resp.json()
        assert body["events"] == [event] and body["latestSeq"] == 1
