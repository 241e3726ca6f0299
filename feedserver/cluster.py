"""Where a node keeps what it shares: alone in memory, or with other nodes through Redis.

`open_backend(settings, directory)` gives the store, the event bus, the connection counter
and the tenant registry's backend that belong together:

- `FEED_STORE=memory`: `SingleNode` — ring buffers in memory, the publishing call delivers;
  the tenant registry in `FEED_DATA_DIR/tenants.json` (or in memory without it).
- `FEED_STORE=redis://` or `redis-cluster://`: `RedisCluster` — events in Redis Streams
  (`store/redis.py`); each node follows the streams of the tenants it has sockets of and
  delivers what it reads (`StreamRelay`); system messages cross on a pub/sub channel
  (`NoticeChannel`; sharded on a cluster, as every channel here: `store/pubsub.py`);
  connection counts are shared (`RedisConnections`); the tenant registry is a Redis hash
  that every node follows (`store/redis_tenants.py`, `TenantChannel`). Socket.IO itself
  stays on each node: every emit is to this node's sockets.

Why events travel through the streams and not through a pub/sub channel: the channel
delivers in publish order, which is not seq order when two nodes (or two requests on one
node) publish at once, and pub/sub drops what was published while a subscriber was away.
Reading the stream gives every node that serves a tenant its events exactly once, in seq
order, through the gateway's one delivery call; after a Redis outage or a lost connection
the node continues from the last seq it delivered. Pub/sub only says when to read (each
append publishes a hint). A system message has no seq and no history: pub/sub fits.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import orjson

from .config import TENANT_RE, Settings
from .core import (
    ConnectionCounter,
    EventBus,
    Listener,
    LocalBus,
    LocalConnections,
    NoticeListener,
    SystemNotice,
)
from .errors import StoreUnavailable
from .events import Event
from .logs import ThrottledWarning
from .store import EventStore, MemoryStore
from .store.pubsub import Subscriber, publish
from .store.redis import REDIS_ERRORS, RedisStore, learn_slots, store_client, store_errors
from .store.redis_tenants import RedisTenants
from .store.tenant_file import HeldTenants, TenantFile
from .tasks import Backoff, stop
from .tenants import Reload, ReloadAll, Tenant, TenantBackend, TenantDirectory, TenantWatcher

log = logging.getLogger(__name__)

NOTICES_CHANNEL = "feed:notices"
NOTICE_FIELDS = frozenset({"message", "level", "timestamp"})
# How often a node compares the registry's version counter with the one it loaded.
TENANT_RESYNC_S = 5.0


def connections_key(tenant: str) -> str:
    """A tenant's connection counts: node id -> "<count> <unix time it expires>". In the
    tenant's slot (`{tenant}`), so that no script touches keys of two slots."""
    return f"feed:{{{tenant}}}:connections"


class Backend(Protocol):
    # Whether no call of it waits for another process: the socket handlers that use it
    # then need no task of their own (`EngineServer(eager_packets=)`).
    in_process: bool

    @property
    def store(self) -> EventStore: ...

    @property
    def bus(self) -> EventBus: ...

    @property
    def connections(self) -> ConnectionCounter: ...

    @property
    def tenants(self) -> TenantBackend: ...

    @property
    def tenant_changes(self) -> TenantWatcher | None:
        """How this node hears of other processes' changes to `tenants` (None: none can)."""
        ...

    async def start(self) -> None:
        """After the tenant registry: the directory holds the tenants to follow."""
        ...

    async def close(self) -> None:
        """All but `tenants` and `tenant_changes`, which their `TenantRegistry` closes."""
        ...


def open_backend(settings: Settings, directory: TenantDirectory) -> Backend:
    if settings.redis_url is None:
        return SingleNode(settings)
    return RedisCluster(settings, settings.redis_url, directory)


def open_tenants(settings: Settings) -> TenantBackend:
    """Where the tenant registry of `settings` is kept (also for the CLI)."""
    if settings.redis_url is not None:
        return RedisTenants(settings.redis_url)
    if settings.data_dir is not None:
        return TenantFile(settings.data_dir)
    return HeldTenants()


