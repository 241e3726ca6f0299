"""Where a node keeps what it shares: alone in memory, or with other nodes through Redis.

`open_backend(settings)` gives the store, the event bus and the connection counter that
belong together:

- `FEED_STORE=memory`: `SingleNode` — ring buffers in memory, the publishing call delivers.
- `FEED_STORE=redis://`: `RedisCluster` — events in Redis Streams (`store/redis.py`);
  every node follows the streams and delivers what it reads (`StreamRelay`); system
  messages cross on a pub/sub channel (`NoticeChannel`); connection counts are shared
  (`RedisConnections`). Socket.IO itself stays on each node: every emit is to this node's
  sockets.

Why events travel through the streams and not through a pub/sub channel: the channel
delivers in publish order, which is not seq order when two nodes (or two requests on one
node) publish at once, and pub/sub drops what was published while a subscriber was away.
Reading the stream gives every node every event exactly once, in seq order, through the
gateway's one delivery call; after a Redis outage or a lost connection the node continues
from the last seq it delivered. A system message has no seq and no history: pub/sub fits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Sequence
from typing import Any, Protocol

import orjson
from redis.exceptions import RedisError

from .config import Settings
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
from .store.redis import RedisStore, redis_client, store_errors

log = logging.getLogger(__name__)

NOTICES_CHANNEL = "feed:notices"
NOTICE_FIELDS = frozenset({"message", "level", "timestamp"})
NODES_KEY = "feed:nodes"  # sorted set: node id -> unix time its counts expire


def node_connections_key(node_id: str) -> str:
    return f"feed:node:{node_id}:connections"


class Backend(Protocol):
    @property
    def store(self) -> EventStore: ...

    @property
    def bus(self) -> EventBus: ...

    @property
    def connections(self) -> ConnectionCounter: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def open_backend(settings: Settings) -> Backend:
    if settings.redis_url is None:
        return SingleNode(settings)
    return RedisCluster(settings, settings.redis_url)


class SingleNode:
    def __init__(self, settings: Settings) -> None:
        self.store = MemoryStore(settings.history_size)
        self.bus = LocalBus()
        self.connections = LocalConnections()

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        await self.store.close()


class RedisCluster:
    def __init__(self, settings: Settings, url: str) -> None:
        self.node_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.store = RedisStore(url, settings.history_size)
        self.bus = RedisBus(
            StreamRelay(self.store, settings.tenants), NoticeChannel(url, self.node_id)
        )
        self.connections = RedisConnections(url, self.node_id)

    async def start(self) -> None:
        await self.bus.start()
        await self.connections.start()

    async def close(self) -> None:
        await self.connections.close()
        await self.bus.close()
        await self.store.close()


class Backoff:
    """Delays between reconnection attempts: doubling from `first` up to `cap` seconds."""

    def __init__(self, first: float = 0.1, cap: float = 2.0) -> None:
        self.first, self.cap = first, cap
        self.delay = first

    def reset(self) -> None:
        self.delay = self.first

    async def sleep(self) -> None:
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, self.cap)


async def stop(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` and wait until it has ended.

    Cancelled again while it runs on: redis-py can swallow a cancellation that lands inside
    a command (redis/redis-py#2028; seen with 8.1), and the loops here carry on after a
    failed Redis call by design.
    """
    while task is not None and not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1)


