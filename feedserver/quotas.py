"""Quotas: fixed-window rate limits (per client address, per tenant) and connection caps.

Counters live in a `limits` storage built from a URI (`memory://`, or the Redis of
`FEED_STORE`, which shares them between nodes), and connection counts in
`ConnectionCounter`s, both passed in, so a deployment can swap where they are kept without
touching the rules.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from limits.aio.storage import Storage
from limits.errors import StorageError
from limits.storage import storage_from_string

from .core import ConnectionCounter
from .errors import RateLimited, StoreUnavailable, TooManyConnections
from .store.redis import COMMAND_TIMEOUT_S

LIMITS_KEY_PREFIX = "feed:limits"


def open_limit_storage(uri: str) -> Storage:
    """The async `limits` storage for `memory://` or `redis://host:port/db`.

    Redis through redis-py's asyncio client (as the event store; `limits` would pick
    coredis), with the store's short timeouts, and failures raised as `StorageError`.
    """
    if uri == "memory://":
        storage = storage_from_string("async+memory://")
    else:
        storage = storage_from_string(
            f"async+{uri}",
            implementation="redispy",
            key_prefix=LIMITS_KEY_PREFIX,
            wrap_exceptions=True,
            socket_timeout=COMMAND_TIMEOUT_S,
            socket_connect_timeout=COMMAND_TIMEOUT_S,
        )
    assert isinstance(storage, Storage)
    return storage


@contextmanager
def _storage_errors() -> Iterator[None]:
    """A limit that cannot be counted (Redis down) is a 503, like the event store."""
    try:
        yield
    except StorageError as exc:
        raise StoreUnavailable("Rate-limit storage unavailable") from exc


@dataclass(frozen=True, slots=True)
class Quota:
    """One hit's outcome, as the `RateLimit-*` headers (draft 6, as express-rate-limit) say it."""

    limit: int
    used: int
    reset_after: int  # whole seconds until the window starts again

    @property
    def allowed(self) -> bool:
        return self.used <= self.limit

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(max(0, self.limit - self.used)),
            "RateLimit-Reset": str(self.reset_after),
        }


class FixedWindow:
    """At most `amount` hits per key in each window of `seconds`, counted in `storage`."""

    def __init__(self, storage: Storage, scope: str, amount: int, seconds: int) -> None:
        self.storage = storage
        self.amount = amount
        self.seconds = seconds
        self._prefix = f"feed/{scope}/{amount}/{seconds}/"

    async def hit(self, key: str) -> int:
        """Count one hit for `key`; returns the hits in the current window, this one included."""
        with _storage_errors():
            return await self.storage.incr(self._prefix + key, self.seconds)

    async def reset_after(self, key: str) -> int:
        with _storage_errors():
            expiry = await self.storage.get_expiry(self._prefix + key)
        return max(1, math.ceil(expiry - time.time()))


class RequestLimiter:
    """Per client address: every `/api/` request and every socket `create_event`."""

    def __init__(self, window: FixedWindow) -> None:
        self.window = window

    async def hit(self, address: str) -> Quota:
        used = await self.window.hit(address)
        return Quota(self.window.amount, used, await self.window.reset_after(address))


class TenantPublishLimiter:
    """Per tenant publishes per second, over REST and Socket.IO alike (`PublishLimiter`)."""

    def __init__(self, window: FixedWindow) -> None:
        self.window = window

    async def hit(self, tenant: str) -> None:
        if await self.window.hit(tenant) > self.window.amount:
            retry_after = await self.window.reset_after(tenant)
            raise RateLimited(retry_after, "Too many events for this tenant")


def window_seconds(window_ms: int) -> int:
    """`limits` counts whole seconds; a shorter window is rounded up to one second."""
    return max(1, math.ceil(window_ms / 1000))


class ConnectionCaps:
    """Refuses a socket when its tenant or its client address already has too many."""

    def __init__(
        self,
        tenants: ConnectionCounter,
        addresses: ConnectionCounter,
        *,
        per_tenant: int,
        per_address: int,
    ) -> None:
        self.tenants = tenants
        self.addresses = addresses
        self.per_tenant = per_tenant
        self.per_address = per_address

    async def admit(self, tenant: str, address: str) -> None:
        """Count a new connection, or raise `TooManyConnections` and count nothing."""
        if await self.addresses.count(address) >= self.per_address:
            raise TooManyConnections("Too many connections from this address")
        if await self.tenants.count(tenant) >= self.per_tenant:
            raise TooManyConnections("Too many connections for this tenant")
        self.tenants.opened(tenant)
        self.addresses.opened(address)

    def release(self, tenant: str, address: str) -> None:
        self.tenants.closed(tenant)
        self.addresses.closed(address)
