"""New sessions' WebSocket handshakes answered before aiohttp (`upgrades.DirectUpgrades`).

The app served as `feedserver serve` serves it: its listener, with the shortcut. A plain
handshake is answered by the engine itself, with what aiohttp's path would have answered;
every other request, and every refusal, is aiohttp's as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import ClientSession, web

from feedserver.app import DIRECT_UPGRADES, GATEWAY, SHUTTING_DOWN, create_app
from feedserver.engineio import EngineServer
from feedserver.upgrades import DirectUpgrades
from tests.conftest import make_settings
from tests.listening import Unrecorded, listening
from tests.metrics_scrape import scrape, value
from tests.raw_socket import client_frame
from tests.waiting import eventually

RECEIVE_TIMEOUT = 5.0
KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 1.3's example
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@dataclass
class Served:
    port: int
    app: web.Application

    @property
    def engine(self) -> EngineServer:
        return self.app[GATEWAY].engine


@pytest.fixture
async def feedserver() -> AsyncIterator[Served]:
    app = create_app(make_settings())
    async with listening(app, app[DIRECT_UPGRADES]) as port:
        yield Served(port, app)


NEW_SESSION = "EIO=4&transport=websocket&tenant=tenant_a"


def handshake(
    port: int, query: str = NEW_SESSION, extra: str = "", path: str = "/socket.io/"
) -> bytes:
    return (
        f"GET {path}?{query} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode()


async def answer(
    port: int, request: bytes
) -> tuple[int, dict[str, str], asyncio.StreamReader, asyncio.StreamWriter]:
    """Send `request` on a new connection; the answer's status and headers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    async with asyncio.timeout(RECEIVE_TIMEOUT):
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
    status_line, *lines = head.split("\r\n")[:-2]
    headers = dict(line.split(": ", 1) for line in lines)
    return int(status_line.split()[1]), headers, reader, writer


async def next_message(reader: asyncio.StreamReader) -> str:
    """One unfragmented, unmasked text frame from the server."""
    async with asyncio.timeout(RECEIVE_TIMEOUT):
        first, length = await reader.readexactly(2)
        assert first == 0x81, first
        if length == 126:
            length = int.from_bytes(await reader.readexactly(2), "big")
        return (await reader.readexactly(length)).decode()


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def test_a_plain_handshake_is_answered_without_aiohttp_as_aiohttp_answers_it(
    feedserver: Served,
) -> None:
    rid = "X-Request-ID: rid-1\r\n"
    direct = await answer(feedserver.port, handshake(feedserver.port, extra=rid))
    assert feedserver.engine.stats.opened_directly == 1
    # A repeated field is not plain: aiohttp's path answers it.
    repeated = rid + "X-Probe: 1\r\nX-Probe: 2\r\n"
    through_aiohttp = await answer(feedserver.port, handshake(feedserver.port, extra=repeated))
    assert feedserver.engine.stats.opened_directly == 1
    for status, headers, reader, writer in (direct, through_aiohttp):
        assert status == 101
        assert headers["Sec-WebSocket-Accept"] == ACCEPT
        assert headers["X-Request-ID"] == "rid-1"
        assert json.loads((await next_message(reader))[1:])["upgrades"] == []
        writer.write(client_frame(b"40"))
        assert (await next_message(reader)).startswith("40{")
        assert (await next_message(reader)).startswith('42["connection_established"')
        await close(writer)
    without_date = [
        {k: v for k, v in a[1].items() if k != "Date"} for a in (direct, through_aiohttp)
    ]
    assert without_date[0] == without_date[1]


async def test_a_direct_handshake_is_logged_and_counted_as_a_request(
    feedserver: Served, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="feedserver.access"):
        _, headers, _, writer = await answer(feedserver.port, handshake(feedserver.port))
        await close(writer)
    assert feedserver.engine.stats.opened_directly == 1
    assert [r.getMessage().split()[:3] for r in caplog.records] == [["GET", "/socket.io/", "101"]]
    assert len(headers["X-Request-ID"]) == 32  # none sent: one made
    async with ClientSession(f"http://127.0.0.1:{feedserver.port}") as http:
        samples = await scrape(http)
    upgrades = {"method": "GET", "route": "/socket.io/", "status": "101"}
    assert value(samples, "feed_http_requests_total", **upgrades) == 1


async def test_what_the_client_sends_with_its_handshake_reaches_the_session(
    feedserver: Served,
) -> None:
    status, _, reader, writer = await answer(
        feedserver.port, handshake(feedserver.port) + client_frame(b"40")
    )
    assert status == 101
    assert (await next_message(reader)).startswith("0{")
    assert (await next_message(reader)).startswith("40{")
    await close(writer)


