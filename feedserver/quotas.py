"""Quotas: fixed-window rate limits (per client address, per tenant) and connection caps.

Counters live in `WindowCounters` built from a URI (`memory://`: this process's own dict;
or the Redis or Redis Cluster of `FEED_STORE` through a `limits` storage, which shares
them between nodes), and connection counts in `ConnectionCounter`s, both passed in, so a
deployment can swap where they are kept without touching the rules.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import NamedTuple, Protocol

from limits.aio.storage import Storage
from limits.errors import StorageError
from limits.storage import storage_from_string
from multidict import istr

from .core import ConnectionCounter
from .errors import RateLimited, StoreUnavailable, TooManyConnections
from .store.redis import CLUSTER_SCHEME, COMMAND_TIMEOUT_S, REDIS_ERRORS

LIMITS_KEY_PREFIX = "feed:limits"
# Header names as `istr`: multidict sets them without folding their case on every response.
RATELIMIT_LIMIT = istr("RateLimit-Limit")
RATELIMIT_REMAINING = istr("RateLimit-Remaining")
RATELIMIT_RESET = istr("RateLimit-Reset")
# How often `LocalWindows` drops the windows that ended (clients that went away).
SWEEP_INTERVAL_S = 10.0


log = logging.getLogger(__name__)

# What a shared counter raises when Redis fails: `limits` wraps redis-py's RedisError, not
# the RedisClusterException of a cluster whose slot refresh found no node up.
STORAGE_ERRORS = (StorageError, *REDIS_ERRORS)


class WindowCounters(Protocol):
    """Hit counts per key that start again `seconds` after a window's first hit."""

    failures: int  # operations that failed since start (read by the metrics)

    async def start(self) -> None:
        """Connect now, at start-up (on a Redis Cluster: learn its slots), not at the
        first hit."""
        ...

    async def incr(self, key: str, seconds: int) -> int:
        """Count one hit; the hits in `key`'s current window, this one included."""
        ...

    async def seconds_left(self, key: str) -> float:
        """Seconds until `key`'s current window ends (0 or less: it has ended)."""
        ...

    async def hit(self, key: str, seconds: int) -> tuple[int, float]:
        """`incr`, then `seconds_left`: the hits and the seconds until the window ends."""
        ...

    async def clear(self, key: str) -> None:
        """End `key`'s window now."""
        ...


class _Window:
    __slots__ = ("ends", "hits")

    def __init__(self, ends: float) -> None:
        self.ends = ends
        self.hits = 0


class LocalWindows:
    """The counters of this process, in a dict: nothing shared, nothing to wait for.

    Used instead of `limits`' memory storage, which takes an asyncio lock and starts a
    task that scans every key for expiry on each hit: most of the rate limits' cost per
    POST. The rules are the same: a window starts at a key's first hit and ends `seconds`
    later.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._next_sweep = clock() + SWEEP_INTERVAL_S

    failures = 0  # a dict does not fail

    async def start(self) -> None:
        pass

    async def incr(self, key: str, seconds: int) -> int:
        return self._count(key, seconds, self._clock()).hits

    async def seconds_left(self, key: str) -> float:
        window = self._windows.get(key)
        return 0.0 if window is None else window.ends - self._clock()

    async def hit(self, key: str, seconds: int) -> tuple[int, float]:
        now = self._clock()
        window = self._count(key, seconds, now)
        return window.hits, window.ends - now

    async def clear(self, key: str) -> None:
        self._windows.pop(key, None)

    def _count(self, key: str, seconds: int, now: float) -> _Window:
        window = self._windows.get(key)
        if window is None or window.ends <= now:
            if now >= self._next_sweep:
                self._sweep(now)
            window = self._windows[key] = _Window(now + seconds)
        window.hits += 1
        return window

    def _sweep(self, now: float) -> None:
        # Keys are client addresses too: without this, one entry per client ever seen.
        self._windows = {key: w for key, w in self._windows.items() if w.ends > now}
        self._next_sweep = now + SWEEP_INTERVAL_S


class SharedWindows:
    """Counters in a `limits` storage (Redis), shared by every node that uses it."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.failures = 0

    async def start(self) -> None:
        # A failed check is no failure: the first hit asks again (and answers 503 then).
        try:
            reachable = await self.storage.check()
        except STORAGE_ERRORS:
            reachable = False
        if not reachable:
            log.warning("the rate-limit storage is not reachable yet")

    async def incr(self, key: str, seconds: int) -> int:
        try:
            return await self.storage.incr(key, seconds)
        except STORAGE_ERRORS as exc:
            raise self._unavailable() from exc

    async def seconds_left(self, key: str) -> float:
        try:
            expiry = await self.storage.get_expiry(key)
        except STORAGE_ERRORS as exc:
            raise self._unavailable() from exc
        return expiry - time.time()

    async def hit(self, key: str, seconds: int) -> tuple[int, float]:
        return await self.incr(key, seconds), await self.seconds_left(key)

    async def clear(self, key: str) -> None:
        try:
            await self.storage.clear(key)
        except STORAGE_ERRORS as exc:
            raise self._unavailable() from exc

    def _unavailable(self) -> StoreUnavailable:
        """A limit that cannot be counted (Redis down) is a 503, like the event store."""
        self.failures += 1
        return StoreUnavailable("Rate-limit storage unavailable")


