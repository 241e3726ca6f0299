"""The real socket.io JavaScript client (socket.io-client@4), driven from async tests.

`tests/js/client.mjs` runs in node and prints one JSON line per thing that happens
(`connect`, `connect_error`, `disconnect`, `event`, `ack`); this module spawns it and
lets a test await those lines — no sleeps:

    async with js_client(server_url, query={"tenant": "tenant_a"}) as client:
        await client.expect_type("connect")
        events = await client.expect_event("initial_events")
        ack = await client.emit("create_event", {"message": "hi"})

The waiting (`expect`, `expect_type`, `expect_event`, `async for`) is `tests.lines.LineReader`,
shared with the python-socketio client of `tests/socket_client.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tests.lines import DEFAULT_TIMEOUT, Line, LineReader

JS_DIR = Path(__file__).resolve().parent / "js"
SCRIPT = JS_DIR / "client.mjs"
CURRENT = "socket.io-client"
# The releases tests/js/package.json installs, by minor version; the newest is the current
# one, the others are npm aliases ("socket.io-client-4.0": "npm:socket.io-client@4.0.0").
CLIENT_VERSIONS = {
    "4.0": "socket.io-client-4.0",
    "4.4": "socket.io-client-4.4",
    "4.7": "socket.io-client-4.7",
    "4.8": CURRENT,
}


class JsClient(LineReader):
    """One node process holding one socket.io-client `Socket`."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        super().__init__()
        self._process = process
        self._refs = itertools.count(1)
        self._stderr = bytearray()
        assert process.stderr is not None
        self._stderr_task = asyncio.create_task(self._drain_stderr(process.stderr))

    # -- reading --------------------------------------------------------------------------

    async def _read_line(self) -> Line:
        assert self._process.stdout is not None
        raw = await self._process.stdout.readline()
        if not raw:
            raise EOFError(f"the JS client exited; stderr: {self.stderr!r}")
        line: Line = json.loads(raw)
        return line

    async def _drain_stderr(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(4096):
            self._stderr += chunk

    def _diagnostics(self) -> str:
        return f"; stderr: {self.stderr!r}"

    @property
    def stderr(self) -> str:
        return self._stderr.decode(errors="replace")

    # -- commands -------------------------------------------------------------------------

    async def emit(self, event: str, *args: Any, within: float = DEFAULT_TIMEOUT) -> Any:
        """Emit with an acknowledgement callback; return the ack's first argument."""
        ref = next(self._refs)
        await self._command({"op": "emit", "event": event, "args": list(args), "ref": ref})
        line = await self.expect(lambda line: line["type"] == "ack" and line["ref"] == ref, within)
        return line["args"][0] if line["args"] else None

    async def send(self, event: str, *args: Any) -> None:
        """Emit without an acknowledgement."""
        await self._command({"op": "emit", "event": event, "args": list(args)})

    async def disconnect(self) -> None:
        """Client-side disconnect; await `expect_type("disconnect")` to know it happened."""
        await self._command({"op": "disconnect"})

    async def drop_transport(self) -> None:
        """Cut the transport as a network would; the socket reconnects if `reconnection`."""
        await self._command({"op": "drop"})

    async def connect(self, auth: dict[str, Any] | None = None) -> None:
        """Connect again on the same Socket (optionally with a new `auth`)."""
        command: dict[str, Any] = {"op": "connect"}
        if auth is not None:
            command["auth"] = auth
        await self._command(command)

    async def _command(self, command: dict[str, Any]) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(command).encode() + b"\n")
        await self._process.stdin.drain()

    async def close(self) -> None:
        """Close stdin (the script then disconnects and exits); kill it if it lingers."""
        if self._process.stdin is not None and not self._process.stdin.is_closing():
            self._process.stdin.close()
        try:
            await asyncio.wait_for(self._process.wait(), 5)
        except TimeoutError:
            self._process.kill()
            await self._process.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await self._stderr_task


@contextlib.asynccontextmanager
async def js_client(
    url: object,
    *,
    query: dict[str, Any] | None = None,
    auth: dict[str, Any] | None = None,
    transports: list[str] | None = None,
    version: str | None = None,
    **options: Any,
) -> AsyncIterator[JsClient]:
    """Start `io(url, options)` in node; the socket connects at once (reconnection off).

    `version`: a key of `CLIENT_VERSIONS` (default: the current release). `options` are
    further socket.io-client options (camelCase, as in JavaScript).
    """
    package = CLIENT_VERSIONS[version] if version is not None else CURRENT
    _require_node(package)
    named = {"query": query, "auth": auth, "transports": transports}
    io_options = {k: v for k, v in named.items() if v is not None} | options
    process = await asyncio.create_subprocess_exec(
        "node",
        str(SCRIPT),
        json.dumps({"url": str(url).rstrip("/"), "options": io_options, "package": package}),
        cwd=JS_DIR,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    client = JsClient(process)
    try:
        yield client
    finally:
        await client.close()


def _require_node(package: str = CURRENT) -> None:
    """Fail (never skip) when the interoperability tests cannot run."""
    if shutil.which("node") is None:
        raise RuntimeError("node is not installed; the JS interoperability tests need it")
    if not (JS_DIR / "node_modules" / package).is_dir():
        raise RuntimeError(f"tests/js/node_modules/{package} is missing: run `make install`")
