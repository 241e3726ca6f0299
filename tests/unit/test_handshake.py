"""The engine's own reading of a WebSocket handshake, and the listener's first request."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from feedserver.engineio.handshake import (
    MAX_FIELDS,
    MAX_HEAD_BYTES,
    MAX_LINE,
    Answers,
    RequestHead,
)
from feedserver.listener import MAX_HEAD_BYTES as LISTENER_MAX_HEAD_BYTES
from feedserver.listener import FirstRequest
from tests.waiting import eventually

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 1.3's example, and its answer:
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
PLAIN = (
    b"GET /socket.io/?EIO=4&transport=websocket&tenant=t%20a HTTP/1.1\r\n"
    b"Host: 127.0.0.1:3000\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
    b"Sec-WebSocket-Key: " + KEY.encode() + b"\r\nSec-WebSocket-Version: 13\r\n"
    b"Origin:   http://page.example  \r\n\r\n"
)


def test_a_plain_handshake_is_read() -> None:
    head = RequestHead.parse(PLAIN)
    assert head is not None
    assert (head.method, head.path) == ("GET", "/socket.io/")
    assert head.query_string == "EIO=4&transport=websocket&tenant=t a"
    assert dict(head.query) == {"EIO": "4", "transport": "websocket", "tenant": "t a"}
    assert head.headers["origin"] == "http://page.example"
    assert head.headers["connection"] == "keep-alive, Upgrade"
    assert head.websocket_key() == KEY


@pytest.mark.parametrize(
    "head",
    [
        PLAIN.replace(b"HTTP/1.1", b"HTTP/1.0"),
        PLAIN.replace(b"GET /", b"GET  /"),
        PLAIN.replace(b"GET /socket.io/", b"GET http://x/socket.io/"),
        PLAIN.replace(b"GET /socket.io/", b"GET //evil.example/socket.io/"),
        PLAIN.replace(b"GET /socket.io/", b"GET /socket.io%2F"),
        PLAIN.replace(b"\r\nUpgrade", b"\r\n Upgrade"),  # a folded line
        PLAIN.replace(b"\r\nUpgrade", b"\nUpgrade"),  # a bare LF
        PLAIN.replace(b"Host:", b"Ho st:"),
        PLAIN.replace(b"Host:", b"Host"),
        PLAIN.replace(b"3000", b"3000\t"),  # a control character
        PLAIN.replace(b"3000", "3000é".encode()),
        PLAIN.replace(b"Upgrade: websocket", b"Upgrade: websocket\r\nupgrade: h2c"),
        PLAIN.replace(b"\r\n\r\n", b"\r\nContent-Length: 0\r\n\r\n"),
        PLAIN.replace(b"\r\n\r\n", b"\r\nTransfer-Encoding: chunked\r\n\r\n"),
        PLAIN[:-2],  # no blank line
        PLAIN.replace(b"\r\n\r\n", b"\r\nX-Long: " + b"x" * MAX_LINE + b"\r\n\r\n"),
        PLAIN.replace(
            b"\r\n\r\n", b"\r\n" + b"".join(b"X-%d: 1\r\n" % n for n in range(MAX_FIELDS)) + b"\r\n"
        ),
        PLAIN.replace(b"\r\n\r\n", b"\r\nX-Big: " + b"x" * MAX_HEAD_BYTES + b"\r\n\r\n"),
    ],
    ids=[
        "HTTP/1.0",
        "two spaces",
        "absolute form",
        "host-like path",
        "escaped path",
        "folded",
        "bare LF",
        "space in a name",
        "no colon",
        "tab",
        "not ASCII",
        "repeated field",
        "content-length",
        "chunked",
        "unfinished",
        "a line too long",
        "too many fields",
        "too long",
    ],
)
def test_anything_but_a_plain_head_is_left_to_aiohttp(head: bytes) -> None:
    assert RequestHead.parse(head) is None


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"GET", b"POST"),
        (b"Upgrade: websocket", b"Upgrade: h2c"),
        (b"keep-alive, Upgrade", b"keep-alive"),
        (b"Version: 13", b"Version: 8"),
        (KEY.encode(), b"c2hvcnQ="),  # 5 bytes
        (KEY.encode(), b"not base64!"),
    ],
    ids=["method", "upgrade", "connection", "version", "short key", "bad key"],
)
def test_a_head_that_is_no_websocket_handshake_has_no_key(old: bytes, new: bytes) -> None:
    head = RequestHead.parse(PLAIN.replace(old, new))
    assert head is not None and head.websocket_key() is None


def test_the_101_accepts_the_key_as_rfc_6455_says() -> None:
    answer = Answers().switching_protocols(KEY, "X-Extra: 1\r\n").decode()
    lines = answer.split("\r\n")
    assert lines[0] == "HTTP/1.1 101 Switching Protocols"
    assert f"Sec-WebSocket-Accept: {ACCEPT}" in lines
    assert lines[-3:] == ["X-Extra: 1", "", ""]
    assert any(line.startswith("Date: ") and line.endswith(" GMT") for line in lines)


def test_a_refusal_says_its_length_and_closes() -> None:
    answer = Answers().refused(403, b'{"code":4}', "X-Extra: 1\r\n")
    head, body = answer.split(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert b"Content-Length: 10" in head and b"Connection: close" in head
    assert body == b'{"code":4}'


# -- the listener's first request -------------------------------------------------------


class Transport:
    def __init__(self) -> None:
        self.protocol: Any = None
        self.closed = False
        self.written = b""

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def close(self) -> None:
        self.closed = True

    def write(self, data: bytes) -> None:
        self.written += data


class Handler:
    """aiohttp's protocol for the connection, as the server's factory makes it."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.received = b""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received += data


