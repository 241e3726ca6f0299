"""Body and input limits: size, JSON depth, unknown fields, content type. Nothing is stored."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from feedserver.app import FEED
from tests.conftest import ServerFactory

TENANT_A = {"X-Tenant-ID": "tenant_a"}
JSON = {**TENANT_A, "Content-Type": "application/json"}


def nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


async def assert_nothing_stored(server: TestServer) -> None:
    assert (await server.app[FEED].stats(["tenant_a"]))["tenant_a"].events == 0


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b"{}" + b" " * 2048, JSON, 413, "payload_too_large"),
        (json.dumps({"message": "x" * 4096}).encode(), JSON, 413, "payload_too_large"),
        (b'{"message": "hi"}', {**TENANT_A, "Content-Type": "text/plain"}, 415, None),
        (b'{"message": "hi"}', TENANT_A, 415, None),
        (
            b'{"message": "hi"}',
            {**TENANT_A, "Content-Type": "application/json; charset=latin-1"},
            415,
            None,
        ),
        (b'{"message": "hi", "tenantId": "tenant_b"}', JSON, 400, "tenantId"),
        (b'{"msg": "hi"}', JSON, 400, "msg"),
        (b'{"message": "hi"', JSON, 400, "body"),
        (json.dumps({"message": "hi", "x": nested(40)}).encode(), JSON, 400, "body"),
        (json.dumps(nested(33)).encode(), JSON, 400, "body"),
        (b"[" * 5000 + b"]" * 5000, JSON, 413, "payload_too_large"),
    ],
    ids=[
        "padding-over-limit",
        "message-over-limit",
        "text-plain",
        "no-content-type",
        "latin-1",
        "unknown-field",
        "misspelt-field",
        "malformed",
        "deep-field",
        "deep-array",
        "deep-and-big",
    ],
)
async def test_bad_bodies_get_the_documented_error_and_store_nothing(
    start_server: ServerFactory,
    body: bytes,
    headers: dict[str, str],
    status: int,
    code: str | None,
) -> None:
    server = await start_server(max_body_bytes=1024)
    async with (
        ClientSession(str(server.make_url(""))) as http,
        http.post("/api/events", data=body, headers=headers) as resp,
    ):
        assert resp.status == status
        error = (await resp.json())["error"]
    if status == 400:
        assert code in error["details"]
    elif code is not None:
        assert error["code"] == code
    else:
        assert error["code"] == "unsupported_media_type"
    await assert_nothing_stored(server)


async def test_nesting_up_to_32_levels_reaches_validation_and_33_does_not(
    start_server: ServerFactory,
) -> None:
    server = await start_server()
    async with ClientSession(str(server.make_url(""))) as http:
        for depth, refused_field in ((31, "x"), (32, "body")):
            body = {"message": "hi", "x": nested(depth)}  # the object itself is level 1
            async with http.post("/api/events", json=body, headers=TENANT_A) as resp:
                assert resp.status == 400
                assert list((await resp.json())["error"]["details"]) == [refused_field]
    await assert_nothing_stored(server)


async def test_a_chunked_body_over_the_limit_is_refused(start_server: ServerFactory) -> None:
    server = await start_server(max_body_bytes=1024)

    async def chunks() -> Any:
        for _ in range(8):
            yield b" " * 512

    async with (
        ClientSession(str(server.make_url(""))) as http,
        http.post("/api/events", data=chunks(), headers=JSON) as resp,
    ):
        assert resp.status == 413
        assert (await resp.json())["error"]["code"] == "payload_too_large"
    await assert_nothing_stored(server)


async def raw_post(server: TestServer, headers: bytes, body: bytes, *, wait_for_100: bool) -> Any:
    """POST over a bare socket; with `wait_for_100`, the body leaves only once the server
    answered `100 Continue`, so the handler is already waiting for it (the other read path
    than a body that came in with the headers). Returns (status, JSON body)."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        head = b"POST /api/events HTTP/1.1\r\nHost: feed\r\nX-Tenant-ID: tenant_a\r\n" + headers
        if wait_for_100:
            writer.write(head + b"Expect: 100-continue\r\n\r\n")
            assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 100")
            assert await asyncio.wait_for(reader.readline(), 5) == b"\r\n"
            writer.write(body)
        else:
            writer.write(head + b"\r\n" + body)
        status = int((await asyncio.wait_for(reader.readline(), 5)).split()[1])
        length = 0
        while (line := await asyncio.wait_for(reader.readline(), 5)) != b"\r\n":
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return status, json.loads(await asyncio.wait_for(reader.readexactly(length), 5))
    finally:
        writer.close()


@pytest.mark.parametrize("wait_for_100", [False, True])
async def test_a_body_is_read_whole_whether_it_came_with_the_headers_or_later(
    server: TestServer, wait_for_100: bool
) -> None:
    body = b'{"message": "sent ' + (b"late" if wait_for_100 else b"at once") + b'"}'
    headers = b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    status, answer = await raw_post(server, headers, body, wait_for_100=wait_for_100)
    assert status == 201 and answer["message"] == json.loads(body)["message"]


@pytest.mark.parametrize("wait_for_100", [False, True])
async def test_a_chunked_body_over_the_limit_is_refused_however_it_arrives(
    start_server: ServerFactory, wait_for_100: bool
) -> None:
    server = await start_server(max_body_bytes=1024)
    chunk = b'{"message": "' + b"x" * 1100 + b'"}'
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(chunk), chunk)
    headers = b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
    status, answer = await raw_post(server, headers, body, wait_for_100=wait_for_100)
    assert status == 413 and answer["error"]["code"] == "payload_too_large"
    await assert_nothing_stored(server)
