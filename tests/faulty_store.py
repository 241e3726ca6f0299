"""A memory store with a bug: for the tests of the 500 / internal_error paths."""

from __future__ import annotations

from feedserver.events import Event
from feedserver.store import MemoryStore

SECRET_DETAIL = "secret internal detail"


class BrokenAppendStore(MemoryStore):
    """`append` fails with an unexpected error (a bug, not a refusal); reads still work."""

    async def append(self, tenant: str, message: str, timestamp: str) -> Event:
        raise RuntimeError(SECRET_DETAIL)
