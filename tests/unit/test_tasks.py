"""`tasks.start_eagerly`: a coroutine run at once up to where it first waits, then carried
on by a task, in the context it was given."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from feedserver.tasks import start_eagerly

SEEN: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="")


async def test_a_coroutine_that_never_waits_runs_to_its_end_with_no_task() -> None:
    steps: list[str] = []

    async def opening() -> None:
        steps.append("ran")

    assert start_eagerly(opening()) is None
    assert steps == ["ran"]


async def test_a_coroutine_that_waits_is_carried_on_by_a_task_in_the_same_context() -> None:
    steps: list[str] = []
    go = asyncio.Event()

    async def opening() -> None:
        SEEN.set("mine")
        steps.append("before")
        await go.wait()
        steps.append(f"after, {SEEN.get()}")

    task = start_eagerly(opening())
    assert task is not None
    assert steps == ["before"]  # up to its first wait, before the call returned
    assert SEEN.get() == ""  # what it set stays in its own context
    go.set()
    await task
    assert steps == ["before", "after, mine"]


async def test_a_value_the_loop_hands_back_reaches_the_coroutine() -> None:
    async def opening() -> None:
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, lambda: 42) == 42
        await asyncio.sleep(0)  # a bare yield to the loop too

    task = start_eagerly(opening())
    assert task is not None
    await task


@pytest.mark.parametrize("steps_first", [0, 1], ids=["before its first step", "after it"])
async def test_cancelling_the_task_cancels_the_coroutine_where_it_waits(steps_first: int) -> None:
    steps: list[str] = []

    async def opening() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            steps.append("cancelled")
            raise

    task = start_eagerly(opening())
    assert task is not None
    for _ in range(steps_first):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert steps == ["cancelled"]


async def test_an_error_before_the_first_wait_is_raised_at_the_call() -> None:
    async def opening() -> None:
        raise LookupError("refused")

    with pytest.raises(LookupError, match="refused"):
        start_eagerly(opening())


async def test_an_error_after_a_wait_ends_the_task_with_it() -> None:
    async def opening() -> None:
        await asyncio.sleep(0)
        raise LookupError("refused")

    task = start_eagerly(opening())
    assert task is not None
    with pytest.raises(LookupError, match="refused"):
        await task
