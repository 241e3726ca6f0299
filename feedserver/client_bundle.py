"""The socket.io client bundle at `/socket.io/socket.io.js`, as the Node server serves it.

Node's Socket.IO server answers `GET /socket.io/socket.io.js` (and `.min.js`, `.esm.min.js`,
their `.map`s) with the client of its own release (`serveClient`, on by default), so a
vanilla page written for it loads `<script src="/socket.io/socket.io.js">` and calls the
global `io()`. Here the files are the page's own copy of socket.io-client
(`web/node_modules/socket.io-client/dist`, the version `web/package-lock.json` pins), read
once when the app is built. As Node answers them: `ETag` is the quoted client version and an
`If-None-Match` with it (strong or weak) gets `304`; `Cache-Control: public, max-age=0`;
`application/javascript` or `application/json`, `charset=utf-8`; gzip when accepted.

What differs from Node: `socket.io.msgpack.min.js` is not served (it speaks the msgpack
parser, which this server does not, so a page using it could never connect), and the files
carry `Cross-Origin-Resource-Policy: cross-origin`, since a page on another origin is what
they are for (`security.security_stamp` keeps a policy a handler set).
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import hdrs, web

from .security import RESOURCE_POLICY

# The file names Node's server serves, less the msgpack build (see the module docstring).
BUNDLE_FILES = (
    "socket.io.js",
    "socket.io.js.map",
    "socket.io.min.js",
    "socket.io.min.js.map",
    "socket.io.esm.min.js",
    "socket.io.esm.min.js.map",
)
JAVASCRIPT = "application/javascript; charset=utf-8"
SOURCE_MAP = "application/json; charset=utf-8"
CROSS_ORIGIN = "cross-origin"
GZIP_LEVEL = 6


@dataclass(slots=True, eq=False)
class BundleFile:
    """One file of the bundle, its bytes in memory; `answer` is its request handler."""

    body: bytes
    content_type: str
    etag: str
    _gzipped: bytes | None = field(default=None, repr=False)

    async def answer(self, request: web.Request) -> web.Response:
        headers = {
            hdrs.ETAG: self.etag,
            hdrs.CACHE_CONTROL: "public, max-age=0",
            hdrs.VARY: hdrs.ACCEPT_ENCODING,
            RESOURCE_POLICY: CROSS_ORIGIN,
        }
        if etag_matches(request.headers.get(hdrs.IF_NONE_MATCH), self.etag):
            return web.Response(status=304, headers=headers)
        headers[hdrs.CONTENT_TYPE] = self.content_type
        if not accepts_gzip(request.headers.get(hdrs.ACCEPT_ENCODING, "")):
            return web.Response(body=self.body, headers=headers)
        headers[hdrs.CONTENT_ENCODING] = "gzip"
        return web.Response(body=await self.gzipped(), headers=headers)

    async def gzipped(self) -> bytes:
        """Compressed on first demand, off the loop (a source map takes ~15 ms), then kept."""
        if self._gzipped is None:
            compress = functools.partial(gzip.compress, self.body, GZIP_LEVEL, mtime=0)
            self._gzipped = await asyncio.get_running_loop().run_in_executor(None, compress)
        return self._gzipped


class ClientBundle:
    """The bundle's files, read from a socket.io-client package directory."""

    def __init__(self, files: dict[str, BundleFile], version: str) -> None:
        self.files = files
        self.version = version

    @classmethod
    def read(cls, package: Path) -> ClientBundle | None:
        """The bundle of the socket.io-client package at `package`; None when not installed."""
        dist = package / "dist"
        manifest = package / "package.json"
        if not manifest.is_file() or not all((dist / name).is_file() for name in BUNDLE_FILES):
            return None
        version = str(json.loads(manifest.read_text())["version"])
        etag = f'"{version}"'  # Node's: the version, quoted (RFC 9110 8.8.3)
        files = {
            name: BundleFile(
                (dist / name).read_bytes(),
                SOURCE_MAP if name.endswith(".map") else JAVASCRIPT,
                etag,
            )
            for name in BUNDLE_FILES
        }
        return cls(files, version)

    def routes(self, prefix: str) -> list[web.RouteDef]:
        """`GET` (and `HEAD`) `{prefix}/{name}` for each file."""
        return [web.get(f"{prefix}/{name}", file.answer) for name, file in self.files.items()]


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """`If-None-Match` names `etag`, weakly or strongly, or is `*` (RFC 9110 13.1.2)."""
    if if_none_match is None:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


def accepts_gzip(accept_encoding: str) -> bool:
    """`Accept-Encoding` gives gzip (by name, or as `*`) a quality above 0 (RFC 9110 12.5.3)."""
    qualities: dict[str, float] = {}
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        qualities[coding.strip().lower()] = _quality(params)
    gzip_quality = qualities.get("gzip", qualities.get("x-gzip", qualities.get("*", 0.0)))
    return gzip_quality > 0


def _quality(params: str) -> float:
    name, _, value = params.strip().partition("=")
    if name.strip().lower() != "q":
        return 1.0
    try:
        return float(value)
    except ValueError:
        return 0.0