class Factory:
    def __init__(self) -> None:
        self.made: list[Handler] = []

    def __call__(self) -> Handler:
        self.made.append(Handler())
        return self.made[-1]


class Shortcut:
    def __init__(self, takes: bool) -> None:
        self.takes = takes
        self.offered: list[tuple[bytes, bytes]] = []

    def take(self, head: bytes, tail: bytes, transport: Any) -> bool:
        self.offered.append((head, tail))
        return self.takes


def first_request(takes: bool) -> tuple[FirstRequest, Transport, Factory, Shortcut]:
    factory, shortcut, transport = Factory(), Shortcut(takes), Transport()
    protocol = FirstRequest(factory, shortcut, 10, set())  # type: ignore[arg-type]
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol, transport, factory, shortcut


async def test_a_head_in_pieces_is_offered_whole_once_with_what_follows_it() -> None:
    protocol, transport, factory, shortcut = first_request(takes=True)
    data = b"\r\n" + PLAIN[:-1]  # the blank line's last byte comes with the frames
    for at in range(0, len(data), 7):
        protocol.data_received(data[at : at + 7])
    protocol.data_received(b"\nframes")
    assert shortcut.offered == [(PLAIN, b"frames")]  # the empty line before it dropped
    assert factory.made == [] and transport.protocol is None


async def test_a_head_the_shortcut_leaves_goes_to_aiohttp_with_every_byte() -> None:
    protocol, transport, factory, shortcut = first_request(takes=False)
    protocol.data_received(b"\r\n" + PLAIN[:20])
    assert factory.made == []  # aiohttp's protocol is made only when needed
    protocol.data_received(PLAIN[20:] + b"next")
    (handler,) = factory.made
    assert transport.protocol is handler and handler.transport is transport
    assert handler.received == PLAIN + b"next"  # the empty line before it dropped
    assert len(shortcut.offered) == 1


async def test_a_head_without_an_end_is_refused_once_too_long() -> None:
    protocol, transport, factory, shortcut = first_request(takes=True)
    protocol.data_received(b"GET / HTTP/1.1\r\nX: " + b"x" * LISTENER_MAX_HEAD_BYTES)
    assert shortcut.offered == [] and factory.made == []
    head, body = transport.written.split(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 ")
    assert json.loads(body) == {
        "error": {"code": "headers_too_large", "message": "Request headers too large"}
    }
    assert transport.closed


async def test_empty_lines_before_a_head_are_not_kept() -> None:
    protocol, _, _, shortcut = first_request(takes=True)
    for _ in range(LISTENER_MAX_HEAD_BYTES):  # twice the bound, two bytes a read
        protocol.data_received(b"\r\n")
    protocol.data_received(PLAIN)
    assert shortcut.offered == [(PLAIN, b"")]


async def test_a_connection_without_a_head_in_time_is_closed() -> None:
    transport = Transport()
    protocol = FirstRequest(Factory(), None, 0.01, set())  # type: ignore[arg-type]
    protocol.connection_made(transport)  # type: ignore[arg-type]
    protocol.data_received(b"GET / HTTP/1.1\r\n")
    await eventually(lambda: transport.closed, "closed at the deadline")


def line_by_line(data: bytes) -> tuple[str, str, dict[str, str]] | None:
    """The head read a line at a time, as RFC 9112 describes it (the reading `parse`
    had before it was one pass of regular expressions): method, target and fields."""
    if not data.isascii():
        return None
    text = data.decode("ascii")
    if not text.endswith("\r\n\r\n") or not text.replace("\r\n", "").isprintable():
        return None
    lines = text[:-4].split("\r\n")
    if len(lines) > 1 + MAX_FIELDS or max(map(len, lines)) > MAX_LINE:
        return None
    method, _, rest = lines[0].partition(" ")
    target, _, version = rest.partition(" ")
    token = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
    if version != "HTTP/1.1" or not target.startswith("/") or not token.fullmatch(method):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not token.fullmatch(name) or name.lower() in headers:
            return None
        headers[name.lower()] = value.strip(" ")
    return method, target, headers


# Mostly what a plain head holds, now and then what makes it not plain.
_GOOD = ["a", "b", " ", ":", "/", "?", "=", "~"] * 6
_PIECES = st.sampled_from([*_GOOD, "%", "\t", "\r", "\n", "\r\n", "é"])
_NAMES = st.sampled_from(
    ["Host", "X-1", "x-1", "a"] * 4 + ["Content-Length", "Ho st", " Up", "", "X\t"]
)
_FIELDS = st.tuples(_NAMES, st.sampled_from([":"] * 6 + [""]), st.lists(_PIECES, max_size=5))


@given(
    method=st.sampled_from(["GET"] * 6 + ["POST", "G T", "", "GET\t"]),
    target=st.lists(_PIECES, max_size=4).map(lambda t: "/socket.io/" + "".join(t)),
    fields=st.lists(_FIELDS.map(lambda f: f[0] + f[1] + "".join(f[2])), max_size=5),
)
def test_the_head_is_read_as_a_line_by_line_reading_reads_it(
    method: str, target: str, fields: list[str]
) -> None:
    data = f"{method} {target} HTTP/1.1\r\n{''.join(f + chr(13) + chr(10) for f in fields)}\r\n"
    expected = line_by_line(data.encode())
    head = RequestHead.parse(data.encode())
    # what aiohttp's path also takes: an escaped path, a request with a body
    left = "%" in target.partition("?")[0] or "content-length" in (expected or ("", "", {}))[2]
    if expected is None or left:
        assert head is None
    else:
        assert head is not None, data
        assert (head.method, head.headers) == (expected[0], expected[2])
