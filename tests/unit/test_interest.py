"""`cluster.Interest`: which tenants a node follows, counted per local subscriber, without
a server (the grace timer is a fake fired by hand)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from feedserver.cluster import Interest
from feedserver.errors import StoreUnavailable


class FakeTimer:
    def __init__(self, delay: float, callback: Callable[[], None]) -> None:
        self.delay, self.callback = delay, callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def fire(self) -> None:
        assert not self.cancelled
        self.callback()


class Follows:
    """The relay's side: records each start and stop; a start can be held or failed."""

    def __init__(self, grace_s: float = 30.0) -> None:
        self.log: list[str] = []
        self.timers: list[FakeTimer] = []
        self.gate: asyncio.Event | None = None
        self.fail = False
        self.entered = asyncio.Event()  # a start is under way
        self.interest = Interest(self.start, self.stop, grace_s, schedule=self.schedule)

    async def start(self, tenant: str) -> None:
        self.log.append(f"start {tenant}")
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise StoreUnavailable()

    def stop(self, tenant: str) -> None:
        self.log.append(f"stop {tenant}")

    def schedule(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(delay, callback)
        self.timers.append(timer)
        return timer


async def test_the_first_join_starts_following_and_later_ones_do_not() -> None:
    f = Follows()
    await f.interest.join("t")
    await f.interest.join("t")
    await f.interest.join("u")
    assert f.log == ["start t", "start u"]
    assert f.interest.subscribers("t") == 2 and f.interest.wants("t")


async def two_joiners_during_a_held_start(f: Follows) -> tuple[asyncio.Task[None], ...]:
    f.gate = asyncio.Event()
    joiners = tuple(asyncio.create_task(f.interest.join("t")) for _ in range(2))
    await f.entered.wait()
    return joiners


async def test_joins_during_a_start_wait_for_that_same_start() -> None:
    f = Follows()
    first, second = await two_joiners_during_a_held_start(f)
    assert not first.done() and not second.done()
    assert f.gate is not None
    f.gate.set()
    await asyncio.gather(first, second)
    assert f.log == ["start t"]


async def test_a_cancelled_joiner_does_not_cancel_the_start_of_the_others() -> None:
    f = Follows()
    first, second = await two_joiners_during_a_held_start(f)
    first.cancel()
    assert f.gate is not None
    f.gate.set()
    await second
    assert first.cancelled()
    assert f.interest.subscribers("t") == 2  # counted in: its caller leaves for it


async def test_the_last_leave_stops_after_the_grace_only() -> None:
    f = Follows(grace_s=12.5)
    await f.interest.join("t")
    await f.interest.join("t")
    f.interest.leave("t")
    assert f.timers == []  # one subscriber is left
    f.interest.leave("t")
    [timer] = f.timers
    assert timer.delay == 12.5 and f.log == ["start t"] and f.interest.wants("t")
    timer.fire()
    assert f.log == ["start t", "stop t"] and not f.interest.wants("t")
    await f.interest.join("t")  # after the grace: a new start
    assert f.log == ["start t", "stop t", "start t"]


async def test_a_join_within_the_grace_keeps_following_without_a_new_start() -> None:
    f = Follows()
    await f.interest.join("t")
    f.interest.leave("t")
    await f.interest.join("t")
    [timer] = f.timers
    assert timer.cancelled
    assert f.log == ["start t"] and f.interest.subscribers("t") == 1


async def test_no_grace_stops_at_the_last_leave() -> None:
    f = Follows(grace_s=0)
    await f.interest.join("t")
    f.interest.leave("t")
    assert f.log == ["start t", "stop t"] and f.timers == []


async def test_a_failed_start_is_raised_to_its_joiners_and_run_again_by_the_next_join() -> None:
    f = Follows()
    f.fail = True
    with pytest.raises(StoreUnavailable):
        await f.interest.join("t")
    f.fail = False
    await f.interest.join("t")
    assert f.log == ["start t", "start t"]
    assert f.interest.subscribers("t") == 2  # the refused one leaves like any other
    f.interest.leave("t")
    f.interest.leave("t")
    f.timers[-1].fire()
    assert f.log[-1] == "stop t"


async def test_a_grace_that_ends_during_a_start_cancels_it_and_stops() -> None:
    f = Follows()
    f.gate = asyncio.Event()
    joiner = asyncio.create_task(f.interest.join("t"))
    await f.entered.wait()
    joiner.cancel()  # the socket went before its node followed the tenant
    f.interest.leave("t")
    f.timers[-1].fire()
    assert f.log == ["start t", "stop t"] and not f.interest.wants("t")
    with pytest.raises(asyncio.CancelledError):
        await joiner
