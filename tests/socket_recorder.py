"""A python-socketio client that records everything the server sends, for async tests.

    async with recorded_socket(url, auth={"tenant": "tenant_a"}) as sock:
        await sock.wait_for("initial_events")
        ack = await sock.call("create_event", {"message": "hi"})

`refusal(url, ...)` connects expecting a refusal and returns the `connect_error` data.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import socketio

TIMEOUT = 10.0


class SocketRecorder:
    def __init__(self) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.received: list[tuple[str, tuple[Any, ...]]] = []
        self.connect_error: Any = None
        self.disconnected = asyncio.Event()
        self.disconnect_reason: Any = None
        self._arrived = asyncio.Condition()
        self.client.on("*", self._record)
        self.client.on("connect_error", self._refused)
        self.client.on("disconnect", self._gone)

    async def _record(self, event: str, *args: Any) -> None:
        async with self._arrived:
            self.received.append((event, args))
            self._arrived.notify_all()

    async def _refused(self, error: Any = None) -> None:
        # python-socketio hands over the whole CONNECT_ERROR body, {"message", "data"};
        # the JS client's `err.data` is the "data" part, which the protocol specifies.
        self.connect_error = error.get("data") if isinstance(error, dict) else error

    async def _gone(self, reason: Any = None) -> None:
        self.disconnect_reason = reason
        self.disconnected.set()

    async def wait_for(self, event: str, count: int = 1) -> list[Any]:
        """The first argument of the first `count` `event`s, once that many have arrived."""

        def arrived() -> list[Any]:
            return [args[0] if args else None for name, args in self.received if name == event]

        async with asyncio.timeout(TIMEOUT), self._arrived:
            await self._arrived.wait_for(lambda: len(arrived()) >= count)
        return arrived()[:count]

    async def call(self, event: str, data: Any) -> Any:
        return await self.client.call(event, data, timeout=TIMEOUT)


@contextlib.asynccontextmanager
async def recorded_socket(
    url: str,
    *,
    auth: dict[str, Any] | None = None,
    query: str = "",
    headers: dict[str, str] | None = None,
    transport: str = "websocket",
) -> AsyncIterator[SocketRecorder]:
    recorder = SocketRecorder()
    await recorder.client.connect(
        url + (f"?{query}" if query else ""),
        auth=auth,
        headers=headers or {},
        transports=[transport],
        wait_timeout=TIMEOUT,
    )
    try:
        yield recorder
    finally:
        await recorder.client.disconnect()


async def refusal(
    url: str,
    *,
    auth: dict[str, Any] | None = None,
    query: str = "",
    headers: dict[str, str] | None = None,
) -> Any:
    """Connect expecting a refusal; the `connect_error` data (`err.data` in JS)."""
    recorder = SocketRecorder()
    try:
        await recorder.client.connect(
            url + (f"?{query}" if query else ""),
            auth=auth,
            headers=headers or {},
            transports=["websocket"],
            wait_timeout=TIMEOUT,
        )
    except socketio.exceptions.ConnectionError:
        return recorder.connect_error
    await recorder.client.disconnect()
    raise AssertionError("the server accepted a connection it should have refused")
