"""The feed: publish, history, catch-up and stats. No aiohttp, no socketio here.

Both transports (REST in `api`, Socket.IO in `realtime`) call `Feed.publish`, so
validation, limits and broadcasting are written once. Delivery to subscribers is done by
listeners that the transports register on an `EventBus` (events, and system messages as
notices); the core never imports them. Which tenants exist, and whether each may publish,
is the `TenantDirectory`'s (`tenants`): read once per publish or subscription, never waited
for.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from .errors import ForbiddenTenant, StoreUnavailable, ValidationFailed
from .events import Event, UtcClock, utc_timestamp
from .logs import bind_tenant
from .messages import normalise_message
from .schemas import IDEMPOTENCY_KEY_HEADER, parse_publish
from .store import EventStore, TenantCounts
from .tenants import ACTIVE, Tenant, TenantDirectory

log = logging.getLogger(__name__)

Listener = Callable[[Event], Awaitable[None]]
SystemNotice = dict[str, str]  # {"message", "level", "timestamp"}: the `system_message` body
NoticeListener = Callable[[SystemNotice], Awaitable[None]]


class PublishLimiter(Protocol):
    """Raises `RateLimited` when `tenant` may not publish now."""

    async def hit(self, tenant: str) -> None: ...

    async def forget(self, tenant: str) -> None:
        """Drop what is counted for `tenant` (it was deleted)."""
        ...


class EventBus(Protocol):
    """How each stored event reaches the listeners: once each, in seq order per tenant; and
    how each system message reaches the notice listeners of every node, once each."""

    def add_listener(self, listener: Listener) -> None: ...

    async def dispatch(self, event: Event) -> None:
        """Called by `Feed.publish` once `event` is stored."""
        ...

    def delivered_up_to(self, tenant: str) -> int | None:
        """The seq up to which the listeners have been called for `tenant`; None when an
        event reaches them as soon as it is stored."""
        ...

    async def join(self, tenant: str) -> None:
        """A subscriber of `tenant` arrives on this node: return once every event after
        `delivered_up_to(tenant)` is to reach the listeners. Counted in before the first
        await: each call is paired with one `leave`, also when its caller is cancelled."""
        ...

    def leave(self, tenant: str) -> None:
        """A subscriber of `tenant` that joined has left this node."""
        ...

    def add_notice_listener(self, listener: NoticeListener) -> None: ...

    async def send_notice(self, notice: SystemNotice) -> None:
        """Hand `notice` to the notice listeners of every node; this node's have been
        called when this returns."""
        ...


class LocalBus:
    """One process: the publishing call itself delivers the event (or the notice) to every
    listener."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._notice_listeners: list[NoticeListener] = []

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def dispatch(self, event: Event) -> None:
        for listener in self._listeners:
            await listener(event)

    def delivered_up_to(self, tenant: str) -> int | None:
        return None

    async def join(self, tenant: str) -> None:
        """Nothing to do: every event is published here, and delivered by its publish."""

    def leave(self, tenant: str) -> None:
        pass

    def add_notice_listener(self, listener: NoticeListener) -> None:
        self._notice_listeners.append(listener)

    async def send_notice(self, notice: SystemNotice) -> None:
        for listener in self._notice_listeners:
            await listener(notice)


class PublishObserver(Protocol):
    """Told how long each successful publish took; metrics live outside the core."""

    def published(self, tenant: str, seconds: float) -> None: ...


class ConnectionCounter(Protocol):
    """Live subscriber connections per tenant (all nodes when shared)."""

    def opened(self, tenant: str) -> None: ...

    def closed(self, tenant: str) -> None: ...

    async def count(self, tenant: str) -> int: ...


