"""Background tasks: how loops that reconnect wait, and how a task is stopped."""

from __future__ import annotations

import asyncio
from typing import Any


class Backoff:
    """Delays between reconnection attempts: doubling from `first` up to `cap` seconds."""

    def __init__(self, first: float = 0.1, cap: float = 2.0) -> None:
        self.first, self.cap = first, cap
        self.delay = first

    def reset(self) -> None:
        self.delay = self.first

    async def sleep(self) -> None:
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, self.cap)


async def stop(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` and wait until it has ended.

    Cancelled again while it runs on: redis-py can swallow a cancellation that lands inside
    a command (redis/redis-py#2028; seen with 8.1), and the loops here carry on after a
    failed Redis call by design.
    """
    while task is not None and not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1)