def open_window_counters(uri: str) -> WindowCounters:
    """Counters for `memory://` (this process), `redis://host:port/db` or
    `redis-cluster://host:port[,host:port...]` (shared).

    Redis through redis-py's asyncio client (as the event store; `limits` would pick
    coredis), with the store's short timeouts, and failures raised as `StorageError`. On
    a cluster each counter is one key, and each script a fixed window runs (INCRBY, then
    EXPIRE on the first hit) names only that key: it runs in the key's slot, wherever
    that is.
    """
    if uri == "memory://":
        return LocalWindows()
    options: dict[str, float | str | bool] = {
        "socket_timeout": COMMAND_TIMEOUT_S,
        "socket_connect_timeout": COMMAND_TIMEOUT_S,
    }
    if uri.startswith(CLUSTER_SCHEME):
        # `limits`' own scheme for a cluster of the same host:port list.
        uri = "redis+cluster://" + uri.removeprefix(CLUSTER_SCHEME)
        # redis-py closes every connection of a cluster client at each 5th MOVED (a slot
        # moved or failed over), those with a hit in flight too, which its retry then
        # counts again; 0: a MOVED repoints its own slot only.
        options["reinitialize_steps"] = 0
    storage = storage_from_string(
        f"async+{uri}",
        implementation="redispy",
        key_prefix=LIMITS_KEY_PREFIX,
        wrap_exceptions=True,
        **options,
    )
    assert isinstance(storage, Storage)
    return SharedWindows(storage)


class Quota(NamedTuple):
    """One hit's outcome, as the `RateLimit-*` headers (draft 6, as express-rate-limit) say it.

    A named tuple rather than a frozen dataclass: one is made per request, in a third of
    the time.
    """

    limit: int
    used: int
    reset_after: int  # whole seconds until the window starts again

    @property
    def allowed(self) -> bool:
        return self.used <= self.limit

    def headers(self) -> tuple[tuple[str, str], ...]:
        limit, used, reset_after = self
        return (
            (RATELIMIT_LIMIT, str(limit)),
            (RATELIMIT_REMAINING, str(limit - used if used < limit else 0)),
            (RATELIMIT_RESET, str(reset_after)),
        )


class FixedWindow:
    """At most `amount` hits per key in each window of `seconds`, counted in `counters`."""

    def __init__(self, counters: WindowCounters, scope: str, amount: int, seconds: int) -> None:
        self.counters = counters
        self.amount = amount
        self.seconds = seconds
        self._prefix = f"feed/{scope}/{amount}/{seconds}/"

    def hit(self, key: str) -> Awaitable[int]:
        """Count one hit for `key`; returns the hits in the current window, this one included."""
        # The counters' own coroutine, not one more around it: this runs on every publish.
        return self.counters.incr(self._prefix + key, self.seconds)

    async def forget(self, key: str) -> None:
        await self.counters.clear(self._prefix + key)

    async def reset_after(self, key: str) -> int:
        return max(1, math.ceil(await self.counters.seconds_left(self._prefix + key)))

    async def quota(self, key: str) -> Quota:
        """Count one hit for `key`; where it stands in its window."""
        used, seconds_left = await self.counters.hit(self._prefix + key, self.seconds)
        return Quota(self.amount, used, max(1, math.ceil(seconds_left)))


class RequestLimiter:
    """Per client address: every `/api/` request and every socket `create_event`."""

    def __init__(self, window: FixedWindow) -> None:
        self.window = window

    def hit(self, address: str) -> Awaitable[Quota]:
        # The window's coroutine itself, not one more around it: this runs on every request.
        return self.window.quota(address)


class TenantPublishLimiter:
    """Per tenant publishes per second, over REST and Socket.IO alike (`PublishLimiter`)."""

    def __init__(
        self, window: FixedWindow, tenant_limit: Callable[[str], int | None] | None = None
    ) -> None:
        self.window = window
        # A tenant's own limit (its `maxEventsPerSec` setting), None for the server's.
        self._tenant_limit = tenant_limit

    async def hit(self, tenant: str) -> None:
        own = self._tenant_limit(tenant) if self._tenant_limit is not None else None
        if await self.window.hit(tenant) > (self.window.amount if own is None else own):
            retry_after = await self.window.reset_after(tenant)
            raise RateLimited(retry_after, "Too many events for this tenant")

    async def forget(self, tenant: str) -> None:
        await self.window.forget(tenant)


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
        tenant_cap: Callable[[str], int | None] | None = None,
    ) -> None:
        self.tenants = tenants
        self.addresses = addresses
        self.per_tenant = per_tenant
        self.per_address = per_address
        # A tenant's own cap (its `maxConnections` setting), None for the server's.
        self._tenant_cap = tenant_cap

    async def admit(self, tenant: str, address: str) -> None:
        """Count a new connection, or raise `TooManyConnections` and count nothing."""
        if await self.addresses.count(address) >= self.per_address:
            raise TooManyConnections("Too many connections from this address")
        own = self._tenant_cap(tenant) if self._tenant_cap is not None else None
        if await self.tenants.count(tenant) >= (self.per_tenant if own is None else own):
            raise TooManyConnections("Too many connections for this tenant")
        self.tenants.opened(tenant)
        self.addresses.opened(address)

    def release(self, tenant: str, address: str) -> None:
        self.tenants.closed(tenant)
        self.addresses.closed(address)
