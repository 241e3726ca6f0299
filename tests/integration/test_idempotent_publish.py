"""`Idempotency-Key` on POST and `idempotencyKey` on `create_event`: a retry creates nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from tests.js_client import js_client

TENANT_A = {"X-Tenant-ID": "tenant_a"}


async def publish(
    http: ClientSession, server: TestServer, key: str | None, **body: Any
) -> tuple[int, dict[str, str], dict[str, Any]]:
    headers = dict(TENANT_A) if key is None else {**TENANT_A, "Idempotency-Key": key}
    async with http.post(
        server.make_url("/api/events"), json={"message": "once", **body}, headers=headers
    ) as resp:
        return resp.status, dict(resp.headers), await resp.json()


async def held_events(http: ClientSession, server: TestServer, tenant: str = "tenant_a") -> int:
    async with http.get(server.make_url("/api/events"), headers={"X-Tenant-ID": tenant}) as resp:
        count: int = (await resp.json())["count"]
        return count


async def test_100_concurrent_posts_with_one_key_create_exactly_one_event(
    server: TestServer,
) -> None:
    async with ClientSession() as http:
        answers = await asyncio.gather(*(publish(http, server, "order-42") for _ in range(100)))
        assert await held_events(http, server) == 1
    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [200] * 99 + [201]
    assert len({body["id"] for _, _, body in answers}) == 1
    for status, headers, _ in answers:
        assert (headers.get("Idempotent-Replayed") == "true") is (status == 200)


async def test_retry_returns_the_first_event_even_with_another_message(
    server: TestServer,
) -> None:
    async with ClientSession() as http:
        status, _, first = await publish(http, server, "k1")
        assert status == 201
        status, headers, again = await publish(http, server, "k1", message="changed")
        assert (status, headers["Idempotent-Replayed"], again) == (200, "true", first)
        status, _, other = await publish(http, server, "k2")
        assert status == 201 and other["seq"] == first["seq"] + 1


async def test_keys_are_per_tenant(server: TestServer) -> None:
    async with ClientSession() as http:
        await publish(http, server, "shared")
        async with http.post(
            server.make_url("/api/events"),
            json={"message": "b"},
            headers={"X-Tenant-ID": "tenant_b", "Idempotency-Key": "shared"},
        ) as resp:
            assert resp.status == 201
            assert (await resp.json())["tenantId"] == "tenant_b"


@pytest.mark.parametrize("key", ["", "x" * 129, "has space", "caf\u00e9", "tab\there"])
async def test_malformed_idempotency_key_is_refused_and_creates_nothing(
    server: TestServer, key: str
) -> None:
    async with ClientSession() as http:
        async with http.post(
            server.make_url("/api/events"),
            json={"message": "x"},
            headers={**TENANT_A, "Idempotency-Key": key.encode().decode("latin-1")},
        ) as resp:
            assert resp.status == 400
            error = (await resp.json())["error"]
        assert error["code"] == "validation_error"
        assert "Idempotency-Key" in error["details"]
        assert await held_events(http, server) == 0


async def test_header_and_body_keys_must_agree(server: TestServer) -> None:
    async with ClientSession() as http:
        status, _, body = await publish(http, server, "a", idempotencyKey="b")
        assert status == 400 and "Idempotency-Key" in body["error"]["details"]
        status, _, _ = await publish(http, server, "a", idempotencyKey="a")
        assert status == 201
        assert await held_events(http, server) == 1


@pytest.mark.node
async def test_create_event_with_idempotency_key_acks_the_first_event_once(
    server: TestServer,
) -> None:
    payload = {"message": "hi", "idempotencyKey": "retry-me"}
    async with (
        js_client(server.make_url(""), query={"tenant": "tenant_a"}) as sender,
        js_client(server.make_url(""), query={"tenant": "tenant_a"}) as watcher,
    ):
        await watcher.expect_event("initial_events")
        first = await sender.emit("create_event", payload)
        again = await sender.emit("create_event", payload)
        bad = await sender.emit("create_event", {"message": "hi", "idempotencyKey": ""})
        later = await sender.emit("create_event", {"message": "later"})
        assert first == {"ok": True, "event": first["event"]}
        assert again == {"ok": True, "event": first["event"], "replayed": True}
        assert bad["ok"] is False and "idempotencyKey" in bad["error"]["details"]
        # The retry was not broadcast: the next event the watcher sees is the later one.
        assert (await watcher.expect_event("event_created"))[0] == first["event"]
        assert (await watcher.expect_event("event_created"))[0] == later["event"]


async def test_unknown_fields_are_still_refused(server: TestServer) -> None:
    async with ClientSession() as http:
        status, _, body = await publish(http, server, None, extra=1)
        assert status == 400 and "extra" in body["error"]["details"]
        assert await held_events(http, server) == 0
