"""A WebSocket handshake read and answered by the engine itself, before aiohttp sees the
connection (`EngineServer.open_directly`): the request head, the checks of RFC 6455
section 4.2.1 and the 101.

A new session's WebSocket handshake is most of what a busy server parses, and going
through aiohttp's request path for it (its protocol object, parser, request, middleware
chain and WebSocket response, all dropped a moment later when the connection is handed
over) was about a third of a connect's CPU (docs/benchmarks.md).

`RequestHead.parse` is strict on purpose: it reads only what a WebSocket client sends in
a plain handshake (a request line, `name: value` header lines of visible ASCII and spaces,
CRLF line ends, each name once, no body). Anything else is `None`, and the request goes to aiohttp,
whose parser and answers (every 400 included) stay the only ones for everything else.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus

from multidict import MultiDictProxy
from yarl import URL

# RFC 9110 5.6.2: the characters of a method or a field name.
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# A request line in origin form, then the field lines and the blank line.
_REQUEST_LINE = re.compile(rf"({_TOKEN}) (/[!-~]*) HTTP/1\.1\r\n")
_FIELD_LINES = re.compile(rf"(?:{_TOKEN}:[ -~]*\r\n)*\r\n")
_FIELD = re.compile(r"([^:\r\n]+):([ -~]*)\r\n")
# RFC 6455 1.3
_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WEBSOCKET_VERSION = "13"
# The head of one request: larger ones are aiohttp's to refuse (its limit is 8190 bytes a
# line; a browser's handshake with its cookies is 0.5-4 KB).
MAX_HEAD_BYTES = 16384
# aiohttp's limits (`RequestHandler`'s max_line_size, max_headers): a head past them is
# never answered 101 here, as it is not there.
MAX_LINE = 8190
MAX_FIELDS = 128


@dataclass(slots=True, frozen=True)
class RequestHead:
    """A request line and its header fields (names in lower case)."""

    method: str
    path: str  # decoded, as aiohttp's `request.path`
    query_string: str  # decoded, as aiohttp's `request.query_string`
    query: MultiDictProxy[str]
    headers: dict[str, str]

    @classmethod
    def parse(cls, data: bytes) -> RequestHead | None:
        """The head in `data` (through its blank line), or None if it is not plain."""
        if len(data) > MAX_HEAD_BYTES or not data.isascii():
            return None
        text = data.decode("ascii")
        request = _REQUEST_LINE.match(text)
        if request is None:
            return None
        # Visible ASCII and spaces only: no control character (a tab included) but the
        # CRLF line ends, and no bare CR or LF; a folded line starts with a space: no name.
        start = request.end()
        if _FIELD_LINES.fullmatch(text, start) is None:
            return None
        if len(text) > MAX_LINE and max(map(len, text.split("\r\n"))) > MAX_LINE:
            return None  # aiohttp refuses it (400)
        fields = _FIELD.findall(text, start)
        if len(fields) > MAX_FIELDS:
            return None  # aiohttp refuses it (400)
        headers = {name.lower(): value.strip(" ") for name, value in fields}
        if len(headers) != len(fields):
            return None  # a repeated field: how it combines is aiohttp's to say
        method, target = request.groups()
        # The path as aiohttp's router matches it, byte for byte: no escapes, and no `//`
        # (which yarl reads as a host), so a path the router would answer 404 is not ours.
        raw_path = target.partition("?")[0]
        if "%" in raw_path or raw_path.startswith("//"):
            return None
        if "content-length" in headers or "transfer-encoding" in headers:
            return None
        try:
            url = URL(target, encoded=True)
        except ValueError:
            return None
        return cls(method, url.path, url.query_string, url.query, headers)

    def websocket_key(self) -> str | None:
        """`Sec-WebSocket-Key` if this is a WebSocket handshake aiohttp would accept
        (RFC 6455 4.2.1: GET, Upgrade, Connection, version 13, a 16-byte key)."""
        headers = self.headers
        if (
            self.method != "GET"
            or headers.get("upgrade", "").lower() != "websocket"
            or "upgrade" not in headers.get("connection", "").lower().replace(" ", "").split(",")
            or headers.get("sec-websocket-version") != WEBSOCKET_VERSION
        ):
            return None
        key = headers.get("sec-websocket-key", "")
        try:
            if len(base64.b64decode(key, validate=True)) != 16:
                return None
        except binascii.Error:
            return None
        return key


class Answers:
    """The engine's own HTTP answers to a handshake, with `headers` (complete lines, e.g.
    the application's security headers and request id) after the status's own fields and
    the date, in aiohttp's order."""

    __slots__ = ("_date", "_second")

    def __init__(self) -> None:
        self._second = 0
        self._date = ""

    def switching_protocols(self, key: str, headers: str) -> bytes:
        """The 101 that accepts `key` (RFC 6455 4.2.2)."""
        accept = base64.b64encode(hashlib.sha1(key.encode() + _ACCEPT_GUID).digest()).decode()
        return (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\nDate: {self.date()}\r\n{headers}\r\n"
        ).encode()

    def refused(self, status: int, body: bytes, headers: str) -> bytes:
        """A JSON answer after which the connection is closed."""
        return (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\nDate: {self.date()}\r\n{headers}\r\n"
        ).encode() + body

    def date(self) -> str:
        """The `Date` field's value, formatted once a second (as aiohttp does)."""
        now = int(time.time())
        if now != self._second:
            self._second, self._date = now, formatdate(now, usegmt=True)
        return self._date
