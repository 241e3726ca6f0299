"""`cluster.StreamRelay` after a lost connection, without Redis: a store whose follows are
scripted. A stream whose seq went back is delivered from its start when Redis lost its data
(a new epoch), and from the seq it has when it only lost its newest events (a failover in
the same epoch: re-delivering the rest would send every client what it holds already)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from feedserver.cluster import StreamRelay
from feedserver.errors import StoreUnavailable
from feedserver.events import Event
from feedserver.tenants import Tenant, TenantDirectory

TS = "2026-01-20T10:30:00.000Z"


class ScriptedStore:
    """What the relay asks of `RedisStore`, answered from a script of follow results."""

    def __init__(self) -> None:
        self.epoch_now = "e1"
        self.latest: dict[str, int] = {"t": 3}
        self.follows: asyncio.Queue[list[Event] | Exception] = asyncio.Queue()
        # Tenants whose master does not answer; the epoch's does not either when set.
        self.unanswered: set[str] = set()
        self.epoch_down = False
        self.rechecked: list[str] = []

    async def epoch(self) -> str:
        if self.epoch_down:
            raise StoreUnavailable()
        return self.epoch_now

    async def latest_seqs(self, tenants: Sequence[str]) -> dict[str, int]:
        return {tenant: self.latest[tenant] for tenant in tenants}

    async def answered_latest_seqs(
        self, tenants: Sequence[str]
    ) -> tuple[dict[str, int], list[str]]:
        answered = [tenant for tenant in tenants if tenant not in self.unanswered]
        return await self.latest_seqs(answered), [t for t in tenants if t in self.unanswered]

    def recheck(self, tenants: Sequence[str]) -> None:
        self.rechecked.extend(tenants)

    def watch(self, tenant: str) -> None:
        pass

    def unwatch(self, tenant: str) -> None:
        pass

    async def follow(self, cursors: Mapping[str, int], *, count: int) -> list[Event]:
        result = await self.follows.get()
        if isinstance(result, Exception):
            raise result
        return result


def event(seq: int, message: str) -> Event:
    return Event(seq, "t", message, TS)


class Delivered(list[tuple[int, str]]):
    """(seq, message) of what the relay delivered, and a wait for the next ones."""

    def __init__(self) -> None:
        super().__init__()
        self._arrived = asyncio.Event()

    async def listener(self, e: Event) -> None:
        self.append((e.seq, e.message))
        self._arrived.set()

    async def until(self, count: int) -> None:
        async with asyncio.timeout(5):
            while len(self) < count:
                self._arrived.clear()
                await self._arrived.wait()


async def relay_delivering(store: ScriptedStore) -> tuple[StreamRelay, Delivered]:
    store_: Any = store  # the relay's store is a RedisStore; this one answers the same calls
    relay = StreamRelay(store_, TenantDirectory([Tenant("t")]), grace_s=0)
    delivered = Delivered()
    relay.add_listener(delivered.listener)
    await relay.start()
    await relay.join("t")  # the cursor at the latest seq, 3
    return relay, delivered


@pytest.mark.parametrize(
    ("epoch_after", "latest_after", "read_next"),
    [
        # Same epoch, the stream lost seq 5: on from 4, so the new seq 5 is delivered (and
        # had the cursor gone to 0, seqs 1..4 would be delivered again).
        ("e1", 4, 5),
        # A new epoch: the stream was recreated (seq 1 is in it) and delivered from its start.
        ("e2", 1, 1),
    ],
)
async def test_a_stream_whose_seq_went_back_is_continued_by_what_redis_lost(
    epoch_after: str, latest_after: int, read_next: int
) -> None:
    store = ScriptedStore()
    relay, delivered = await relay_delivering(store)
    try:
        store.follows.put_nowait([event(4, "a4"), event(5, "a5")])
        await delivered.until(2)
        store.epoch_now, store.latest["t"] = epoch_after, latest_after
        store.follows.put_nowait(StoreUnavailable())  # the connection went: a resync
        store.follows.put_nowait([event(read_next, "new")])
        await delivered.until(3)
        assert delivered == [(4, "a4"), (5, "a5"), (read_next, "new")]
    finally:
        await relay.close()


async def test_a_follow_that_fails_otherwise_does_not_end_the_relay() -> None:
    store = ScriptedStore()
    relay, delivered = await relay_delivering(store)
    try:
        store.follows.put_nowait(AttributeError("'NoneType' object has no attribute 'write'"))
        store.follows.put_nowait([event(4, "after")])
        await delivered.until(1)
        assert delivered == [(4, "after")]
    finally:
        await relay.close()


async def test_a_resync_goes_on_without_a_master_that_does_not_answer() -> None:
    """Neither the tenant's master nor the epoch's answers: the tenant is left to the
    store to check before its next read, and the relay follows again at once (it kept
    trying the resync, and delivered nothing, before)."""
    store = ScriptedStore()
    relay, delivered = await relay_delivering(store)
    try:
        store.unanswered, store.epoch_down = {"t"}, True
        store.follows.put_nowait(StoreUnavailable())  # a resync
        store.follows.put_nowait([event(4, "after")])
        await delivered.until(1)
        assert delivered == [(4, "after")]
        assert store.rechecked == ["t"]
    finally:
        await relay.close()
