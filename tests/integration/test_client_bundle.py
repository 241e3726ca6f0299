"""`/socket.io/socket.io.js` and its siblings: the socket.io client bundle, as Node serves it."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, WSMsgType
from aiohttp.test_utils import TestServer

from feedserver.app import WEB_ROOT, create_app
from tests.conftest import ServerFactory, make_settings

PACKAGE = WEB_ROOT / "node_modules" / "socket.io-client"
VERSION = json.loads((PACKAGE / "package.json").read_text())["version"]
ETAG = f'"{VERSION}"'
SCRIPTS = ["socket.io.js", "socket.io.min.js", "socket.io.esm.min.js"]
FILES = [*SCRIPTS, *(f"{name}.map" for name in SCRIPTS)]


def dist(name: str) -> bytes:
    return (PACKAGE / "dist" / name).read_bytes()


@pytest.mark.parametrize("name", FILES)
async def test_each_bundle_file_is_served_with_nodes_headers(server: TestServer, name: str) -> None:
    async with (
        ClientSession(auto_decompress=False) as http,
        http.get(server.make_url(f"/socket.io/{name}"), headers={"Accept-Encoding": ""}) as resp,
    ):
        assert resp.status == 200
        body = await resp.read()
        headers = resp.headers
    assert body == dist(name)
    kind = "json" if name.endswith(".map") else "javascript"
    assert headers["Content-Type"] == f"application/{kind}; charset=utf-8"
    assert headers["ETag"] == ETAG
    assert headers["Cache-Control"] == "public, max-age=0"
    assert headers["Cross-Origin-Resource-Policy"] == "cross-origin"
    assert "Content-Encoding" not in headers
    # The other hardening headers stay.
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers.getall("Server") == ["feedserver"]


def test_the_bundle_is_the_version_the_page_pins() -> None:
    lock = json.loads((WEB_ROOT / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/socket.io-client"]["version"] == VERSION


@pytest.mark.parametrize("if_none_match", [ETAG, f"W/{ETAG}", f'"0.0.1", {ETAG}', "*"], ids=str)
async def test_matching_if_none_match_gets_304_without_a_body(
    server: TestServer, if_none_match: str
) -> None:
    url = server.make_url("/socket.io/socket.io.min.js")
    async with (
        ClientSession() as http,
        http.get(url, headers={"If-None-Match": if_none_match}) as resp,
    ):
        assert resp.status == 304
        assert await resp.read() == b""
        assert resp.headers["ETag"] == ETAG
        assert resp.headers["Cross-Origin-Resource-Policy"] == "cross-origin"


async def test_another_etag_gets_the_file(server: TestServer) -> None:
    url = server.make_url("/socket.io/socket.io.min.js")
    async with ClientSession() as http, http.get(url, headers={"If-None-Match": '"4.0.0"'}) as resp:
        assert resp.status == 200
        assert await resp.read() == dist("socket.io.min.js")


async def test_head_answers_the_headers_of_get(server: TestServer) -> None:
    url = server.make_url("/socket.io/socket.io.js")
    async with (
        ClientSession() as http,
        http.head(url, headers={"Accept-Encoding": "identity"}) as resp,
    ):
        assert resp.status == 200
        assert await resp.read() == b""
        assert resp.headers["Content-Length"] == str(len(dist("socket.io.js")))
        assert resp.headers["Content-Type"] == "application/javascript; charset=utf-8"
        assert resp.headers["ETag"] == ETAG


@pytest.mark.parametrize("accept", ["gzip, deflate, br", "br;q=1.0, gzip;q=0.8", "*"])
async def test_gzip_when_the_client_accepts_it(server: TestServer, accept: str) -> None:
    url = server.make_url("/socket.io/socket.io.js")
    async with ClientSession(auto_decompress=False) as http:
        for _ in range(2):  # compressed once, then kept
            async with http.get(url, headers={"Accept-Encoding": accept}) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Encoding"] == "gzip"
                assert resp.headers["Vary"] == "Accept-Encoding"
                compressed = await resp.read()
                assert len(compressed) < len(dist("socket.io.js")) / 3
                assert gzip.decompress(compressed) == dist("socket.io.js")


@pytest.mark.parametrize("accept", ["gzip;q=0", "identity", "br", "gzip;q=0, *"])
async def test_no_gzip_when_the_client_refuses_it(server: TestServer, accept: str) -> None:
    url = server.make_url("/socket.io/socket.io.min.js")
    async with (
        ClientSession(auto_decompress=False) as http,
        http.get(url, headers={"Accept-Encoding": accept}) as resp,
    ):
        assert "Content-Encoding" not in resp.headers
        assert await resp.read() == dist("socket.io.min.js")


@pytest.mark.parametrize(
    ("origin", "allowed"), [("http://page.example", True), ("http://elsewhere.example", False)]
)
async def test_cors_origin_decides_who_may_import_the_esm_bundle(
    start_server: ServerFactory, origin: str, allowed: bool
) -> None:
    # Module scripts are fetched in CORS mode: CORS_ORIGIN decides, as for the REST API.
    server = await start_server(cors_origins=("http://page.example",))
    url = server.make_url("/socket.io/socket.io.esm.min.js")
    async with ClientSession() as http, http.get(url, headers={"Origin": origin}) as resp:
        assert resp.status == 200
        assert resp.headers.get("Access-Control-Allow-Origin") == (origin if allowed else None)


@pytest.mark.parametrize(
    "path",
    [
        "/socket.io/socket.io.msgpack.min.js",  # the msgpack parser, which we do not speak
        "/socket.io/socket.io.jsx",
        "/socket.io/dist/socket.io.js",
    ],
)
async def test_other_names_under_socket_io_are_not_files(server: TestServer, path: str) -> None:
    async with ClientSession() as http, http.get(server.make_url(path)) as resp:
        assert resp.status == 404
        assert resp.headers["Cross-Origin-Resource-Policy"] == "same-origin"


async def test_engine_io_still_answers_at_socket_io(server: TestServer) -> None:
    async with ClientSession(str(server.make_url(""))) as http:
        async with http.get("/socket.io/?EIO=4&transport=polling") as resp:
            assert resp.status == 200
            assert (await resp.text()).startswith("0{")
        async with http.head("/socket.io/socket.io.js?EIO=4&transport=polling") as resp:
            assert resp.headers["Content-Type"].startswith("application/javascript")
        async with http.ws_connect("/socket.io/?EIO=4&transport=websocket") as ws:
            opening = await ws.receive()
            assert opening.type == WSMsgType.TEXT and opening.data.startswith("0{")


async def test_no_bundle_routes_without_the_npm_package(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    server = await aiohttp_server(create_app(make_settings(), web_root=tmp_path), host="127.0.0.1")
    async with (
        ClientSession() as http,
        http.get(server.make_url("/socket.io/socket.io.js")) as resp,
    ):
        assert resp.status == 404
