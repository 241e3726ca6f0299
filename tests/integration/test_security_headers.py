"""Helmet's headers on every kind of response, HSTS only in production, no version banner."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import ClientSession, WSMsgType
from multidict import CIMultiDictProxy

from feedserver.auth import mint_token
from tests.conftest import ServerFactory
from tests.rest_calls import RequestOptions

HELMET = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
TENANT_A = {"X-Tenant-ID": "tenant_a"}


def assert_hardened(headers: CIMultiDictProxy[str], *, production: bool) -> None:
    for name, value in HELMET.items():
        assert headers.get(name) == value, name
    policy = headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert headers.getall("Server") == ["feedserver"]  # no name/version of aiohttp or Python
    assert ("Strict-Transport-Security" in headers) is production


@pytest.mark.parametrize("production", [False, True], ids=["development", "production"])
async def test_every_kind_of_response_carries_the_security_headers(
    start_server: ServerFactory, production: bool
) -> None:
    overrides: dict[str, object] = {"max_body_bytes": 1024}
    tenant = TENANT_A
    if production:
        overrides |= {"env": "production", "auth": "token", "auth_secret": "p" * 32}
        tenant = {"Authorization": f"Bearer {mint_token('p' * 32, 'tenant_a', 60)}"}
    server = await start_server(**overrides)
    requests: list[tuple[str, str, RequestOptions, int]] = [
        ("GET", "/", {}, 200),  # the page
        ("GET", "/admin", {}, 200),  # the operator page
        ("GET", "/admin/", {}, 200),
        ("GET", "/api/health", {}, 200),
        ("GET", "/api/openapi.json", {}, 200),
        ("GET", "/api/nowhere", {}, 404),
        ("GET", "/nowhere", {}, 404),
        ("PUT", "/api/health", {}, 405),
        ("POST", "/api/events", {"data": b"x" * 2048, "headers": tenant}, 415),
        (
            "POST",
            "/api/events",
            {"data": b"x" * 2048, "headers": {**tenant, "Content-Type": "application/json"}},
            413,
        ),
        ("GET", "/api/events", {}, 401 if production else 400),
        ("GET", "/socket.io/?EIO=4&transport=polling", {}, 200),  # engine.io handshake
        ("GET", "/socket.io/?EIO=4&transport=polling&sid=unknown", {}, 400),
        ("OPTIONS", "/api/events", {"headers": {"Origin": "http://evil.example"}}, 403),
    ]
    async with ClientSession(str(server.make_url(""))) as http:
        for method, path, kwargs, status in requests:
            async with http.request(method, path, **kwargs) as resp:
                assert resp.status == status, (method, path, await resp.text())
                assert_hardened(resp.headers, production=production)
        async with http.ws_connect("/socket.io/?EIO=4&transport=websocket") as ws:
            assert_hardened(ws._response.headers, production=production)
            opening = await ws.receive()
            assert opening.type == WSMsgType.TEXT and opening.data.startswith("0{")


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"GARBAGE / HTTP/1.1\r\n\r\n",
        b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-A: \x00\r\n\r\n",
    ],
    ids=["bad-header", "bad-method", "nul-in-header"],
)
async def test_requests_aiohttp_cannot_parse_get_no_version_banner(
    start_server: ServerFactory, raw: bytes
) -> None:
    server = await start_server()
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(raw)
        answer = await asyncio.wait_for(reader.read(), timeout=5)
    finally:
        writer.close()
    head = answer.split(b"\r\n\r\n", 1)[0].decode().lower().split("\r\n")
    assert head[0].endswith("400 bad request")
    assert "server: feedserver" in head
    assert not [line for line in head if "aiohttp" in line or "python" in line]


async def test_api_answers_are_never_cached_and_page_files_are_revalidated(
    start_server: ServerFactory,
) -> None:
    server = await start_server()
    async with ClientSession(str(server.make_url(""))) as http:
        for path, headers, expected in [
            ("/api/events", TENANT_A, "no-store"),
            ("/api/nowhere", {}, "no-store"),
            ("/", {}, "no-cache"),
            ("/admin", {}, "no-cache"),
            ("/js/main.js", {}, "no-cache"),
        ]:
            async with http.get(path, headers=headers) as resp:
                assert resp.headers["Cache-Control"] == expected, path


async def test_cors_headers_go_to_allowed_origins_only(start_server: ServerFactory) -> None:
    server = await start_server(cors_origins=("http://allowed.example",))
    async with ClientSession(str(server.make_url(""))) as http:
        for origin, allowed in [
            ("http://allowed.example", True),
            ("http://evil.example", False),
            (None, False),
        ]:
            headers = TENANT_A if origin is None else {**TENANT_A, "Origin": origin}
            async with http.post("/api/events", json={"message": "hi"}, headers=headers) as resp:
                assert resp.status == 201
                assert resp.headers.get("Access-Control-Allow-Origin") == (
                    origin if allowed else None
                )
                exposed = resp.headers.get("Access-Control-Expose-Headers", "")
                assert ("RateLimit-Remaining" in exposed.split(",")) is allowed
