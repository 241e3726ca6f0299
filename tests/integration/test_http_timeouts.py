"""Slow and idle plain-HTTP connections are cut; requests being answered never are.

A real `python -m feedserver serve` (the listener is set up by the serving process) with
small timeouts, and raw TCP clients that trickle headers or say nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

from aiohttp import ClientSession, web
from yarl import URL

from feedserver.listener import HttpListener
from tests.server_process import ServerProcess, server_process
from tests.socket_client import socket_client

HEADER_TIMEOUT = 1.0
KEEPALIVE_TIMEOUT = 3.0
PING_INTERVAL = 4.0  # a long-poll waits this long: longer than both timeouts
ENV = {
    "FEED_HTTP_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
    "FEED_HTTP_KEEPALIVE_TIMEOUT": str(KEEPALIVE_TIMEOUT),
    "FEED_PING_INTERVAL": str(PING_INTERVAL),
}
# How late a timer may fire on a busy machine before the test calls it broken.
SLACK = 1.5
HEALTH = b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n"


@contextlib.asynccontextmanager
async def served() -> AsyncIterator[ServerProcess]:
    async with server_process(ENV) as server:
        yield server


async def connect(server: ServerProcess) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    url = URL(server.url)
    assert url.host is not None and url.port is not None
    return await asyncio.open_connection(url.host, url.port)


async def seconds_until_closed(reader: asyncio.StreamReader, since: float) -> float:
    """Seconds from `since` until the server closes the connection, having sent nothing."""
    async with asyncio.timeout(KEEPALIVE_TIMEOUT + HEADER_TIMEOUT + 2 * SLACK):
        assert await reader.read() == b""
    return time.monotonic() - since


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    length = next(
        int(line.split(":")[1]) for line in lines if line.lower().startswith("content-length:")
    )
    return int(lines[0].split()[1]), await reader.readexactly(length)


async def test_a_new_connection_trickling_its_headers_is_closed_at_the_header_timeout() -> None:
    async with served() as server:
        reader, writer = await connect(server)
        opened = time.monotonic()
        writer.write(b"GET /api/health HTTP/1.1\r\n")

        async def trickle() -> None:
            # The slow client: one header line every 0.2 s, never the blank line.
            with contextlib.suppress(ConnectionError):
                for n in range(100):
                    await asyncio.sleep(0.2)
                    writer.write(b"X-Slow-%d: 1\r\n" % n)
                    await writer.drain()

        trickling = asyncio.create_task(trickle())
        try:
            assert (
                HEADER_TIMEOUT - 0.1
                <= await seconds_until_closed(reader, opened)
                < (HEADER_TIMEOUT + SLACK)
            )
        finally:
            trickling.cancel()
            writer.close()


async def test_a_new_connection_that_sends_nothing_is_closed_at_the_header_timeout() -> None:
    async with served() as server:
        # Before the connects: each connection's deadline starts at its own accept, which
        # is after this (20 connects on a loaded machine took more than 0.1 s once).
        opened = time.monotonic()
        connections = [await connect(server) for _ in range(20)]
        waited = [seconds_until_closed(reader, opened) for reader, _ in connections]
        for seconds in await asyncio.gather(*waited):
            assert HEADER_TIMEOUT - 0.1 <= seconds < HEADER_TIMEOUT + SLACK
        for _, writer in connections:
            writer.close()


async def test_a_kept_alive_connection_is_answered_then_closed_at_the_keepalive_timeout() -> None:
    async with served() as server:
        reader, writer = await connect(server)
        for pause in (0.0, HEADER_TIMEOUT + 0.5, HEADER_TIMEOUT + 0.5):
            # Later requests wait longer than the header timeout, which is the first one's.
            await asyncio.sleep(pause)
            writer.write(HEALTH)
            status, body = await read_response(reader)
            assert status == 200 and json.loads(body)["status"] == "healthy"
        answered = time.monotonic()
        seconds = await seconds_until_closed(reader, answered)
        assert KEEPALIVE_TIMEOUT - 0.1 <= seconds < KEEPALIVE_TIMEOUT + SLACK
        writer.close()


async def test_a_long_poll_waiting_longer_than_both_timeouts_is_answered() -> None:
    async with served() as server, ClientSession(server.url) as http:
        polling = "/socket.io/?EIO=4&transport=polling"
        async with http.get(polling) as resp:
            sid = json.loads((await resp.text())[1:])["sid"]
        url = f"{polling}&sid={sid}"
        async with http.post(url, data='40{"tenant":"tenant_a"}') as resp:
            assert resp.status == 200
        async with http.get(url) as resp:  # the CONNECT reply and the catch-up
            assert "connection_established" in await resp.text()
        asked = time.monotonic()
        async with http.get(url) as resp:  # nothing to send until the ping
            assert resp.status == 200 and await resp.text() == "2"
        assert time.monotonic() - asked > KEEPALIVE_TIMEOUT


async def test_a_websocket_outlives_both_timeouts_and_still_receives_events() -> None:
    async with (
        served() as server,
        socket_client(server.url, auth={"tenant": "tenant_a"}, transports=["websocket"]) as client,
    ):
        await client.expect_established()
        # Nothing to await: the point is that time passes (both timers, and more).
        await asyncio.sleep(KEEPALIVE_TIMEOUT + 0.5)
        async with (
            ClientSession(server.url) as http,
            http.post(
                "/api/events", json={"message": "late"}, headers={"X-Tenant-ID": "tenant_a"}
            ) as resp,
        ):
            assert resp.status == 201
        assert (await client.expect_live_event())["message"] == "late"


async def test_closing_the_listener_closes_connections_still_sending_their_first_request() -> None:
    """aiohttp's cleanup closes the connections it serves; one that has not completed its
    first request is not aiohttp's yet, and was left open until its header deadline."""

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    listener = HttpListener(runner, "127.0.0.1", 0, header_timeout=60)
    await listener.start()
    port = listener.addresses[0][1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
        await writer.drain()
        # A request answered on a later connection: the first one was accepted before it.
        async with ClientSession() as http, http.get(f"http://127.0.0.1:{port}/") as resp:
            assert resp.status == 200
        listener.close()
        async with asyncio.timeout(5):  # not the 60 s of its header deadline
            assert await reader.read() == b""
        writer.close()
    finally:
        listener.close()
        await runner.cleanup()