class SingleNode:
    in_process = True

    def __init__(self, settings: Settings) -> None:
        self.store = MemoryStore(settings.history_size)
        self.bus = LocalBus()
        self.connections = LocalConnections()
        self.tenants = open_tenants(settings)
        self.tenant_changes = None

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        await self.store.close()


class RedisCluster:
    in_process = False  # redis-py's calls wait for Redis, under timeouts that need a task

    def __init__(self, settings: Settings, url: str, directory: TenantDirectory) -> None:
        self.node_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.store = RedisStore(url, settings.history_size)
        relay = StreamRelay(self.store, directory, grace_s=settings.follow_grace_s)
        self.bus = RedisBus(relay, NoticeChannel(url, self.node_id))
        self.connections = RedisConnections(url, self.node_id)
        self.tenants = RedisTenants(url)
        self.tenant_changes = TenantChannel(url, self.tenants)

    async def start(self) -> None:
        await self.store.start()
        await self.bus.start()
        await self.connections.start()

    async def close(self) -> None:
        await self.connections.close()
        await self.bus.close()
        await self.store.close()


class Timer(Protocol):
    def cancel(self) -> None: ...


# `loop.call_later`'s shape: call `callback()` after `delay` seconds, unless cancelled.
Schedule = Callable[[float, Callable[[], None]], Timer]


class Interest:
    """Which tenants this node follows: those with a local subscriber, and each for
    `grace_s` seconds after its last one left. The one owner of the per-tenant counts.

    `join` counts a subscriber in before its first await (so the caller's `leave` pairs
    with it even if the caller is cancelled while it waits) and returns once the tenant is
    followed: the first join runs `start(tenant)`, the joins that come meanwhile wait for
    that same start, and one that failed is run again by the next join. The last `leave`
    arms a timer; when it fires with nobody back, `stop(tenant)` runs. A join within the
    grace cancels it: the tenant stays followed, with its cursor.
    """

    def __init__(
        self,
        start: Callable[[str], Coroutine[Any, Any, None]],
        stop: Callable[[str], None],
        grace_s: float,
        *,
        schedule: Schedule | None = None,
    ) -> None:
        self._start = start
        self._stop = stop
        self._grace_s = grace_s
        self._schedule = schedule
        self._counts: dict[str, int] = {}  # tenant -> local subscribers
        self._started: dict[str, asyncio.Task[None]] = {}  # tenant -> its start
        self._timers: dict[str, Timer] = {}  # tenant -> its stop, after the grace

    def wants(self, tenant: str) -> bool:
        """Whether `tenant` is (being) followed: a subscriber, or in its grace."""
        return tenant in self._started

    def subscribers(self, tenant: str) -> int:
        return self._counts.get(tenant, 0)

    async def join(self, tenant: str) -> None:
        self._counts[tenant] = self._counts.get(tenant, 0) + 1
        timer = self._timers.pop(tenant, None)
        if timer is not None:
            timer.cancel()
        started = self._started.get(tenant)
        if started is None or (started.done() and not _succeeded(started)):
            started = asyncio.create_task(self._start(tenant), name=f"feed-follow-{tenant}")
            started.add_done_callback(_succeeded)  # its failure is the joiners' to raise
            self._started[tenant] = started
        # Shielded: a joiner that goes away does not cancel the others' start.
        await asyncio.shield(started)

    def leave(self, tenant: str) -> None:
        left = self._counts.get(tenant, 0) - 1
        if left > 0:
            self._counts[tenant] = left
            return
        self._counts.pop(tenant, None)
        if self._grace_s <= 0:
            self._expire(tenant)
            return
        schedule = self._schedule or asyncio.get_running_loop().call_later
        self._timers[tenant] = schedule(self._grace_s, lambda: self._expire(tenant))

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        for started in self._started.values():
            started.cancel()

    def _expire(self, tenant: str) -> None:
        self._timers.pop(tenant, None)
        if self._counts.get(tenant):  # a join came back first
            return
        started = self._started.pop(tenant, None)
        if started is not None and not started.done():
            started.cancel()
        self._stop(tenant)


def _succeeded(task: asyncio.Task[None]) -> bool:
    """Whether `task` ended without an error (reading the error marks it retrieved)."""
    return not task.cancelled() and task.exception() is None


