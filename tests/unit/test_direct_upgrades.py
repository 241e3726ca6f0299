"""`DirectUpgrades`: a session the engine opens without waiting is opened within `take`,
its reading never paused; `close`: the sessions being opened when the server shuts down
are let open (so that the gateway's close reaches them), or cancelled past the grace;
none is left to open after it. A fake engine holds each open until the test lets it go."""

from __future__ import annotations

import asyncio
from typing import Any

from feedserver.access import CLIENT_CLOSED_REQUEST
from feedserver.upgrades import DirectUpgrades

HEAD = (
    b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n"
    b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
)


class HeldEngine:
    path = "/socket.io/"

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.opened = 0

    def direct_handshake(self, head: Any, transport: Any) -> object:
        return object()

    async def open_directly(self, handshake: Any, transport: Any, tail: bytes, headers: str) -> int:
        await self.release.wait()
        self.opened += 1
        return 101


class PromptEngine(HeldEngine):
    async def open_directly(self, handshake: Any, transport: Any, tail: bytes, headers: str) -> int:
        self.opened += 1
        return 101


class Transport:
    def __init__(self) -> None:
        self.aborted = False
        self.paused = False

    def pause_reading(self) -> None:
        self.paused = True

    def abort(self) -> None:
        self.aborted = True


class Answers:
    def __init__(self) -> None:
        self.statuses: list[int] = []

    def record(self, method: str, route: str, status: int, seconds: float) -> None:
        self.statuses.append(status)


def upgrades(engine: HeldEngine, answers: Answers) -> DirectUpgrades:
    return DirectUpgrades(engine, answers, {}, asyncio.Event())  # type: ignore[arg-type]


async def test_a_session_opened_without_waiting_is_opened_within_take() -> None:
    engine, answers, transport = PromptEngine(), Answers(), Transport()
    shortcut = upgrades(engine, answers)
    assert shortcut.take(HEAD, b"", transport)  # type: ignore[arg-type]
    assert engine.opened == 1
    assert answers.statuses == [101]
    assert not transport.paused


async def test_close_waits_for_the_sessions_being_opened() -> None:
    engine, answers, transport = HeldEngine(), Answers(), Transport()
    shortcut = upgrades(engine, answers)
    assert shortcut.take(HEAD, b"", transport)  # type: ignore[arg-type]
    assert transport.paused  # nothing is read while the session waits to open
    closing = asyncio.create_task(shortcut.close(within=10))
    await asyncio.sleep(0)  # one turn: close is waiting, the open is held
    assert not closing.done()
    engine.release.set()
    await closing
    assert engine.opened == 1
    assert answers.statuses == [101]
    assert not transport.aborted


async def test_close_cancels_an_open_that_outlasts_the_grace() -> None:
    engine, answers, transport = HeldEngine(), Answers(), Transport()
    shortcut = upgrades(engine, answers)
    assert shortcut.take(HEAD, b"", transport)  # type: ignore[arg-type]
    await shortcut.close(within=0.01)
    assert engine.opened == 0
    assert transport.aborted
    assert answers.statuses == [CLIENT_CLOSED_REQUEST]
