"""python-socketio's AsyncClient, reporting what it receives as `tests.lines` lines.

    async with socket_client(server_url, query={"tenant": "tenant_a"}) as client:
        await client.expect_type("connect")
        info = (await client.expect_event("connection_established"))[0]
        ack = await client.emit("create_event", {"message": "hi"})

The same lines and the same `expect` API as the JavaScript client of `tests/js_client.py`;
a refused handshake is a `connect_error` line, not an exception.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import socketio

from tests.lines import DEFAULT_TIMEOUT, Line, LineReader


class SocketClient(LineReader):
    """One `socketio.AsyncClient` (reconnection off), every server event recorded."""

    def __init__(self) -> None:
        super().__init__()
        self._queue: asyncio.Queue[Line] = asyncio.Queue()
        self.sio = socketio.AsyncClient(reconnection=False)
        # Handlers only record, synchronously: lines keep the order packets arrived in.
        self.sio.on("connect", self._on_connect)
        self.sio.on("connect_error", self._on_connect_error)
        self.sio.on("disconnect", self._on_disconnect)
        self.sio.on("*", self._on_event)

    async def _read_line(self) -> Line:
        return await self._queue.get()

    def _on_connect(self) -> None:
        self._queue.put_nowait({"type": "connect", "id": self.sio.get_sid()})

    def _on_connect_error(self, data: Any = None) -> None:
        message = data.get("message") if isinstance(data, dict) else data
        payload = data.get("data") if isinstance(data, dict) else None
        self._queue.put_nowait({"type": "connect_error", "message": message, "data": payload})

    def _on_disconnect(self, reason: Any = None) -> None:
        self._queue.put_nowait({"type": "disconnect", "reason": reason})

    def _on_event(self, event: str, *args: Any) -> None:
        self._queue.put_nowait({"type": "event", "event": event, "args": list(args)})

    async def connect(
        self,
        url: object,
        *,
        query: dict[str, Any] | None = None,
        auth: dict[str, Any] | None = None,
        transports: list[str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Connect; a refusal shows as a `connect_error` line instead of raising."""
        target = str(url).rstrip("/") + (f"/?{urlencode(query)}" if query else "")
        with contextlib.suppress(socketio.exceptions.ConnectionError):
            await self.sio.connect(
                target, auth=auth, transports=transports, headers=headers or {}, wait_timeout=10
            )

    async def emit(self, event: str, *args: Any, within: float = DEFAULT_TIMEOUT) -> Any:
        """Emit with an acknowledgement; return the ack's first argument."""
        data: Any = args[0] if len(args) == 1 else (args if args else None)
        return await self.sio.call(event, data, timeout=within)

    async def send(self, event: str, *args: Any) -> None:
        """Emit without an acknowledgement."""
        data: Any = args[0] if len(args) == 1 else (args if args else None)
        await self.sio.emit(event, data)

    async def disconnect(self) -> None:
        await self.sio.disconnect()


@contextlib.asynccontextmanager
async def socket_client(
    url: object,
    *,
    query: dict[str, Any] | None = None,
    auth: dict[str, Any] | None = None,
    transports: list[str] | None = None,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[SocketClient]:
    """A connected (or refused) python-socketio client, disconnected at the end."""
    client = SocketClient()
    await client.connect(url, query=query, auth=auth, transports=transports, headers=headers)
    try:
        yield client
    finally:
        await client.disconnect()
