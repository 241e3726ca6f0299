"""Waiting for server state that no event announces (a socket forgotten a moment after its
connection closed): poll it, briefly, and fail with what never happened."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

POLL_INTERVAL = 0.02
WITHIN = 5.0


async def eventually(check: Callable[[], bool | Awaitable[bool]], what: str) -> None:
    """Return once `check()` (plain or async) is true; AssertionError after `WITHIN` s."""
    for _ in range(int(WITHIN / POLL_INTERVAL)):
        result = check()
        if await result if inspect.isawaitable(result) else result:
            return
        await asyncio.sleep(POLL_INTERVAL)
    raise AssertionError(f"never: {what}")
