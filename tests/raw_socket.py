"""A hostile client's view: Engine.IO / Socket.IO frames written by hand over a real
WebSocket, so a test can send what no well-behaved client library would."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import ClientSession, ClientWebSocketResponse, WSMsgType
from aiohttp.test_utils import TestServer

RECEIVE_TIMEOUT = 5.0


class RawSocket:
    """One Engine.IO WebSocket; `texts()` are the frames received so far, in order."""

    def __init__(self, ws: ClientWebSocketResponse) -> None:
        self.ws = ws
        self.received: list[str] = []
        self.closed_with: int | None = None

    async def send(self, text: str) -> None:
        await self.ws.send_str(text)

    async def next_text(self, within: float = RECEIVE_TIMEOUT) -> str | None:
        """The next text frame, answering pings; None once the server has closed."""
        while True:
            msg = await self.ws.receive(timeout=within)
            if msg.type == WSMsgType.TEXT:
                if msg.data == "2":  # Engine.IO PING: stay alive
                    await self.ws.send_str("3")
                    continue
                self.received.append(msg.data)
                return str(msg.data)
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                self.closed_with = msg.data if msg.type == WSMsgType.CLOSE else None
                return None
            if msg.type == WSMsgType.ERROR:
                return None

    async def expect(self, prefix: str, within: float = RECEIVE_TIMEOUT) -> str:
        """Skip frames until one starts with `prefix`; fail if the connection ends first."""
        while True:
            text = await self.next_text(within)
            assert text is not None, f"closed before a frame starting {prefix!r}: {self.received}"
            if text.startswith(prefix):
                return text

    async def connect(self, auth: dict[str, Any] | None = None) -> dict[str, Any]:
        """The Socket.IO CONNECT of the default namespace; its `connection_established`."""
        await self.send("40" + (json.dumps(auth) if auth is not None else ""))
        await self.expect("40{")
        established = await self.expect('42["connection_established"')
        await self.expect('42["initial_events"')
        return dict(json.loads(established[2:])[1])

    async def closes(self, within: float = RECEIVE_TIMEOUT) -> bool:
        """Read until the server closes the connection: True if it does `within` seconds."""
        try:
            while await self.next_text(within) is not None:
                pass
        except TimeoutError:
            return False
        return True


@contextlib.asynccontextmanager
async def raw_socket(server: TestServer, query: str = "") -> AsyncIterator[RawSocket]:
    """A raw Engine.IO WebSocket to `server`, its OPEN packet already read."""
    url = server.make_url(f"/socket.io/?EIO=4&transport=websocket{query}")
    async with ClientSession() as http, http.ws_connect(url, autoping=True) as ws:
        sock = RawSocket(ws)
        assert (await sock.expect("0{")).startswith("0{")
        yield sock


def client_frame(payload: bytes, opcode: int = 0x1, *, masked: bool = True) -> bytes:
    """A final client WebSocket frame (RFC 6455 5.2), masked unless told otherwise."""
    length = len(payload)
    mask_bit = 0x80 if masked else 0
    if length < 126:
        header = bytes((0x80 | opcode, mask_bit | length))
    elif length < 65536:
        header = bytes((0x80 | opcode, mask_bit | 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, mask_bit | 127)) + length.to_bytes(8, "big")
    if not masked:
        return header + payload
    key = os.urandom(4)
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


@contextlib.asynccontextmanager
async def raw_tcp_websocket(
    server: TestServer, query: str = "", receive_buffer: int | None = None
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """An Engine.IO WebSocket on a bare TCP connection, after the 101 (the OPEN packet not
    read yet): for frames no client library writes, or a client that never reads.
    `receive_buffer`: SO_RCVBUF, set before connecting (a small one fills up quickly)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (server.host, server.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 16)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /socket.io/?EIO=4&transport=websocket{query} HTTP/1.1\r\n"
        f"Host: {server.host}:{server.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    status = await reader.readline()
    assert b" 101 " in status, status
    while (await reader.readline()) not in (b"\r\n", b""):
        pass
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
