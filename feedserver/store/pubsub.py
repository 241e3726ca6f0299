"""Redis pub/sub subscriptions that are kept through failures, on one Redis or a Cluster.

On one Redis, SUBSCRIBE on one connection. On a Redis Cluster, sharded pub/sub: SSUBSCRIBE
at the master that owns each channel's slot (a message then goes to that shard only, not,
as PUBLISH does on a cluster, to every node), one connection per master with channels.

`Subscriber` owns its connections (redis-py's `Connection`: RESP in and out, nothing
more). redis-py's `PubSub` resubscribes by itself after a reconnection, to the same
server and with one SSUBSCRIBE for all channels, which a cluster refuses unless they share
a slot; its cluster variant polls the masters in turn. Here every (re)subscription is a
decision of the one task that places channels, from the slot map at that moment.

Pub/sub keeps nothing for a subscriber that was away. So `on_subscribed(channel)` is
called whenever a subscription is confirmed: at first, and again after a reconnection, a
failover or a move of the channel's slot; a caller reads then what it may have missed.
`on_lost(channel)` says that a subscription ended without being asked to.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from ..tasks import Backoff, stop

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes], Awaitable[None]]
ChannelHandler = Callable[[str], None]

# A connection quiet for this long is asked for a PING; no reply for as long again and it
# is taken for dead (a peer that vanished without closing sends nothing at all).
HEALTH_CHECK_S = 15.0


async def publish(client: Redis | RedisCluster, channel: str, data: bytes | str) -> None:
    """PUBLISH on one Redis; on a cluster SPUBLISH, to the shard that owns the channel, as
    `Subscriber` subscribes there."""
    if isinstance(client, RedisCluster):
        await client.spublish(channel, data)
    else:
        await client.publish(channel, data)


class Subscriber:
    """Channels to listen to, kept subscribed until `unsubscribe` or `close`.

    `on_message(channel, data)` is awaited for each message, in order per connection (for
    a cluster: per master). `subscribe`/`unsubscribe` only record what is wanted; one task
    (`start`) subscribes and unsubscribes to match, and again after any failure, with
    backoff.
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        on_message: MessageHandler,
        on_subscribed: ChannelHandler | None = None,
        on_lost: ChannelHandler | None = None,
        *,
        what: str,
    ) -> None:
        """`client` names the servers (and is not used for the subscriptions): on one
        Redis a connection is made by its pool; on a cluster, to the master of each slot."""
        self._on_message = on_message
        self._on_subscribed = on_subscribed
        self._on_lost = on_lost
        self._what = what
        self._client = client
        self.sharded = isinstance(client, RedisCluster)
        self._wanted: set[str] = set()
        self._placed: dict[str, _Link] = {}  # channel -> the connection it is subscribed on
        self._links: dict[str, _Link] = {}  # server -> its connection
        self._changed = asyncio.Event()
        self._refresh = False  # the slot map is stale: ask the cluster again first
        self._backoff = Backoff(first=0.2)
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def subscribe(self, *channels: str) -> None:
        self._wanted.update(channels)
        self._changed.set()

    def unsubscribe(self, *channels: str) -> None:
        self._wanted.difference_update(channels)
        self._changed.set()

    def start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._run(), name=f"feed-pubsub-{self._what}")

    async def close(self) -> None:
        self._closed = True
        await stop(self._task)
        self._task = None
        for link in list(self._links.values()):
            await link.close()
        self._links.clear()
        self._placed.clear()

    async def _run(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            if self._refresh:  # after a failure (the backoff resets at a confirmation)
                await self._backoff.sleep()
            try:
                await self._place()
            except Exception as exc:  # redis-py's cluster errors are not all RedisError
                log.warning("%s channel lost (%s); reconnecting", self._what, exc)
                self._refresh = True
                self._changed.set()

    async def _place(self) -> None:
        """Subscribe what is wanted and not placed, unsubscribe what is placed and not
        wanted; close the connections left without channels."""
        # Taken before the await: a loss heard meanwhile asks for a refresh of its own.
        refresh, self._refresh = self._refresh, False
        if isinstance(self._client, RedisCluster):
            if refresh:
                await self._client.nodes_manager.initialize()
            else:
                await self._client.initialize()  # at once once it knows the slots
        for channel in [c for c in self._placed if c not in self._wanted]:
            await self._placed.pop(channel).unsubscribe(channel)
        for channel in [c for c in self._wanted if c not in self._placed]:
            server, make = self._server_of(channel)
            link = self._links.get(server)
            if link is None:
                link = _Link(server, make(), self.sharded, self._received, self._lost)
                await link.open()  # kept only once it reads: a link that never connected
                self._links[server] = link  # would take subscriptions nothing reads
            # Placed first: its confirmation may be read while the command is written.
            self._placed[channel] = link
            try:
                await link.subscribe(channel)
            except BaseException:
                if self._placed.get(channel) is link:
                    del self._placed[channel]
                raise
        for server, link in list(self._links.items()):
            if not link.channels:
                del self._links[server]
                await link.close()

    def _server_of(self, channel: str) -> tuple[str, Callable[[], Connection]]:
        """The server that `channel` is subscribed on, and how to connect to it."""
        if not isinstance(self._client, RedisCluster):
            pool = self._client.connection_pool
            return "redis", pool.make_connection
        node = self._client.get_node_from_key(channel)
        if node is None:
            raise RedisError(f"no master serves the slot of {channel}")
        return node.name, lambda: node.connection_class(**node.connection_kwargs)

    async def _received(self, link: _Link, reply: Any) -> None:
        kind = reply[0].decode() if isinstance(reply, list) and reply else None  # bytes
        if kind in ("message", "smessage"):
            try:
                await self._on_message(reply[1].decode(), reply[2])
            except Exception:
                log.exception("a message on %s failed", self._what)
        elif kind in ("subscribe", "ssubscribe"):
            channel = reply[1].decode()
            self._backoff.reset()
            if self._on_subscribed is not None and self._placed.get(channel) is link:
                self._on_subscribed(channel)
        elif kind in ("unsubscribe", "sunsubscribe"):
            channel = reply[1].decode()
            if link.unsubscribed(channel):  # the reply to an UNSUBSCRIBE of ours
                return
            if channel in link.channels:  # not asked for: its slot moved to another master
                link.channels.discard(channel)
                if self._placed.get(channel) is link:
                    del self._placed[channel]
                    self._lost_channel(channel)
                self._refresh = True
                self._changed.set()

    def _lost_channel(self, channel: str) -> None:
        if self._on_lost is not None and channel in self._wanted:
            self._on_lost(channel)

    def _lost(self, link: _Link, exc: BaseException) -> None:
        """`link` failed: place its channels again, from a fresh slot map."""
        log.warning("%s channel lost (%s); reconnecting", self._what, exc)
        if self._links.get(link.server) is link:
            del self._links[link.server]
        for channel in link.channels:
            if self._placed.get(channel) is link:
                del self._placed[channel]
                self._lost_channel(channel)
        link.channels.clear()
        self._refresh = True
        self._changed.set()


class _Link:
    """One subscribed connection and the task that reads it."""

    def __init__(
        self,
        server: str,
        connection: Connection,
        sharded: bool,
        on_reply: Callable[[_Link, Any], Awaitable[None]],
        on_lost: Callable[[_Link, BaseException], None],
    ) -> None:
        self.server = server
        self.channels: set[str] = set()  # subscribed here, or being
        # UNSUBSCRIBEs sent and not yet answered, per channel: an answer is ours, not a
        # move of the slot, also when the channel was subscribed again meanwhile.
        self._leaving: collections.Counter[str] = collections.Counter()
        self._connection = connection
        self._on_reply = on_reply
        self._on_lost = on_lost
        self._task: asyncio.Task[None] | None = None
        self._subscribe = "SSUBSCRIBE" if sharded else "SUBSCRIBE"
        self._unsubscribe = "SUNSUBSCRIBE" if sharded else "UNSUBSCRIBE"

    async def open(self) -> None:
        await self._connection.connect()  # type: ignore[no-untyped-call]  # redis-py
        self._task = asyncio.create_task(self._read(), name=f"feed-pubsub-{self.server}")

    async def subscribe(self, channel: str) -> None:
        # One channel per command: on a cluster, channels of one command share a slot.
        self._reading()
        self.channels.add(channel)
        await self._connection.send_command(self._subscribe, channel, check_health=False)

    async def unsubscribe(self, channel: str) -> None:
        self._reading()
        self.channels.discard(channel)
        self._leaving[channel] += 1
        await self._connection.send_command(self._unsubscribe, channel, check_health=False)

    def unsubscribed(self, channel: str) -> bool:
        """Whether an UNSUBSCRIBE reply for `channel` answers one of ours (counted off)."""
        if self._leaving[channel] <= 0:
            del self._leaving[channel]
            return False
        self._leaving[channel] -= 1
        if not self._leaving[channel]:
            del self._leaving[channel]
        return True

    def _reading(self) -> None:
        """A command goes only on a connection that is read: redis-py would otherwise
        connect a closed one again, subscribed, with nothing reading it."""
        if self._task is None or self._task.done():
            raise RedisConnectionError(f"the connection to {self.server} is closed")

    async def close(self) -> None:
        self._closed = True
        await stop(self._task)
        await self._connection.disconnect()

    async def _read(self) -> None:
        pinged = False
        try:
            while True:
                # Bytes, whatever the client decodes: a message that is not UTF-8 is the
                # listener's to refuse, not a failure of the connection.
                # push_request: RESP3 delivers messages as pushes, which redis-py would
                # otherwise hand to a push handler instead of returning them.
                reply = await self._connection.read_response(
                    disable_decoding=True, timeout=HEALTH_CHECK_S, push_request=True
                )
                if reply is None:
                    if pinged:
                        raise TimeoutError(f"no reply from {self.server} to a PING")
                    await self._connection.send_command("PING", check_health=False)
                    pinged = True
                    continue
                pinged = False
                await self._on_reply(self, reply)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # whatever the connection raised: subscribe again
            self._on_lost(self, exc)
            await self._connection.disconnect()
