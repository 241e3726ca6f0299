"""REST calls that tests make around their real subject (publishing, reading latestSeq)."""

from __future__ import annotations

from typing import Any, TypedDict

from aiohttp import ClientSession
from aiohttp.test_utils import TestServer


class RequestBody(TypedDict, total=False):
    """A `ClientSession.request` body, for tables of test requests (at most one of the two)."""

    data: bytes
    json: dict[str, Any]


class RequestOptions(RequestBody, total=False):
    """A body and headers, for tables of test requests that vary the headers too."""

    headers: dict[str, str]


async def publish(server: TestServer, tenant: str, message: str) -> dict[str, Any]:
    """POST one event for `tenant`; the 201 event object."""
    async with (
        ClientSession() as http,
        http.post(
            server.make_url("/api/events"),
            json={"message": message},
            headers={"X-Tenant-ID": tenant},
        ) as resp,
    ):
        assert resp.status == 201, await resp.text()
        event: dict[str, Any] = await resp.json()
        return event


async def latest_seq(server: TestServer, tenant: str) -> int:
    """The tenant's `latestSeq` from GET /api/events."""
    async with (
        ClientSession() as http,
        http.get(server.make_url("/api/events"), headers={"X-Tenant-ID": tenant}) as resp,
    ):
        assert resp.status == 200, await resp.text()
        seq: int = (await resp.json())["latestSeq"]
        return seq
