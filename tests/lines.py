"""Awaiting what a test client receives, as JSON-like lines, without sleeping.

Both test clients — the real socket.io JavaScript client (`tests/js_client.py`) and
python-socketio's AsyncClient (`tests/socket_client.py`) — report what happens as the same
lines, so one test can drive either:

    {"type": "connect", ...}                  {"type": "connect_error", "message", "data"}
    {"type": "disconnect", "reason"}          {"type": "event", "event": NAME, "args": [...]}

`expect(predicate)` returns the first unread line that matches and leaves the lines before
it unread, so a test awaits things in whatever order it cares about.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

DEFAULT_TIMEOUT = 10.0

Line = dict[str, Any]
Predicate = Callable[[Line], bool]


class LineReader:
    """What both clients share; a subclass supplies `_read_line` (EOFError at the end)."""

    def __init__(self) -> None:
        self._unread: list[Line] = []
        self.lines: list[Line] = []  # everything received, in order (for failure messages)

    async def _read_line(self) -> Line:
        raise NotImplementedError

    def _diagnostics(self) -> str:
        """Extra text for a failure message (e.g. the client's stderr)."""
        return ""

    async def expect(self, predicate: Predicate, within: float = DEFAULT_TIMEOUT) -> Line:
        """The first unread line matching `predicate`; fails the test after `within` s."""
        for index, line in enumerate(self._unread):
            if predicate(line):
                return self._unread.pop(index)
        try:
            async with asyncio.timeout(within):
                while True:
                    line = await self._read_line()
                    self.lines.append(line)
                    if predicate(line):
                        return line
                    self._unread.append(line)
        except TimeoutError:
            raise AssertionError(
                f"no matching line within {within}s; received: {self.lines}{self._diagnostics()}"
            ) from None

    async def expect_type(self, kind: str, within: float = DEFAULT_TIMEOUT) -> Line:
        """The next unread line of `kind` ("connect", "connect_error", "disconnect", ...)."""
        return await self.expect(lambda line: line["type"] == kind, within)

    async def expect_event(self, name: str, within: float = DEFAULT_TIMEOUT) -> list[Any]:
        """The arguments of the next unread server event called `name`."""
        line = await self.expect(
            lambda line: line["type"] == "event" and line["event"] == name, within
        )
        args: list[Any] = line["args"]
        return args

    async def next(self, within: float = DEFAULT_TIMEOUT) -> Line:
        """The next unread line, whatever it is."""
        return await self.expect(lambda line: True, within)

    async def expect_established(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The connect, then `connection_established` and `initial_events`, in this order."""
        await self.expect_type("connect")
        first = await self.expect(lambda line: line["type"] == "event")
        second = await self.expect(lambda line: line["type"] == "event")
        assert (first["event"], second["event"]) == ("connection_established", "initial_events")
        return first["args"][0], second["args"][0]

    async def expect_live_event(self) -> dict[str, Any]:
        """The event object of the next unread `event_created`."""
        event: dict[str, Any] = (await self.expect_event("event_created"))[0]
        return event

    def unread(self) -> list[Line]:
        """Lines received so far and not yet returned (does not wait)."""
        return list(self._unread)

    def __aiter__(self) -> AsyncIterator[Line]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Line]:
        while self._unread:
            yield self._unread.pop(0)
        while True:
            try:
                line = await self._read_line()
            except EOFError:
                return
            self.lines.append(line)
            yield line