class StreamRelay:
    """The event bus of several nodes: each node reads every tenant's stream and delivers.

    The entry the store wrote is what travels: every node, the publishing one too, reads
    it back with XREAD, in stream (= seq) order, by one task.
    """

    def __init__(
        self,
        store: RedisStore,
        tenants: Sequence[str],
        *,
        batch: int = 500,
        publish_wait_s: float = 5.0,
    ) -> None:
        self._store = store
        self._tenants = tuple(tenants)
        self._batch = batch
        self._publish_wait_s = publish_wait_s
        self._listeners: list[Listener] = []
        self._cursors: dict[str, int] = {}  # tenant -> last seq delivered on this node
        self._progress = asyncio.Event()  # set, and replaced, after each delivered batch
        self._task: asyncio.Task[None] | None = None

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def dispatch(self, event: Event) -> None:
        """Return once this node has delivered `event` (at most `publish_wait_s` later).

        Publishers thus wait for delivery as with one node: a node's own publishers cannot
        outrun its delivery and push events out of the stream before it has read them.
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._publish_wait_s):
                while self._cursors.get(event.tenant_id, 0) < event.seq:
                    await self._progress.wait()

    def delivered_up_to(self, tenant: str) -> int | None:
        return self._cursors.get(tenant)

    async def start(self) -> None:
        """Deliver from the events stored after this call (or after Redis first answers)."""
        with contextlib.suppress(StoreUnavailable):  # if Redis is down, `_run` keeps trying
            self._cursors = await self._store.latest_seqs(self._tenants)
        self._task = asyncio.create_task(self._run(), name="feed-stream-relay")

    async def close(self) -> None:
        await stop(self._task)

    async def _run(self) -> None:
        backoff = Backoff()
        resync = len(self._cursors) < len(self._tenants)
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
            backoff.reset()
            for event in events:
                await self._deliver(event)
            self._progress.set()
            self._progress = asyncio.Event()

    async def _resync(self) -> None:
        """After an outage: a stream whose seq went back was recreated (a Redis without
        persistence restarted), so deliver it from the start."""
        latest = await self._store.latest_seqs(self._tenants)
        for tenant, seq in latest.items():
            cursor = self._cursors.get(tenant)
            if cursor is None:
                self._cursors[tenant] = seq
            elif seq < cursor:
                log.warning("the %s stream restarted at seq %d (was %d)", tenant, seq, cursor)
                self._cursors[tenant] = 0

    async def _deliver(self, event: Event) -> None:
        expected = self._cursors[event.tenant_id] + 1
        if event.seq != expected:
            log.warning(
                "%s events %d..%d were trimmed before this node read them",
                event.tenant_id,
                expected,
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
    """System messages between nodes: PUBLISH on `feed:notices`, one subscriber per node.

    The sending node calls its own listeners at once and then publishes the notice with its
    node id; every node's subscriber calls its listeners for what other nodes published and
    skips its own echo. So a notice reaches this node's clients also while Redis is down. A
    failed publish is logged, not raised: the other nodes miss that notice (pub/sub keeps
    nothing for a subscriber that is away, and a system message is a broadcast of the
    moment, not history), and the admin call that posted it still answers `202`.
    """

    def __init__(self, url: str, node_id: str) -> None:
        self.node_id = node_id
        # Bytes, not str: a message that is not UTF-8 is refused by the JSON parser, as
        # malformed, instead of failing inside redis-py and dropping the subscription.
        self._redis = redis_client(url, decode_responses=False)
        self._listeners: list[NoticeListener] = []
        self._warn_malformed = ThrottledWarning(log)
        self.listening = asyncio.Event()  # subscribed to the channel right now
        self._task: asyncio.Task[None] | None = None

    def add_listener(self, listener: NoticeListener) -> None:
        self._listeners.append(listener)

    async def send(self, notice: SystemNotice) -> None:
        for listener in self._listeners:
            await listener(notice)
        try:
            await self._redis.publish(
                NOTICES_CHANNEL, orjson.dumps({"node": self.node_id, "notice": notice})
            )
        except RedisError as exc:
            log.warning("a system message reached this node's clients only: %s", exc)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="feed-notice-channel")

    async def close(self) -> None:
        await stop(self._task)
        await self._redis.aclose()

    async def _run(self) -> None:
        backoff = Backoff(first=0.2)
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(NOTICES_CHANNEL)
                async for message in pubsub.listen():
                    if message["type"] == "subscribe":  # confirmed: nothing is missed now
                        self.listening.set()
                        backoff.reset()
                    elif message["type"] == "message":
                        await self._receive(message["data"])
            except Exception as exc:  # whatever the client raises, subscribe again
                log.warning("system message channel lost (%s); reconnecting", exc)
            finally:
                self.listening.clear()
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            await backoff.sleep()

    async def _receive(self, data: bytes) -> None:
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


# Atomic refresh of one node's counts; the sorted set lets readers skip dead nodes without
# scanning the keyspace. KEYS: node hash, nodes zset. ARGV: ttl, node id, tenant/count pairs.
_PUBLISH_COUNTS_SCRIPT = """
local now = tonumber(redis.call('TIME')[1])
redis.call('DEL', KEYS[1])
if #ARGV > 2 then redis.call('HSET', KEYS[1], unpack(ARGV, 3)) end
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[1]), ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 1)
return 1
"""

# The sum of one tenant's counts over the live nodes other than the caller.
# KEYS: nodes zset. ARGV: tenant, own node id.
_COUNT_SCRIPT = """
local now = tonumber(redis.call('TIME')[1])
local total = 0
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')) do
  if node ~= ARGV[2] then
    local key = 'feed:node:' .. node .. ':connections'
    total = total + tonumber(redis.call('HGET', key, ARGV[1]) or '0')
  end
end
return total
"""


class RedisConnections:
    """Connection counts of every live node: this node's own, plus what the others published.

    Each node writes its counts to a hash that expires unless refreshed; a refresh follows
    each change within `debounce_s` and happens at least every `refresh_s`, so a node that
    dies stops counting after `3 * refresh_s`.
    """

    def __init__(
        self, url: str, node_id: str, *, refresh_s: float = 2.0, debounce_s: float = 0.05
    ) -> None:
        self.node_id = node_id
        self._redis = redis_client(url)
        self._local = LocalConnections()
        self._refresh_s = refresh_s
        self._debounce_s = debounce_s
        self._ttl = max(1, round(3 * refresh_s))
        self._changed = asyncio.Event()
        self._publish = self._redis.register_script(_PUBLISH_COUNTS_SCRIPT)
        self._count = self._redis.register_script(_COUNT_SCRIPT)
        self._task: asyncio.Task[None] | None = None

    def opened(self, tenant: str) -> None:
        self._local.opened(tenant)
        self._changed.set()

    def closed(self, tenant: str) -> None:
        self._local.closed(tenant)
        self._changed.set()

    async def count(self, tenant: str) -> int:
        with store_errors():
            others = await self._count(keys=[NODES_KEY], args=[tenant, self.node_id])
        return await self._local.count(tenant) + int(others)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="feed-connection-counts")

    async def close(self) -> None:
        await stop(self._task)
        try:  # leave the totals at once rather than after the TTL
            await self._redis.zrem(NODES_KEY, self.node_id)
            await self._redis.delete(node_connections_key(self.node_id))
        except Exception as exc:
            log.warning("could not remove this node's connection counts: %s", exc)
        await self._redis.aclose()

    async def _run(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that arrives as the event is set, and `close` would then wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._refresh_s):
                    await self._changed.wait()
                    await asyncio.sleep(self._debounce_s)  # one write for a burst of connects
            self._changed.clear()
            pairs = [item for pair in self._local.snapshot().items() for item in pair]
            try:
                await self._publish(
                    keys=[node_connections_key(self.node_id), NODES_KEY],
                    args=[self._ttl, self.node_id, *pairs],
                )
            except Exception as exc:
                log.warning("could not publish connection counts: %s", exc)