class StreamRelay:
    """The event bus of several nodes: each node reads the streams of the tenants it serves.

    The entry the store wrote is what travels: every node that follows the tenant, the
    publishing one too if it does, reads it back (`RedisStore.follow`: the streams that a
    hint says have something new), in stream (= seq) order, by one task. A node follows a
    tenant while it has at least one local subscriber of it, and `grace_s` seconds more
    (`Interest`); it subscribes to the hints of those tenants only, so it reads and
    decodes nothing of the others.

    Exactly once, in order, for a joining socket (`join`, then `Feed.catch_up`): the
    gateway parks the socket first (every event the relay delivers from then on is parked
    for it), then awaits `join`. For a tenant not yet followed, `join` reads the tenant's
    seq counter L (the append script writes the entry and the counter together, so every
    event with seq <= L is in the stream, or trimmed, and every later one is appended after
    this read) and sets the cursor to L before it returns; the relay delivers every event
    after the cursor, in order, once the store watches the tenant (`RedisStore.watch`: its
    stream is read from the cursor as soon as that holds, and at each append after). For
    a followed tenant, the cursor is already there. Either way, when `join` returns,
    `delivered_up_to` is the cursor C, the catch-up reads the store up to C, and the events
    after C reach the socket live (parked, then in its room): each event once, none missed.
    The cursor only moves forward, by delivery; an event at or below it (a read that was
    under way when the tenant was followed again from a later seq) is skipped.

    After the grace the cursor goes; a later join starts afresh from the counter. After a
    Redis outage the followed tenants are checked (`_resync`): a stream whose seq went
    back was recreated and is delivered from its start.
    """

    def __init__(
        self,
        store: RedisStore,
        directory: TenantDirectory,
        *,
        grace_s: float = 30.0,
        batch: int = 500,
        publish_wait_s: float = 5.0,
    ) -> None:
        self._store = store
        self._directory = directory
        self._batch = batch
        self._publish_wait_s = publish_wait_s
        self._listeners: list[Listener] = []
        self._cursors: dict[str, int] = {}  # followed tenant -> last seq delivered here
        self._epoch: str | None = None  # the store's, when last read (`_resync`)
        self.interest = Interest(self._follow, self._unfollow, grace_s)
        self._joining: list[str] = []  # follows waiting for the next `_start_following`
        self._starting: asyncio.Task[None] | None = None  # the one that will read them
        # Events read per followed tenant (a tenant's count goes with its cursor): what a
        # test or a benchmark checks to see which streams this node reads.
        self.events_read: collections.Counter[str] = collections.Counter()
        self._progress = asyncio.Event()  # set, and replaced, after each delivered batch
        self._task: asyncio.Task[None] | None = None

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def dispatch(self, event: Event) -> None:
        """Return once this node has delivered `event` (at most `publish_wait_s` later), or
        at once when it does not follow the tenant (no socket here to deliver it to).

        Publishers thus wait for delivery as with one node: a node's own publishers cannot
        outrun its delivery and push events out of the stream before it has read them.
        Publishers on nodes that do not follow the tenant do not wait for anyone, as
        publishers on other nodes never did: see docs/scaling.md.
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._publish_wait_s):
                while (cursor := self._cursors.get(event.tenant_id)) is not None:
                    if cursor >= event.seq:
                        return
                    await self._progress.wait()

    def delivered_up_to(self, tenant: str) -> int | None:
        return self._cursors.get(tenant)

    async def join(self, tenant: str) -> None:
        await self.interest.join(tenant)

    def leave(self, tenant: str) -> None:
        self.interest.leave(tenant)

    async def start(self) -> None:
        """Deliver the events of the tenants followed from now on; hear of deletions."""
        # Registered last, told of a deletion first: no event of it is delivered after.
        self._directory.on_change(self._tenant_changed)
        self._task = asyncio.create_task(self._run(), name="feed-stream-relay")

    async def close(self) -> None:
        self.interest.close()
        await stop(self._task)

    async def _follow(self, tenant: str) -> None:
        """`Interest`'s start: the cursor at the tenant's latest seq (see the class).

        The follows started in one turn of the event loop share one read of the counters
        (`_start_following`): a reconnect storm after a node restart is a few round
        trips, not one per tenant, and does not exhaust the connection pool."""
        self._joining.append(tenant)
        if self._starting is None:
            self._starting = asyncio.create_task(self._start_following())
            self._starting.add_done_callback(_succeeded)  # its failure is the joiners'
        # Shielded: a follow cancelled (its grace ended) leaves the others' read alone.
        await asyncio.shield(self._starting)

    async def _start_following(self) -> None:
        tenants, self._joining, self._starting = self._joining, [], None
        latest = await self._store.latest_seqs(tenants)
        for tenant in tenants:
            # Stopped meanwhile (the grace ran out), or not a tenant: no cursor. A tenant
            # created later while wanted gets one (`_tenant_changed`).
            if self.interest.wants(tenant) and tenant in self._directory:
                self._set_cursor(tenant, latest[tenant])

    def _set_cursor(self, tenant: str, seq: int) -> None:
        """Follow `tenant` from `seq` on: its stream is read once the store says it
        watches it (the cursor first, so that nothing it hears of is skipped)."""
        if tenant not in self._cursors:
            self._cursors[tenant] = seq
            self._store.watch(tenant)

    def _drop_cursor(self, tenant: str) -> None:
        if self._cursors.pop(tenant, None) is not None:
            self._store.unwatch(tenant)

    def _unfollow(self, tenant: str) -> None:
        self._drop_cursor(tenant)
        self.events_read.pop(tenant, None)

    async def _tenant_changed(self, tenant_id: str, tenant: Tenant | None) -> None:
        if tenant is None:
            self._drop_cursor(tenant_id)
            return
        if tenant_id in self._cursors or not self.interest.wants(tenant_id):
            return
        # A tenant new to this node has a new stream (a deleted tenant's was purged), so
        # all of it is delivered: also what another node published before this one heard of
        # the tenant, which no socket here can have missed (none could subscribe yet).
        self._set_cursor(tenant_id, 0)

    async def _run(self) -> None:
        backoff = Backoff()
        resync = False
        with contextlib.suppress(StoreUnavailable):  # else the first resync takes it
            self._epoch = await self._store.epoch()
        while True:
            try:
                if resync:
                    await self._resync()
                    resync = False
                events = await self._store.follow(self._cursors, count=self._batch)
            except StoreUnavailable:
                resync = True
                await backoff.sleep()
                continue
            except Exception:  # a client's own failure: the relay must outlive it
                log.exception("following the streams failed; trying again")
                resync = True
                await backoff.sleep()
                continue
            backoff.reset()
            self.events_read.update(event.tenant_id for event in events)
            for event in events:
                await self._deliver(event)
            self._progress.set()
            self._progress = asyncio.Event()

    async def _resync(self) -> None:
        """After an outage, the followed streams whose seq went back. In a Redis that lost
        its data (restarted without persistence: a new epoch) the stream was recreated,
        so it is delivered from its start. In the same epoch the stream lost its newest
        events (a Redis Cluster failover: what the replica had not received), which this
        node delivered already: it goes on from the seq it has, and the seqs lost are
        given again to new events (docs/scaling.md).

        One dead master of a cluster does not hold up the others' tenants: the epoch and
        the latest seqs of each master's tenants are read concurrently (a hung master
        costs one wait for its timeout), and the tenants of a master that did not answer
        are left to the store, which compares their seqs with their cursors before it
        reads their streams again (`RedisStore.recheck`): one behind raises there, and
        the resync that follows finds their master answering. Only a tenant found behind
        needs the epoch: when that read failed, the resync fails and is tried again."""
        epoch, answered = await asyncio.gather(
            self._store.epoch(),
            self._store.answered_latest_seqs(list(self._cursors)),
            return_exceptions=True,
        )
        if isinstance(answered, BaseException):
            raise answered
        latest, unanswered = answered
        self._store.recheck(unanswered)
        behind = {
            tenant: seq
            for tenant, seq in latest.items()
            if (cursor := self._cursors.get(tenant)) is not None and seq < cursor
        }  # a tenant no longer followed has no cursor
        if isinstance(epoch, BaseException):
            if behind:
                raise epoch
            return
        emptied, self._epoch = epoch != self._epoch, epoch
        for tenant, seq in behind.items():
            cursor = self._cursors[tenant]
            if emptied:
                log.warning("the %s stream restarted at seq %d (was %d)", tenant, seq, cursor)
                self._cursors[tenant] = 0
            else:
                log.warning("the %s stream lost its events %d..%d", tenant, seq + 1, cursor)
                self._cursors[tenant] = seq

    async def _deliver(self, event: Event) -> None:
        cursor = self._cursors.get(event.tenant_id)
        # None: not followed (any more), or deleted while its events were read. At or
        # below the cursor: read from an older cursor before the tenant was followed again.
        if cursor is None or event.seq <= cursor:
            return
        if event.seq != cursor + 1:
            log.warning(
                "%s events %d..%d were trimmed before this node read them",
                event.tenant_id,
                cursor + 1,
                event.seq - 1,
            )
        self._cursors[event.tenant_id] = event.seq
        for listener in self._listeners:
            try:
                await listener(event)
            except Exception:
                log.exception("delivering %s failed", event.id)


class RedisBus:
    """The event bus of several nodes: events through the streams (`StreamRelay`), system
    messages through a pub/sub channel (`NoticeChannel`)."""

    def __init__(self, relay: StreamRelay, notices: NoticeChannel) -> None:
        self.relay = relay
        self.notices = notices

    def add_listener(self, listener: Listener) -> None:
        self.relay.add_listener(listener)

    async def dispatch(self, event: Event) -> None:
        await self.relay.dispatch(event)

    def delivered_up_to(self, tenant: str) -> int | None:
        return self.relay.delivered_up_to(tenant)

    async def join(self, tenant: str) -> None:
        await self.relay.join(tenant)

    def leave(self, tenant: str) -> None:
        self.relay.leave(tenant)

    def add_notice_listener(self, listener: NoticeListener) -> None:
        self.notices.add_listener(listener)

    async def send_notice(self, notice: SystemNotice) -> None:
        await self.notices.send(notice)

    async def start(self) -> None:
        await self.relay.start()
        await self.notices.start()

    async def close(self) -> None:
        await self.notices.close()
        await self.relay.close()


class NoticeChannel:
    """System messages between nodes: published on `feed:notices`, one subscriber per node
    (`Subscriber`: PUBLISH/SUBSCRIBE on one Redis, sharded on a cluster).

    The sending node calls its own listeners at once and then publishes the notice with its
    node id; every node's subscriber calls its listeners for what other nodes published and
    skips its own echo. So a notice reaches this node's clients also while Redis is down. A
    failed publish is logged, not raised: the other nodes miss that notice (pub/sub keeps
    nothing for a subscriber that is away, and a system message is a broadcast of the
    moment, not history), and the admin call that posted it still answers `202`.
    """

    def __init__(self, url: str, node_id: str) -> None:
        self.node_id = node_id
        self._redis = store_client(url)
        # Messages arrive as bytes: one that is not UTF-8 is refused by the JSON parser,
        # as malformed, not a failure of the subscription.
        self._subscriber = Subscriber(
            self._redis,
            self._received,
            lambda _: self.listening.set(),
            lambda _: self.listening.clear(),
            what="system message",
        )
        self._listeners: list[NoticeListener] = []
        self._warn_malformed = ThrottledWarning(log)
        self.listening = asyncio.Event()  # subscribed to the channel right now

    def add_listener(self, listener: NoticeListener) -> None:
        self._listeners.append(listener)

    async def send(self, notice: SystemNotice) -> None:
        for listener in self._listeners:
            await listener(notice)
        try:
            await publish(
                self._redis,
                NOTICES_CHANNEL,
                orjson.dumps({"node": self.node_id, "notice": notice}),
            )
        except REDIS_ERRORS as exc:
            log.warning("a system message reached this node's clients only: %s", exc)

    async def start(self) -> None:
        await learn_slots(self._redis)
        self._subscriber.subscribe(NOTICES_CHANNEL)
        self._subscriber.start()

    async def close(self) -> None:
        await self._subscriber.close()
        await self._redis.aclose()

    async def _received(self, channel: str, data: bytes) -> None:
        try:
            sender, notice = parse_notice(data)
        except ValueError as exc:
            self._warn_malformed("ignored a malformed message on %s: %s", NOTICES_CHANNEL, exc)
            return
        if sender == self.node_id:  # its listeners were called when it was sent
            return
        for listener in self._listeners:
            try:
                await listener(notice)
            except Exception:
                log.exception("delivering a system message failed")


def parse_notice(data: bytes) -> tuple[str, SystemNotice]:
    """The sending node's id and the notice of one `feed:notices` message; ValueError when
    it is not what `NoticeChannel.send` publishes."""
    body = orjson.loads(data)  # orjson.JSONDecodeError is a ValueError
    if not isinstance(body, dict) or not isinstance(body.get("node"), str):
        raise ValueError("no sending node")
    notice = body.get("notice")
    if (
        not isinstance(notice, dict)
        or notice.keys() != NOTICE_FIELDS
        or not all(isinstance(value, str) for value in notice.values())
    ):
        raise ValueError("not a notice")
    return body["node"], notice


class TenantChannel:
    """How a node follows the tenant registry in Redis (`store/redis_tenants.py`).

    Each change's id arrives on the registry's change channel (`Subscriber`) and that
    tenant is reloaded at once. Pub/sub keeps nothing for a subscriber that was away, so at
    each (re)subscription the whole registry is reloaded, and every `resync_s` the version
    counter is compared with the one loaded: when it moved (a notification this node
    missed) the whole registry is reloaded too. The registry's own lock orders the
    reloads: a full reload read before a change never lands after that change's reload.
    """

    def __init__(
        self, url: str, registry: RedisTenants, *, resync_s: float = TENANT_RESYNC_S
    ) -> None:
        self._redis = store_client(url)
        self._registry = registry
        self._resync_s = resync_s
        self._subscriber = Subscriber(
            self._redis,
            self._received,
            lambda _: self._subscribed.set(),
            lambda _: self.listening.clear(),
            what="tenant registry",
        )
        self._subscribed = asyncio.Event()  # confirmed, not yet reloaded in full
        self._reload: Reload | None = None
        self._warn_malformed = ThrottledWarning(log)
        self.listening = asyncio.Event()  # subscribed, and the registry reloaded since
        self._task: asyncio.Task[None] | None = None

    async def start(self, reload: Reload, reload_all: ReloadAll) -> None:
        self._reload = reload
        await learn_slots(self._redis)
        self._subscriber.subscribe(self._registry.changed_channel)
        self._subscriber.start()
        self._task = asyncio.create_task(self._run(reload_all), name="feed-tenants")

    async def close(self) -> None:
        await stop(self._task)
        await self._subscriber.close()
        await self._redis.aclose()

    async def _received(self, channel: str, data: bytes) -> None:
        tenant_id = data.decode("utf-8", "replace")
        if not TENANT_RE.match(tenant_id):
            self._warn_malformed("ignored %r on %s", tenant_id, channel)
            return
        assert self._reload is not None
        try:
            await self._reload(tenant_id)
        except StoreUnavailable as exc:
            log.warning("could not reload tenant %s: %s", tenant_id, exc)
            self._subscribed.set()  # a full reload makes up for it

    async def _run(self, reload_all: ReloadAll) -> None:
        backoff = Backoff(first=0.2)
        loaded: int | None = None  # the registry version last reloaded in full
        owed = False  # a full reload: subscribed (again) since the last one
        while True:
            if not owed:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._resync_s):
                        await self._subscribed.wait()
            if self._subscribed.is_set():
                self._subscribed.clear()
                owed = True
            try:
                if owed:  # nothing is missed from here on
                    loaded = await reload_all()
                    owed = False
                    if not self._subscribed.is_set():  # else another reload is owed
                        self.listening.set()
                elif loaded is not None and await self._registry.version() != loaded:
                    loaded = await reload_all()
            except StoreUnavailable as exc:
                log.warning("could not reload the tenant registry: %s", exc)
                await backoff.sleep()
            else:
                backoff.reset()


# The sum of one tenant's counts over the live nodes other than the caller; the entries of
# nodes that stopped refreshing are dropped on the way. KEYS: the tenant's connections hash.
# ARGV: own node id.
_COUNT_SCRIPT = """
local now = tonumber(redis.call('TIME')[1])
local total = 0
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  local count, expires = string.match(entries[i + 1], '^(%d+) (%d+)$')
  if not count or tonumber(expires) < now then
    redis.call('HDEL', KEYS[1], entries[i])
  elseif entries[i] ~= ARGV[1] then
    total = total + tonumber(count)
  end
