"""Every response carries an `X-Request-ID`: the caller's when it is safe, else a new one."""

from __future__ import annotations

import re

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from feedserver.access import IDS_PER_BATCH, RequestIds

GENERATED = re.compile(r"[0-9a-f]{32}")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/health", 200),
        ("GET", "/api/events", 400),  # no tenant
        ("GET", "/css/feed.css", 200),
        ("GET", "/no/such/page", 404),
        ("DELETE", "/api/health", 405),
        ("GET", "/socket.io/?EIO=4&transport=polling", 200),
        ("GET", "/metrics", 200),
    ],
)
async def test_the_callers_request_id_is_echoed_on_every_kind_of_response(
    server: TestServer, method: str, path: str, status: int
) -> None:
    async with (
        ClientSession(str(server.make_url(""))) as http,
        http.request(method, path, headers={"X-Request-ID": "trace-7f:a/b=c"}) as resp,
    ):
        assert resp.status == status
        assert resp.headers["X-Request-ID"] == "trace-7f:a/b=c"


@pytest.mark.parametrize("given", [None, "", "x" * 129, "has space", "semi;colon"])
async def test_a_missing_or_unsafe_request_id_is_replaced_by_a_generated_one(
    server: TestServer, given: str | None
) -> None:
    headers = {} if given is None else {"X-Request-ID": given}
    async with ClientSession(str(server.make_url(""))) as http:
        ids = []
        for _ in range(2):
            async with http.get("/api/health", headers=headers) as resp:
                ids.append(resp.headers["X-Request-ID"])
    assert all(GENERATED.fullmatch(rid) for rid in ids) and ids[0] != ids[1]


@pytest.mark.parametrize("given", ["new\nline", "tab\there", 'quote"', "ünïcode", "<script>"])
def test_request_ids_that_could_break_a_log_line_or_header_are_not_kept(given: str) -> None:
    assert GENERATED.fullmatch(RequestIds().for_header(given))


def test_the_longest_safe_request_id_is_kept() -> None:
    assert RequestIds().for_header("a" * 128) == "a" * 128


def test_generated_ids_stay_distinct_across_random_batches() -> None:
    ids = RequestIds()
    made = [ids.for_header(None) for _ in range(3 * IDS_PER_BATCH + 1)]
    assert all(GENERATED.fullmatch(rid) for rid in made)
    assert len(set(made)) == len(made)


async def test_a_browser_may_send_its_own_request_id_cross_origin(server: TestServer) -> None:
    preflight = {
        "Origin": "http://elsewhere.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-tenant-id,x-request-id",
    }
    async with (
        ClientSession(str(server.make_url(""))) as http,
        http.options("/api/events", headers=preflight) as resp,
    ):
        assert resp.status == 200
        allowed = resp.headers["Access-Control-Allow-Headers"].lower()
    assert "x-request-id" in allowed
