"""Background tasks: how loops that reconnect wait, how a task is stopped, and how a
coroutine that rarely waits runs without one."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine, Generator
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


def start_eagerly(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """Run `coro` at once, up to where it first waits, as Python 3.12's eager tasks do:
    None if it ended there (no task made, no loop pass waited for), else the task that
    carries it on. An exception it raises before waiting is raised here. It runs in a copy
    of the current context, as a task would: a protocol callback's context is shared by
    every connection, and what `coro` sets stays its own.

    Unlike in an eager task, nothing is the current task while it runs here: it is only
    for code that asks for none before it first waits (`asyncio.timeout` does).
    """
    context = contextvars.copy_context()
    try:
        awaited = context.run(coro.send, None)
    except StopIteration:
        return None
    return asyncio.get_running_loop().create_task(_Rest(coro, awaited), context=context)


_HANDED = object()


class _Rest(Coroutine[Any, Any, None]):
    """The rest of `coro`, which is waiting for `awaited` (what it handed the loop), for a
    task to run: its first step hands the task `awaited`; every other step, and every
    cancellation (the first included), goes to `coro`."""

    __slots__ = ("_awaited", "_coro")

    def __init__(self, coro: Coroutine[Any, Any, None], awaited: Any) -> None:
        self._coro, self._awaited = coro, awaited

    def send(self, value: Any) -> Any:
        awaited = self._awaited
        if awaited is _HANDED:
            return self._coro.send(value)
        self._awaited = _HANDED
        return awaited

    def throw(self, *exc: Any) -> Any:
        self._awaited = _HANDED
        return self._coro.throw(*exc)

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, Any, None]:
        raise TypeError("for a task to run, not to be awaited")