end
return total
"""


class RedisConnections:
    """Connection counts of every live node: this node's own, plus what the others published.

    Each node writes its count of each tenant into that tenant's hash (`connections_key`),
    with an expiry. Within `debounce_s` of a change it writes the counts of the tenants
    that changed, and every `refresh_s` all of them (their expiries), so a node that dies
    stops counting after `3 * refresh_s`: connects and disconnects cost writes of the
    tenants they change, not a pass over every tenant the node has sockets of (which ran
    back to back while connections came and went: docs/scaling.md, the sizing). One hash
    per tenant, not one per node: every script touches one slot (Redis Cluster).
    """

    def __init__(
        self, url: str, node_id: str, *, refresh_s: float = 2.0, debounce_s: float = 0.05
    ) -> None:
        self.node_id = node_id
        self._redis = store_client(url)
        self._local = LocalConnections()
        self._refresh_s = refresh_s
        self._debounce_s = debounce_s
        self._ttl = max(1, round(3 * refresh_s))
        self._changed = asyncio.Event()
        self._dirty: set[str] = set()  # tenants whose count changed since it was written
        self._published: set[str] = set()  # tenants whose hash holds this node's count
        self._count = self._redis.register_script(_COUNT_SCRIPT)
        self._task: asyncio.Task[None] | None = None

    def opened(self, tenant: str) -> None:
        self._local.opened(tenant)
        self._dirty.add(tenant)
        self._changed.set()

    def closed(self, tenant: str) -> None:
        self._local.closed(tenant)
        self._dirty.add(tenant)
        self._changed.set()

    async def count(self, tenant: str) -> int:
        with store_errors():
            others = await self._count(keys=[connections_key(tenant)], args=[self.node_id])
        return await self._local.count(tenant) + int(others)

    async def start(self) -> None:
        await learn_slots(self._redis)
        self._task = asyncio.create_task(self._run(), name="feed-connection-counts")

    async def close(self) -> None:
        await stop(self._task)
        try:  # leave the totals at once rather than after the TTL
            async with self._redis.pipeline(transaction=False) as pipe:
                for tenant in self._published:
                    pipe.hdel(connections_key(tenant), self.node_id)
                await pipe.execute()
        except Exception as exc:
            log.warning("could not remove this node's connection counts: %s", exc)
        await self._redis.aclose()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_refresh = loop.time()
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that arrives as the event is set, and `close` would then wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_refresh - loop.time())):
                    await self._changed.wait()
                    await asyncio.sleep(self._debounce_s)  # one write for a burst of connects
            self._changed.clear()
            everything = loop.time() >= next_refresh
            if everything:
                next_refresh = loop.time() + self._refresh_s
            try:
                await self._publish_counts(everything)
            except Exception as exc:
                log.warning("could not publish connection counts: %s", exc)

    async def _publish_counts(self, everything: bool) -> None:
        """This node's count of every tenant it has sockets of (`everything`), or of those
        whose count changed, with when it expires, and its entry removed where it has none
        left: one pipelined round trip of plain commands (a cluster pipeline takes no
        scripts). What fails is written again at the next refresh of everything.

        The expiry is this node's clock, compared with Redis's by the readers: clocks kept
        by NTP agree to well within the TTL's whole seconds."""
        counts = self._local.snapshot()
        expires = int(time.time()) + self._ttl
        if everything:
            self._dirty.clear()
            written, gone = counts, self._published - counts.keys()
        else:
            dirty, self._dirty = self._dirty, set()
            written = {tenant: counts[tenant] for tenant in dirty if tenant in counts}
            gone = {tenant for tenant in dirty if tenant not in counts} & self._published
        # Before the round trip: a close that cancels it may leave the entries written,
        # and must remove them.
        self._published |= written.keys()
        async with self._redis.pipeline(transaction=False) as pipe:
            for tenant, count in written.items():
                pipe.hset(connections_key(tenant), self.node_id, f"{count} {expires}")
                pipe.expire(connections_key(tenant), self._ttl)
            for tenant in gone:
                pipe.hdel(connections_key(tenant), self.node_id)
            await pipe.execute()
        self._published -= gone
