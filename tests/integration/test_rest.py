"""Every REST call and every refusal, against a real server on a free port."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from feedserver.app import FEED, create_app
from tests.conftest import ServerFactory, make_settings
from tests.faulty_store import SECRET_DETAIL, BrokenAppendStore

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
A = {"X-Tenant-ID": "tenant_a"}
B = {"X-Tenant-ID": "tenant_b"}


@pytest.fixture
async def http(server: TestServer) -> AsyncIterator[ClientSession]:
    async with ClientSession(str(server.make_url(""))) as session:
        yield session


async def publish(http: ClientSession, message: str, headers: dict[str, str] = A) -> Any:
    async with http.post("/api/events", json={"message": message}, headers=headers) as resp:
        assert resp.status == 201, await resp.text()
        return await resp.json()


async def latest_seq(http: ClientSession, headers: dict[str, str] = A) -> int:
    async with http.get("/api/events", headers=headers) as resp:
        assert resp.status == 200
        seq: int = (await resp.json())["latestSeq"]
        return seq


async def error_of(resp: Any, status: int, code: str) -> dict[str, Any]:
    """Check the documented JSON error shape and return its `error` object."""
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert set(error) <= {"code", "message", "details"}
    return error


# -- POST /api/events -----------------------------------------------------------------------


async def test_post_returns_201_with_the_event_object(http: ClientSession) -> None:
    async with http.post("/api/events", json={"message": "hi <b>"}, headers=A) as resp:
        assert resp.status == 201
        assert resp.content_type == "application/json" and resp.charset == "utf-8"
        event = await resp.json()
    assert set(event) == {"id", "seq", "tenantId", "message", "timestamp"}
    assert event["id"] == "tenant_a-1" and event["seq"] == 1
    assert event["tenantId"] == "tenant_a"
    assert event["message"] == "hi &lt;b&gt;"
    assert TIMESTAMP.match(event["timestamp"])


async def test_seq_is_per_tenant_and_increases_by_one(http: ClientSession) -> None:
    a = [await publish(http, f"a{i}") for i in range(3)]
    b = await publish(http, "b0", B)
    assert [e["seq"] for e in a] == [1, 2, 3]
    assert (b["seq"], b["id"], b["tenantId"]) == (1, "tenant_b-1", "tenant_b")


async def test_unicode_round_trips(http: ClientSession) -> None:
    event = await publish(http, "  e\u0301 😀 日本  ")
    assert event["message"] == "\u00e9 😀 日本"


# -- GET /api/events ------------------------------------------------------------------------


async def test_get_lists_the_newest_50_oldest_first(http: ClientSession) -> None:
    events = [await publish(http, f"m{i}") for i in range(55)]
    await publish(http, "other tenant", B)
    async with http.get("/api/events", headers=A) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body == {"tenantId": "tenant_a", "events": events[5:], "count": 50, "latestSeq": 55}


async def test_get_limit_since_before(http: ClientSession) -> None:
    await publish(http, "warm up")
    events = [await publish(http, f"m{i}") for i in range(1, 10)]  # seq 2..10
    cases = {
        "limit=3": [8, 9, 10],
        "limit=3&before=5": [2, 3, 4],
        "limit=3&since=4": [5, 6, 7],
        "since=8": [9, 10],
        "since=2&before=9&limit=3": [6, 7, 8],
        "since=10": [],
        "before=1": [],
        "limit=500": list(range(1, 11)),
    }
    for query, expected in cases.items():
        async with http.get(f"/api/events?{query}", headers=A) as resp:
            assert resp.status == 200, query
            body = await resp.json()
        assert [e["seq"] for e in body["events"]] == expected, query
        assert body["count"] == len(expected) and body["latestSeq"] == 10
    assert events[-1]["seq"] == 10


async def test_get_of_a_tenant_without_events(http: ClientSession) -> None:
    async with http.get("/api/events", headers=B) as resp:
        assert await resp.json() == {
            "tenantId": "tenant_b",
            "events": [],
            "count": 0,
            "latestSeq": 0,
        }


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=abc", "limit"),
        ("limit=", "limit"),
        ("since=-1", "since"),
        ("since=x", "since"),
        ("before=-2", "before"),
        ("before=1.5", "before"),
        ("page=2", "page"),
    ],
)
async def test_get_query_errors_name_the_field(http: ClientSession, query: str, field: str) -> None:
    async with http.get(f"/api/events?{query}", headers=A) as resp:
        error = await error_of(resp, 400, "validation_error")
    assert field in error["details"]


# -- stats and health -----------------------------------------------------------------------


async def test_stats_with_a_tenant_shows_only_that_tenant(http: ClientSession) -> None:
    last = [await publish(http, f"a{i}") for i in range(3)][-1]
    await publish(http, "b", B)
    async with http.get("/api/events/stats", headers=A) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body == {
        "totalEvents": 3,
        "tenantStats": {
            "tenant_a": {
                "events": 3,
                "held": 3,
                "connections": 0,
                "lastEventAt": last["timestamp"],
            }
        },
    }


async def test_stats_without_a_tenant_shows_all_in_auth_none(http: ClientSession) -> None:
    await publish(http, "a")
    await publish(http, "b1", B)
    await publish(http, "b2", B)
    async with http.get("/api/events/stats") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["totalEvents"] == 3
    assert set(body["tenantStats"]) == {"tenant_a", "tenant_b"}
    assert body["tenantStats"]["tenant_b"]["events"] == 2


async def test_stats_held_is_capped_by_the_ring_buffer(start_server: ServerFactory) -> None:
    server = await start_server(history_size=2)
    async with ClientSession(str(server.make_url(""))) as http:
        for i in range(5):
            await publish(http, f"m{i}")
        async with http.get("/api/events/stats", headers=A) as resp:
            row = (await resp.json())["tenantStats"]["tenant_a"]
        assert (row["events"], row["held"]) == (5, 2)
        async with http.get("/api/events?since=0", headers=A) as resp:
            assert [e["seq"] for e in (await resp.json())["events"]] == [4, 5]


async def test_health(http: ClientSession) -> None:
    async with http.get("/api/health") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["status"] == "healthy"
    assert TIMESTAMP.match(body["timestamp"])
    assert isinstance(body["version"], str) and body["version"]
    assert isinstance(body["uptime"], int | float) and body["uptime"] >= 0
    assert isinstance(body["memory"]["rss"], int) and body["memory"]["rss"] > 0
    assert body["store"] == {"backend": "memory", "ok": True}
    assert "tenant_a" not in str(body)


async def test_config_for_the_page(http: ClientSession) -> None:
    async with http.get("/api/config") as resp:
        body = await resp.json()
    assert body["tenants"] == ["tenant_a", "tenant_b"]
    assert (body["auth"], body["maxMessageLength"]) == ("none", 500)


# -- refusals: the documented error, and nothing stored -------------------------------------


@pytest.mark.parametrize(("method", "path"), [("POST", "/api/events"), ("GET", "/api/events")])
async def test_missing_tenant_is_400_with_details_tenant(
    http: ClientSession, method: str, path: str
) -> None:
    async with http.request(method, path, json={"message": "x"}) as resp:
        error = await error_of(resp, 400, "validation_error")
    assert "tenant" in error["details"]
    assert await latest_seq(http) == 0 and await latest_seq(http, B) == 0


@pytest.mark.parametrize("tenant", ["tenant_zz", "Tenant_A", "tenant a", "-x", "x" * 65, "%00"])
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/api/events"), ("GET", "/api/events"), ("GET", "/api/events/stats")],
)
async def test_unknown_or_malformed_tenant_is_403(
    http: ClientSession, tenant: str, method: str, path: str
) -> None:
    headers = {"X-Tenant-ID": tenant}
    async with http.request(method, path, json={"message": "x"}, headers=headers) as resp:
        error = await error_of(resp, 403, "forbidden_tenant")
    assert tenant not in error["message"]
    assert await latest_seq(http) == 0


@pytest.mark.parametrize("path", ["/api/nope", "/api/events/123", "/nothing-here"])
async def test_unknown_path_is_404_json(http: ClientSession, path: str) -> None:
    async with http.get(path, headers=A) as resp:
        await error_of(resp, 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/api/events", {"GET", "POST"}),
        ("PUT", "/api/events", {"GET", "POST"}),
        ("POST", "/api/health", {"GET"}),
        ("POST", "/api/events/stats", {"GET"}),
    ],
)
async def test_wrong_method_is_405_with_allow(
    http: ClientSession, method: str, path: str, allowed: set[str]
) -> None:
    async with http.request(method, path, json={"message": "x"}, headers=A) as resp:
        await error_of(resp, 405, "method_not_allowed")
        allow = {m.strip() for m in resp.headers["Allow"].split(",")}
    assert allowed <= allow <= allowed | {"OPTIONS", "HEAD"}
    assert await latest_seq(http) == 0


async def test_body_over_the_limit_is_413(start_server: ServerFactory) -> None:
    server = await start_server(max_body_bytes=200)
    async with ClientSession(str(server.make_url(""))) as http:
        big = b'{"message": "' + b"x" * 300 + b'"}'
        headers = {**A, "Content-Type": "application/json"}
        async with http.post("/api/events", data=big, headers=headers) as resp:
            await error_of(resp, 413, "payload_too_large")

        async def chunks() -> AsyncIterator[bytes]:
            # No Content-Length: the limit must hold while reading, too.
            for piece in (big[:100], big[100:]):
                yield piece

        async with http.post("/api/events", data=chunks(), headers=headers) as resp:
            await error_of(resp, 413, "payload_too_large")
        assert await latest_seq(http) == 0
        small = b'{"message": "' + b"x" * 150 + b'"}'
        async with http.post("/api/events", data=small, headers=headers) as resp:
            assert resp.status == 201


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1"],
)
async def test_wrong_content_type_is_415(http: ClientSession, content_type: str | None) -> None:
    headers = dict(A)
    if content_type is not None:
        headers["Content-Type"] = content_type
    async with http.post("/api/events", data=b'{"message": "hi"}', headers=headers) as resp:
        await error_of(resp, 415, "unsupported_media_type")
    assert await latest_seq(http) == 0


async def test_json_with_a_utf8_charset_is_accepted(http: ClientSession) -> None:
    headers = {**A, "Content-Type": "application/json; charset=UTF-8"}
    async with http.post("/api/events", data='{"message": "ü"}'.encode(), headers=headers) as resp:
        assert resp.status == 201
        assert (await resp.json())["message"] == "ü"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"", "body"),
        (b"{", "body"),
        (b"{'message': 'hi'}", "body"),
        (b'{"message": "hi"', "body"),
        (b"\xff\xfe", "body"),
        (b'{"message": "hi", "extra": 1}', "extra"),
        (b'{"message": "hi", "tenantId": "tenant_b"}', "tenantId"),
        (b'{"text": "hi"}', "text"),
        (b"[]", "body"),
        (b'["hi"]', "body"),
        (b'"hi"', "body"),
        (b"42", "body"),
        (b"null", "body"),
        (b"{}", "message"),
        (b'{"message": null}', "message"),
        (b'{"message": 12}', "message"),
        (b'{"message": "   "}', "message"),
        (b'{"message": "' + b"x" * 501 + b'"}', "message"),
        (b'{"message": "a\\u0000b"}', "message"),
    ],
)
async def test_bad_bodies_are_400_and_store_nothing(
    http: ClientSession, body: bytes, field: str
) -> None:
    await publish(http, "before")
    headers = {**A, "Content-Type": "application/json"}
    async with http.post("/api/events", data=body, headers=headers) as resp:
        error = await error_of(resp, 400, "validation_error")
    assert field in error["details"]
    assert await latest_seq(http) == 1
    assert (await publish(http, "after"))["seq"] == 2


async def test_errors_and_successes_carry_no_stack_trace(http: ClientSession) -> None:
    headers = {**A, "Content-Type": "application/json"}
    async with http.post("/api/events", data=b"{", headers=headers) as resp:
        text = await resp.text()
    assert "Traceback" not in text and "File " not in text


async def test_unexpected_error_is_500_internal_error_without_details(
    aiohttp_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(make_settings())
    app[FEED].store = BrokenAppendStore(10)
    server = await aiohttp_server(app, host="127.0.0.1")
    async with ClientSession(str(server.make_url(""))) as http:
        async with http.post("/api/events", json={"message": "hi"}, headers=A) as resp:
            error = await error_of(resp, 500, "internal_error")
            text = await resp.text()
        assert SECRET_DETAIL not in text and "Traceback" not in text and "details" not in error
        async with http.get("/api/health") as resp:
            assert resp.status == 200
    assert SECRET_DETAIL in caplog.text
