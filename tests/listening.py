"""An aiohttp app served in the test's loop as `feedserver serve` serves it: feedserver's
listener (`feedserver.listener.HttpListener`), with a shortcut for the first request if
given, on 127.0.0.1 and a free port."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from feedserver.listener import HttpListener, Shortcut

HEADER_TIMEOUT = 10.0  # feedserver's default FEED_HTTP_HEADER_TIMEOUT


@contextlib.asynccontextmanager
async def listening(app: web.Application, shortcut: Shortcut | None = None) -> AsyncIterator[int]:
    """Serve `app`; yield the port."""
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    listener = HttpListener(
        runner, "127.0.0.1", 0, header_timeout=HEADER_TIMEOUT, shortcut=shortcut
    )
    await listener.start()
    try:
        yield listener.addresses[0][1]
    finally:
        listener.close()
        await runner.cleanup()


class Unrecorded:
    """A `DirectUpgrades` access log that keeps nothing."""

    def record(self, method: str, route: str, status: int, seconds: float) -> None:
        pass
