"""Memory stores that misbehave on purpose: a bug (the 500 / internal_error paths), a stall."""

from __future__ import annotations

import asyncio
from typing import Any

from feedserver.errors import StoreUnavailable
from feedserver.events import Event
from feedserver.store import MemoryStore, TenantCounts

SECRET_DETAIL = "secret internal detail"


class BrokenAppendStore(MemoryStore):
    """`append` fails with an unexpected error (a bug, not a refusal); reads still work."""

    async def append(self, tenant: str, message: str, timestamp: str, **options: Any) -> Event:
        raise RuntimeError(SECRET_DETAIL)


class HeldCountsStore(MemoryStore):
    """`counts` (read by every catch-up) waits until the test lets it go."""

    def __init__(self, history_size: int) -> None:
        super().__init__(history_size)
        self.reading = asyncio.Event()  # a catch-up is waiting
        self.release = asyncio.Event()

    async def counts(self, tenant: str) -> TenantCounts:
        self.reading.set()
        await self.release.wait()
        return await super().counts(tenant)


class HeldAppendStore(MemoryStore):
    """`append` waits until the test lets it go: a publish in flight."""

    def __init__(self, history_size: int) -> None:
        super().__init__(history_size)
        self.appending = asyncio.Event()
        self.release = asyncio.Event()

    async def append(self, tenant: str, message: str, timestamp: str, **options: Any) -> Event:
        self.appending.set()
        await self.release.wait()
        return await super().append(tenant, message, timestamp, **options)


class FlakyExpireStore(MemoryStore):
    """`expire` is down (`StoreUnavailable`) for its first `failures` calls, then works;
    `failed` names the tenants of the failed calls, `expired` is set by the first success."""

    def __init__(self, history_size: int, failures: int) -> None:
        super().__init__(history_size)
        self.failed: list[str] = []
        self.expired = asyncio.Event()
        self._failures = failures

    async def expire(self, tenant: str, before: str) -> None:
        if len(self.failed) < self._failures:
            self.failed.append(tenant)
            raise StoreUnavailable()
        await super().expire(tenant, before)
        self.expired.set()
