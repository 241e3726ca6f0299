"""New sessions' WebSocket handshakes, answered before aiohttp sees the connection.

The listener offers each connection's first request to `DirectUpgrades.take`
(`listener.Shortcut`). A request that opens a new Engine.IO session on a WebSocket, in a
way the engine accepts (`EngineServer.direct_handshake`), is answered by the engine itself
(`EngineServer.open_directly`); everything else goes through aiohttp and the middlewares,
every refusal included but the connect handler's (a 403 the engine writes). What the
middlewares do for a request is done here for these, by the same owners: its request id
(`access.RequestIds`, echoed in the 101), its access log line and metrics
(`access.AccessLog`) and the security headers (`security.page_headers`). While the server
shuts down, new sessions are left to aiohttp's path, whose guard refuses them
(`realtime.refuse_new_sessions`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

from . import logs
from .access import CLIENT_CLOSED_REQUEST, REQUEST_ID_HEADER, RequestIds
from .engineio import EngineServer
from .engineio.handshake import RequestHead
from .engineio.server import DirectHandshake
from .tasks import start_eagerly

log = logging.getLogger("feedserver")


class Answered(Protocol):
    def record(self, method: str, route: str, status: int, seconds: float) -> None:
        """One answered request (`access.AccessLog`)."""
        ...


class DirectUpgrades:
    """The listener's `Shortcut`: `take` a plain new-session WebSocket handshake, have the
    engine open the session (at once, or in a task if its connect handler waits), and
    record the answer; `headers` go in every answer (the application's security headers)."""

    def __init__(
        self,
        engine: EngineServer,
        access: Answered,
        headers: Mapping[str, str],
        shutting_down: asyncio.Event,
    ) -> None:
        self._engine = engine
        self._access = access
        self._ids = RequestIds()
        self._headers = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self._shutting_down = shutting_down
        self._tasks: set[asyncio.Task[Any]] = set()

    def take(self, head: bytes, tail: bytes, transport: asyncio.Transport) -> bool:
        if self._shutting_down.is_set():
            return False
        parsed = RequestHead.parse(head)
        if parsed is None:
            return False
        try:
            handshake = self._engine.direct_handshake(parsed, transport)
        except Exception:  # an origin check that fails: aiohttp's path answers it (500)
            log.exception("checking a WebSocket handshake failed")
            return False
        if handshake is None:
            return False
        rid = self._ids.for_header(parsed.headers.get(REQUEST_ID_HEADER.lower()))
        opening = self._open(handshake, transport, tail, rid, time.perf_counter())
        # The engine's connect handler (python-socketio's) waits for nothing, so the
        # session is opened here and now, with no task of its own.
        task = start_eagerly(opening)
        if task is not None:
            # Nothing more is read until the session's WebSocket reads it.
            transport.pause_reading()
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return True

    async def close(self, within: float) -> None:
        """Let the sessions being opened open (at most `within` seconds), then cancel the
        rest. Called once `shutting_down` is set (no new ones are taken) and before the
        engine closes its connections: a session opened after that would stay open."""
        if not self._tasks:
            return
        _, opening = await asyncio.wait(set(self._tasks), timeout=within)
        for task in opening:
            task.cancel()
        await asyncio.gather(*opening, return_exceptions=True)

    async def _open(
        self,
        handshake: DirectHandshake,
        transport: asyncio.Transport,
        tail: bytes,
        rid: str,
        started: float,
    ) -> None:
        logs.request_id.set(rid)  # in its own context (`take`), as the middleware does
        headers = f"{self._headers}{REQUEST_ID_HEADER}: {rid}\r\n"
        status = 500
        try:
            status = await self._engine.open_directly(handshake, transport, tail, headers)
        except asyncio.CancelledError:
            status = CLIENT_CLOSED_REQUEST
            transport.abort()
            raise
        except Exception:
            log.exception("opening a WebSocket session failed")
            transport.abort()
        finally:
            seconds = time.perf_counter() - started
            self._access.record("GET", self._engine.path, status, seconds)
