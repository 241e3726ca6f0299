"""Where a node keeps what it shares: alone in memory, or with other nodes through Redis.

`open_backend(settings)` gives the store, the event bus, the connection counter and the
Socket.IO client manager that belong together:

- `FEED_STORE=memory`: `SingleNode` — ring buffers in memory, the publishing call delivers.
- `FEED_STORE=redis://`: `RedisCluster` — events in Redis Streams (`store/redis.py`);
  every node follows the streams and delivers what it reads (`StreamRelay`); connection
  counts are shared (`RedisConnections`); Socket.IO's own cross-node traffic (system
  messages, disconnects of another node's sockets) goes through `FeedRedisManager`.

Why `event_created` travels through the streams and not through Socket.IO's pub/sub
channel: the channel delivers in publish order, which is not seq order when two nodes (or
two requests on one node) publish at once, and it reaches remote sockets without passing
the gateway, so a socket that is still receiving its catch-up there could miss an event or
get it twice. Reading the stream gives every node every event exactly once, in seq order,
through the gateway's one delivery call; after a Redis outage or a lost connection the node
continues from the last seq it delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

import socketio

from .config import Settings
from .core import ConnectionCounter, EventBus, Listener, LocalBus, LocalConnections
from .errors import StoreUnavailable
from .events import Event
from .rooms import RoomIndex
from .store import EventStore, MemoryStore
from .store.redis import COMMAND_TIMEOUT_S, RedisStore, redis_client, store_errors

log = logging.getLogger(__name__)

SOCKETIO_CHANNEL = "feed:socketio"
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

    @property
    def socket_manager(self) -> socketio.AsyncManager | None:
        """None: python-socketio's in-process manager."""
        ...

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
        self.socket_manager = None

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        await self.store.close()


class RedisCluster:
    def __init__(self, settings: Settings, url: str) -> None:
        self.node_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.store = RedisStore(url, settings.history_size)
        self.bus = StreamRelay(self.store, settings.tenants)
        self.connections = RedisConnections(url, self.node_id)
        self.socket_manager = FeedRedisManager(url)

    async def start(self) -> None:
        await self.bus.start()
        await self.connections.start()

    async def close(self) -> None:
        await self.socket_manager.close()
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


class FeedRedisManager(RoomIndex, socketio.AsyncRedisManager):  # type: ignore[misc]
    """python-socketio's Redis manager, with the timeouts and ownership a server needs.

    - An emit to one socket of this node stays local: no other node has that socket.
    - The listener reconnects with a backoff capped at 2 s (the library's grows to 60 s), so
      cross-node messages resume promptly after a Redis outage.
    - `close()` stops the listener task, which `AsyncServer.shutdown()` leaves running.
    - `RoomIndex`: a disconnect touches only its own rooms (see `rooms`).
    """

    def __init__(self, url: str) -> None:
        super().__init__(
            url,
            channel=SOCKETIO_CHANNEL,
            redis_options={
                "socket_timeout": COMMAND_TIMEOUT_S,
                "socket_connect_timeout": COMMAND_TIMEOUT_S,
                "socket_keepalive": True,
            },
        )
        self.thread: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()  # subscribed to the channel right now

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str | None = None,
        room: str | None = None,
        **kwargs: Any,
    ) -> Any:
        target = kwargs.pop("to", None) or room
        if target is not None and self.is_connected(target, namespace or "/"):
            kwargs["ignore_queue"] = True
        return await super().emit(event, data, namespace=namespace, room=target, **kwargs)

    async def _redis_listen_with_retries(self) -> AsyncIterator[Any]:
        backoff = Backoff(first=0.2)
        while True:
            try:
                self._redis_connect()
                await self.pubsub.subscribe(self.channel)
                self.listening.set()
                backoff.reset()
                async for message in self.pubsub.listen():
                    yield message
            except Exception as exc:  # whatever the client raises, listen again
                self.listening.clear()
                log.warning("socket.io redis channel lost (%s); reconnecting", exc)
                await self.pubsub.aclose()
                await backoff.sleep()

    async def close(self) -> None:
        await stop(self.thread)
        if self.redis is not None:
            await self.redis.aclose()