@pytest.mark.parametrize(
    ("query", "extra", "status", "code"),
    [
        (NEW_SESSION, "Origin: http://elsewhere.example\r\n", 400, 3),
        ("EIO=3&transport=websocket&tenant=tenant_a", "", 400, 5),
        ("EIO=4&transport=websocket&sid=unknown", "", 400, 1),
    ],
    ids=["foreign origin", "old protocol", "unknown sid"],
)
async def test_handshakes_the_engine_refuses_get_its_usual_answer(
    query: str, extra: str, status: int, code: int
) -> None:
    app = create_app(make_settings(cors_origins=("http://page.example",)))
    async with listening(app, app[DIRECT_UPGRADES]) as port:
        got, headers, reader, writer = await answer(port, handshake(port, query, extra))
        body = await reader.readexactly(int(headers["Content-Length"]))
        await close(writer)
        assert (got, json.loads(body)["code"]) == (status, code)
        assert app[GATEWAY].engine.stats.opened_directly == 0


async def test_a_handshake_that_is_not_plain_is_aiohttps_to_answer(feedserver: Served) -> None:
    bad_key = handshake(feedserver.port).replace(KEY.encode(), b"c2hvcnQ=")  # 5 bytes
    status, _, _, writer = await answer(feedserver.port, bad_key)
    await close(writer)
    assert status == 400
    tab = handshake(feedserver.port, extra="X-Tab:\tvalue\r\n")  # allowed, but not plain
    status, _, _, writer = await answer(feedserver.port, tab)
    await close(writer)
    assert status == 101
    assert feedserver.engine.stats.opened_directly == 0


async def test_while_shutting_down_a_new_session_is_refused_with_503(feedserver: Served) -> None:
    feedserver.app[SHUTTING_DOWN].set()
    status, headers, reader, writer = await answer(feedserver.port, handshake(feedserver.port))
    body = await reader.readexactly(int(headers["Content-Length"]))
    await close(writer)
    assert status == 503
    assert json.loads(body)["error"]["code"] == "shutting_down"
    assert feedserver.engine.stats.opened_directly == 0


async def test_a_client_that_leaves_at_once_leaves_no_session(feedserver: Served) -> None:
    for _ in range(20):
        _, writer = await asyncio.open_connection("127.0.0.1", feedserver.port)
        writer.write(handshake(feedserver.port))
        writer.transport.abort()
    await eventually(lambda: not feedserver.engine.sockets, "every session gone")
    status, _, reader, writer = await answer(feedserver.port, handshake(feedserver.port))
    assert status == 101
    assert (await next_message(reader)).startswith("0{")
    await close(writer)


async def test_an_origin_check_that_fails_is_answered_by_aiohttps_path() -> None:
    def broken(origin: str | None, environ: Mapping[str, Any]) -> bool:
        raise RuntimeError("the origin check is broken")

    engine = EngineServer(cors_allowed_origins=broken)
    app = web.Application()
    engine.attach(app, engineio_path="engine.io")
    shortcut = DirectUpgrades(engine, Unrecorded(), {}, asyncio.Event())
    async with listening(app, shortcut) as port:
        request = handshake(
            port, "EIO=4&transport=websocket", "Origin: http://a.example\r\n", "/engine.io/"
        )
        status, _, _, writer = await answer(port, request)
        await close(writer)
    assert status == 500  # the connection was dropped


async def test_a_session_the_connect_handler_refuses_gets_403_and_the_connection_closes() -> None:
    engine = EngineServer()
    refused: list[dict[str, Any]] = []

    async def connect(sid: str, environ: dict[str, Any]) -> bool:
        refused.append(environ)
        return False

    engine.on("connect", connect)
    app = web.Application()
    engine.attach(app, engineio_path="engine.io")
    shortcut = DirectUpgrades(engine, Unrecorded(), {"X-Extra": "yes"}, asyncio.Event())
    async with listening(app, shortcut) as port:
        request = handshake(port, "EIO=4&transport=websocket", path="/engine.io/")
        status, headers, reader, writer = await answer(port, request)
        body = await reader.readexactly(int(headers["Content-Length"]))
        async with asyncio.timeout(RECEIVE_TIMEOUT):
            assert await reader.read() == b""  # closed
        await close(writer)
    assert status == 403
    assert json.loads(body) == {"code": 4, "message": "Forbidden"}
    assert headers["X-Extra"] == "yes" and headers["Connection"] == "close"
    assert refused[0]["REMOTE_ADDR"] == "127.0.0.1" and refused[0]["HTTP_HOST"].startswith("127.")
    assert not engine.sockets