class LocalConnections:
    """Connection counts of this process only."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def opened(self, tenant: str) -> None:
        self._counts[tenant] = self._counts.get(tenant, 0) + 1

    def closed(self, tenant: str) -> None:
        left = self._counts.get(tenant, 0) - 1
        if left > 0:
            self._counts[tenant] = left
        else:
            # Keys may be client addresses: forget them, or the dict grows with every client.
            self._counts.pop(tenant, None)

    async def count(self, tenant: str) -> int:
        return self._counts.get(tenant, 0)

    def snapshot(self) -> dict[str, int]:
        """Every key with a live connection and its count."""
        return dict(self._counts)


def system_notice(message: str, level: str) -> SystemNotice:
    return {"message": message, "level": level, "timestamp": utc_timestamp()}


class Published(NamedTuple):
    """A named tuple, like `schemas.PublishRequest`: one per publish, cheaper to make than
    a frozen dataclass."""

    event: Event
    replayed: bool  # True: the idempotency key was seen before; `event` is the first one


@dataclass(frozen=True, slots=True)
class History:
    events: list[Event]
    latest_seq: int


@dataclass(frozen=True, slots=True)
class CatchUp:
    """What a (re)connecting subscriber gets before live events."""

    events: list[Event]
    latest_seq: int
    recovered: bool  # True only when every event after the client's `since` is included


@dataclass(frozen=True, slots=True)
class TenantStats:
    events: int
    held: int
    connections: int
    last_event_at: str | None

    def to_json(self) -> dict[str, object]:
        return {
            "events": self.events,
            "held": self.held,
            "connections": self.connections,
            "lastEventAt": self.last_event_at,
        }


TENANT_DELETED = "tenant deleted"
# To a socket whose token's key was revoked, or that its tenant's cut-off or policy voids.
CREDENTIALS_REVOKED = "credentials revoked"


class Feed:
    def __init__(
        self,
        store: EventStore,
        tenants: TenantDirectory,
        *,
        history_size: int,
        initial_events: int,
        max_message_length: int,
        retention_seconds: int | None = None,
        idempotency_ttl: int = 600,
        limiter: PublishLimiter | None = None,
        connections: ConnectionCounter | None = None,
        bus: EventBus | None = None,
        observer: PublishObserver | None = None,
        clock: UtcClock | None = None,
    ) -> None:
        self.store = store
        self.tenants = tenants
        self._live = tenants.view  # on the publish path: lookups without a Python call
        self.history_size = history_size
        self.retention_seconds = retention_seconds
        self.idempotency_ttl = idempotency_ttl
        self.initial_events = initial_events
        self.max_message_length = max_message_length
        self.limiter = limiter
        self.connections: ConnectionCounter = connections or LocalConnections()
        self.bus: EventBus = bus or LocalBus()
        self.observer = observer
        self.clock = clock or UtcClock()
        tenants.on_change(self._tenant_changed)

    def add_listener(self, listener: Listener) -> None:
        """Call `listener(event)` for every new event this node is to deliver."""
        self.bus.add_listener(listener)

    async def join(self, tenant: str) -> None:
        """A subscriber of `tenant` connects to this node: call before its catch-up, with
        its live events already parked (`EventBus.join`); pair with one `leave`."""
        await self.bus.join(tenant)

    def leave(self, tenant: str) -> None:
        self.bus.leave(tenant)

    def add_notice_listener(self, listener: NoticeListener) -> None:
        """Call `listener(notice)` for every system message, posted on any node."""
        self.bus.add_notice_listener(listener)

    async def post_system_message(self, message: str, level: str) -> SystemNotice:
        """Send a system message (same text rules as events) to every tenant's subscribers,
        on every node."""
        notice = system_notice(normalise_message(message, self.max_message_length), level)
        await self.bus.send_notice(notice)
        return notice

    async def publish(
        self, tenant: str, payload: object, idempotency_key: str | None = None
    ) -> Published:
        """Validate, rate-limit, store and broadcast one event; the one publish path.

        With an idempotency key (the REST header, or `idempotencyKey` in the payload) a
        repeat within `idempotency_ttl` seconds stores and broadcasts nothing and returns
        the first event.
        """
        started = time.perf_counter()
        bind_tenant(tenant)
        record = self._live.get(tenant)
        if record is None or record.status != ACTIVE:
            record = self.tenants.active(tenant)  # raises the refusal that fits
        request = parse_publish(payload)
        key = _one_key(idempotency_key, request.idempotency_key)
        message = normalise_message(
            request.message, record.settings.max_message_length or self.max_message_length
        )
        if self.limiter is not None:
            await self.limiter.hit(tenant)
        # The store keeps at least FEED_HISTORY_SIZE, also for a tenant that asked for fewer
        # (reads are clamped to its own window): with Redis the stream is also what every
        # node's relay reads, and trimmed to a handful it would lose a burst before a node
        # read it.
        history_size = max(self._history_size(record), self.history_size)
        retention = self._retention(record)
        expire_before = None if retention is None else self.clock.timestamp_before(retention)
        if key is None:
            event = await self.store.append(
                tenant,
                message,
                self.clock.timestamp(),
                history_size=history_size,
                expire_before=expire_before,
            )
            created = True
        else:
            event, created = await self.store.append_once(
                tenant,
                key,
                message,
                self.clock.timestamp(),
                ttl=self.idempotency_ttl,
                history_size=history_size,
                expire_before=expire_before,
            )
        if created and tenant not in self._live:
            # Deleted while this publish was stored: the purge may have run before the
            # append, and the event would outlive the tenant.
            await self.store.purge(tenant)
            raise ForbiddenTenant()
        if created:
            if self.observer is not None:
                self.observer.published(tenant, time.perf_counter() - started)
            await self.bus.dispatch(event)
        return Published(event, replayed=not created)

    def history_size_of(self, tenant: str) -> int:
        """How many events `tenant`'s ring keeps: its historySize, else FEED_HISTORY_SIZE."""
        return self._history_size(self._live.get(tenant))

    def retention_of(self, tenant: str) -> int | None:
        """`tenant`'s retention max-age in seconds: its retentionSeconds, else
        FEED_RETENTION_SECONDS; None when its events are kept by count only."""
        return self._retention(self._live.get(tenant))

    # The two defaults, each written once: `publish` has the record at hand, the reads an id.

    def _history_size(self, record: Tenant | None) -> int:
        own = None if record is None else record.settings.history_size
        return own or self.history_size

    def _retention(self, record: Tenant | None) -> int | None:
        own = None if record is None else record.settings.retention_seconds
        return own or self.retention_seconds

    def expire_before(self, tenant: str) -> str | None:
        """The timestamp before which `tenant`'s events have expired now (None: never)."""
        retention = self.retention_of(tenant)
        return None if retention is None else self.clock.timestamp_before(retention)

    async def expire(self, tenant: str) -> None:
        """Drop `tenant`'s expired events from the store now (reads never return them
        anyway): for a tenant nobody publishes to, see `RetentionSweep`."""
        expire_before = self.expire_before(tenant)
        if expire_before is not None:
            await self.store.expire(tenant, expire_before)

    async def history(
        self, tenant: str, *, limit: int, since: int | None = None, before: int | None = None
    ) -> History:
        """Within the tenant's newest history-size events: the store may hold more (it
        keeps at least FEED_HISTORY_SIZE, and a ring that shrank holds more until its next
        append)."""
        bind_tenant(tenant)
        counts = await self.store.counts(tenant)
        size = self.history_size_of(tenant)
        window = counts.latest_seq - size  # the newest seq the tenant no longer holds
        events = await self.store.query(
            tenant,
            limit=min(limit, size),
            # Newest-first windows (no `since`, no `before`) stay within `size` by `limit`.
            since=since
            if window <= 0 or (since, before) == (None, None)
            else max(since or 0, window),
            before=before,
            expire_before=self.expire_before(tenant),
        )
        return History(events, max(counts.latest_seq, events[-1].seq if events else 0))

    async def catch_up(self, tenant: str, since: int | None) -> CatchUp:
        """The last `initial_events`, or every event after `since` that is still held
        (`recovered` is False when some of them were dropped); at most the tenant's history
        size."""
        bind_tenant(tenant)
        self.tenants.active(tenant)  # a suspended tenant takes no new subscriber
        horizon = self.bus.delivered_up_to(tenant)  # first: every later event is still to come
        catch_up = await self._read_since(tenant, since)
        return _delivered_only(catch_up, horizon, since)

    async def recover(self, tenant: str, offset: int) -> CatchUp:
        """Native recovery from `offset`: the events after it when all of them are still
        held, else (`recovered` False) the last `initial_events`, as for a new client."""
        bind_tenant(tenant)
        self.tenants.active(tenant)
        horizon = self.bus.delivered_up_to(tenant)
        catch_up = await self._read_since(tenant, offset)
        if not catch_up.recovered:
            catch_up = await self._read_newest(tenant)
        return _delivered_only(catch_up, horizon, offset)

    async def _read_since(self, tenant: str, since: int | None) -> CatchUp:
        if since is None:
            return await self._read_newest(tenant)
        counts = await self.store.counts(tenant)
        if since > counts.latest_seq:
            # An unknown future offset (e.g. of a memory store that restarted): say so, and
            # start the client afresh.
            return await self._read_newest(tenant)
        # The newest `history_size` events at most: what the ring keeps, also while one that
        # was shrunk still holds more until its next append.
        history_size = self.history_size_of(tenant)
        start = max(since, counts.latest_seq - history_size)
        events = await self.store.query(
            tenant, limit=history_size, since=start, expire_before=self.expire_before(tenant)
        )
        latest = max(counts.latest_seq, events[-1].seq if events else 0)
        return CatchUp(events, latest, recovered=covers(since, counts.latest_seq, events))

    async def _read_newest(self, tenant: str) -> CatchUp:
        history = await self.history(tenant, limit=self.initial_events)
        return CatchUp(history.events, history.latest_seq, recovered=False)

    async def stats(self, tenants: Iterable[str]) -> dict[str, TenantStats]:
        out: dict[str, TenantStats] = {}
        for tenant in tenants:
            await self.expire(tenant)  # `held` counts what a read may still return
            counts: TenantCounts = await self.store.counts(tenant)
            out[tenant] = TenantStats(
                counts.latest_seq,
                min(counts.held, self.history_size_of(tenant)),  # what its reads can see
                await self.connections.count(tenant),
                counts.last_event_at,
            )
        return out

    async def _tenant_changed(self, tenant_id: str, tenant: Tenant | None) -> None:
        """A deleted tenant's events, seqs, keys and counters go, on every node (each
        purges what a publish of its own may have stored while the deletion was on its way).
        """
        if tenant is not None:
            return
        try:
            await self.store.purge(tenant_id)
            if self.limiter is not None:
                await self.limiter.forget(tenant_id)
        except StoreUnavailable:
            log.warning("the data of deleted tenant %s could not be purged", tenant_id)


class RetentionSweep:
    """Drops the expired events of tenants nobody publishes to.

    A publish drops its own tenant's expired events, and no read ever returns one; without
    a sweep, though, an idle tenant would keep them in the store. Every `interval`
    seconds the sweep expires up to `per_tick` tenants that have a retention, taking them
    in turn, so each tick's work is bounded however many tenants there are. With Redis
    every node sweeps: the work is repeated, not shared, and an expiry that finds nothing
    to drop is one short script.
    """

    def __init__(self, feed: Feed, *, interval: float = 5.0, per_tick: int = 200) -> None:
        self._feed = feed
        self._interval = interval
        self._per_tick = per_tick
        # The tenants with a retention, the next turn first. Kept up to date by the
        # directory's changes, so that a tick costs its own turn and not a pass over every
        # tenant (of 10,000, most may keep their events by count only).
        self._turns: OrderedDict[str, None] = OrderedDict()
        for tenant in feed.tenants.ids():
            self._follow(tenant)
        feed.tenants.on_change(self._tenant_changed)

    async def _tenant_changed(self, tenant_id: str, tenant: Tenant | None) -> None:
        self._follow(tenant_id)

    def _follow(self, tenant_id: str) -> None:
        if tenant_id in self._feed.tenants and self._feed.retention_of(tenant_id) is not None:
            self._turns.setdefault(tenant_id)
        else:
            self._turns.pop(tenant_id, None)

    async def tick(self) -> None:
        """Expire the next `per_tick` tenants with a retention."""
        for _ in range(min(self._per_tick, len(self._turns))):
            if not self._turns:  # all gone while this tick waited on the store
                return
            tenant, _ = self._turns.popitem(last=False)
            self._turns[tenant] = None  # its next turn: after every other tenant's
            await self._feed.expire(tenant)

    async def run(self) -> None:
        """Tick every `interval` seconds until cancelled; a failed tick is retried by the
        next one."""
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.tick()
            except StoreUnavailable:
                pass  # the store logged it
            except Exception:
                log.exception("the retention sweep failed")


def covers(since: int, latest_seq: int, events: list[Event]) -> bool:
    """Whether `events` (contiguous, oldest first) are every event after `since` up to
    `latest_seq`: none of them was dropped (ring overflow) or left out (the bound)."""
    if not events:
        return since >= latest_seq
    return events[0].seq == since + 1 and events[-1].seq >= latest_seq


def _one_key(header: str | None, payload: str | None) -> str | None:
    if header is not None and payload is not None and header != payload:
        raise ValidationFailed(
            "Two different idempotency keys",
            {IDEMPOTENCY_KEY_HEADER: "differs from idempotencyKey in the body"},
        )
    return header if header is not None else payload


def _delivered_only(catch_up: CatchUp, horizon: int | None, since: int | None) -> CatchUp:
    """Only up to what this node's listeners have been given (`EventBus.delivered_up_to`):
    a later event would reach a subscriber twice, in its catch-up and then live."""
    if horizon is None or catch_up.latest_seq <= horizon:
        return catch_up
    held_by_client = since if since is not None and catch_up.recovered else 0
    return CatchUp(
        [e for e in catch_up.events if e.seq <= horizon],
        max(horizon, held_by_client),
        catch_up.recovered,
    )
