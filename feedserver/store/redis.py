"""The shared, durable store: one Redis Stream per tenant, for several nodes.

Keys (the `{tenant}` braces are a Redis Cluster hash tag: both keys of a tenant live in
one slot, which the append script needs):

    feed:{tenant}:seq      the latest seq allocated (a string integer)
    feed:{tenant}:events   the stream; entry id `<seq>-0`, fields `message`, `timestamp`,
                           trimmed by each append to exactly the history size it names,
                           and of the entries stamped before its retention cutoff
    feed:{tenant}:claim:K  idempotency key K: "<seq>\n<timestamp>\n<message>" of the event
                           its first publish created; expires after the key's TTL
    feed:epoch             names this Redis's seq numbering (see `EventStore.epoch`); made
                           on first use, so a flushed Redis gets a new one

and one pub/sub channel per tenant, `feed:{tenant}:appended`: each append publishes its
seq there (`HintedFollow`: how a node learns what to read).

Every key of a tenant has its `{tenant}` hash tag: `purge` finds them all with one SCAN
(on a Redis Cluster, of the one master that holds the tenant's slot).

Because the entry id is the seq, every history window is one XRANGE/XREVRANGE with
exclusive bounds, and a node follows new events with one XREAD per hinted stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode, ClusterPipeline
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import StoreUnavailable
from ..events import Event
from ..tasks import stop
from .base import TenantCounts, unexpired
from .pubsub import Subscriber

log = logging.getLogger(__name__)

# A down Redis must fail a request within about this long, not hang it.
COMMAND_TIMEOUT_S = 2.0
# Connections of one client (redis-py's default cap): a burst past them waits for one.
MAX_CONNECTIONS = 100
# What redis-py raises when Redis fails: a RedisError, or, from a cluster client whose
# refresh of the slots found no node up, a RedisClusterException, which is not one.
REDIS_ERRORS = (RedisError, RedisClusterException)

# Drops the entries of stream KEYS[2] stamped before `cutoff` (an event timestamp: same-shape
# timestamps compare as strings in time order); `latest` is the seq of its newest entry.
# Entries are stamped in seq order and their seqs are contiguous, so the first one kept is
# found by seq: galloping from the oldest (a steady stream expires one or two entries per
# append, found in as many probes), then halving; at most about 2 log2(held) lookups.
_EXPIRE_LUA = """
local function stamp(seq)
  local entry = redis.call('XRANGE', KEYS[2], string.format('%d-0', seq), '+', 'COUNT', 1)[1]
  return entry[2][4]  -- fields: 'message', m, 'timestamp', t
end
local function expire(cutoff, latest)
  local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
  if not oldest or oldest[2][4] >= cutoff then return end
  local dropped = tonumber(string.match(oldest[1], '^%d+'))  -- stamped before the cutoff
  local kept = latest + 1  -- the first seq known to stay (one past the newest)
  local step = 1
  while dropped + step < kept do
    if stamp(dropped + step) >= cutoff then kept = dropped + step break end
    dropped = dropped + step
    step = step * 2
  end
  while kept - dropped > 1 do
    local middle = math.floor((dropped + kept) / 2)
    if stamp(middle) < cutoff then dropped = middle else kept = middle end
  end
  redis.call('XTRIM', KEYS[2], 'MINID', string.format('%d-0', kept))
end
"""
# Atomic: the seq and the entry are written together or not at all (XADD runs before SET,
# and a script that fails stops there). Two nodes appending at once are serialised by Redis,
# so seqs never repeat and never skip. `%d` because Lua would print 1e+14 for large seqs.
# ARGV[4]: the cutoff of the tenant's retention, '' for none.
_APPEND_LUA = (
    _EXPIRE_LUA
    + """
local seq = tonumber(redis.call('GET', KEYS[1]) or '0') + 1
local id = string.format('%d-0', seq)
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[1], id, 'message', ARGV[2], 'timestamp', ARGV[3])
redis.call('SET', KEYS[1], string.format('%d', seq))
if ARGV[4] ~= '' then expire(ARGV[4], seq) end
redis.call(publish, hint, string.format('%d', seq))
"""
)
# ARGV[5], ARGV[6]: the tenant's hint channel (`HintedFollow`) and the command that
# publishes on it: PUBLISH on one Redis, SPUBLISH (in the tenant's slot) on a cluster.
_APPEND_SCRIPT = "local hint, publish = ARGV[5], ARGV[6]\n" + _APPEND_LUA + "return seq\n"
# The same append, unless the claim key exists: then its first event, and nothing written.
# One script, so 100 concurrent publishes with one key, on any nodes, create one event.
_APPEND_ONCE_SCRIPT = (
    """
local hint, publish = ARGV[6], ARGV[7]
local first = redis.call('GET', KEYS[3])
if first then return {0, first} end
"""
    + _APPEND_LUA
    + """
local claim = string.format('%d', seq) .. '\\n' .. ARGV[3] .. '\\n' .. ARGV[2]
redis.call('SET', KEYS[3], claim, 'EX', ARGV[5])
return {1, claim}
"""
)
_EXPIRE_SCRIPT = (
    _EXPIRE_LUA
    + """
expire(ARGV[1], tonumber(redis.call('GET', KEYS[1]) or '0'))
"""
)
_EPOCH_SCRIPT = """
local epoch = redis.call('GET', KEYS[1])
if epoch then return epoch end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""
EPOCH_KEY = "feed:epoch"
# How often a node compares the latest seqs of the tenants it follows with its cursors
# although no hint came (`HintedFollow`): a confirmed subscription already reads what came
# unhinted, so this only heals what pub/sub itself might drop; one MGET (on a cluster, one
# GET per tenant, grouped by master) of every followed tenant each time.
HEAL_S = 30.0
# Keys removed per UNLINK while purging a tenant.
PURGE_BATCH = 500
# How long the tenants of a failed read (`HintedFollow`) wait before they are read again,
# while other masters answer: a read of a hung master costs COMMAND_TIMEOUT_S.
RETRY_S = 1.0


def seq_key(tenant: str) -> str:
    return f"feed:{{{tenant}}}:seq"


def stream_key(tenant: str) -> str:
    return f"feed:{{{tenant}}}:events"


def claim_key(tenant: str, key: str) -> str:
    return f"feed:{{{tenant}}}:claim:{key}"


def tenant_keys(tenant: str) -> str:
    """The SCAN pattern of every key of `tenant` (ids have no glob characters)."""
    return f"feed:{{{tenant}}}:*"


def redis_client(
    url: str, *, read_timeout: float = COMMAND_TIMEOUT_S, decode_responses: bool = True
) -> Redis:
    """A client that fails fast when Redis is down, instead of retrying with backoff.

    One retry, on connection errors only: a pooled connection that died with a Redis
    restart is replaced once. Timeouts are not retried, since the command (an append) may
    have run. At most MAX_CONNECTIONS connections; a command past them waits for a free one
    (up to COMMAND_TIMEOUT_S) rather than failing with "Too many connections", so that a
    burst of connects or publishes is served a little later instead of answered 503.
    """
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=COMMAND_TIMEOUT_S,
        decode_responses=decode_responses,
        socket_timeout=read_timeout,
        socket_connect_timeout=COMMAND_TIMEOUT_S,
        socket_keepalive=True,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        health_check_interval=30,
    )
    return Redis.from_pool(pool)  # the client owns the pool: `aclose()` closes both


CLUSTER_SCHEME = "redis-cluster://"


class _Cluster(RedisCluster):
    """redis-py's async cluster client, which learns the slots before its first command and
    waits for a free connection instead of failing.

    redis-py (8.1) picks a command's node before its lazy first `initialize()`: the first
    commands, sent concurrently, go to arbitrary masters and get MOVED; the slot refresh
    that follows closes connections with commands in flight. `initialize()` returns at
    once when done, and its own lock makes concurrent first calls wait for one refresh.

    Its nodes have no blocking pool: past `max_connections` a command fails at once ("Too
    many connections"). So at most MAX_CONNECTIONS commands run through this client at a
    time (on no node more) and the others wait, up to COMMAND_TIMEOUT_S, as with
    `redis_client`'s pool. Pipelines do not pass here: the nodes allow twice as many
    connections, the rest for them.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_connections=2 * MAX_CONNECTIONS, **kwargs)
        self._running = asyncio.Semaphore(MAX_CONNECTIONS)

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> ClusterPipeline:
        if transaction or shard_hint:  # as redis-py's: a cluster pipeline has neither
            return super().pipeline(transaction, shard_hint)
        # redis-py's own `ClusterPipeline(self)` is as abstract to mypy (8.1's annotations).
        return _ClusterPipeline(self)  # type: ignore[abstract]

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        await self.initialize()
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT_S):
                await self._running.acquire()
        except TimeoutError:
            raise RedisConnectionError("No connection available.") from None
        try:
            return await super().execute_command(*args, **kwargs)
        finally:
            self._running.release()


class _ClusterPipeline(ClusterPipeline):
    """A pipeline that, when it cannot reach a node, has the client learn the slots again.

    A single command that fails so marks the client for a refresh of its slot map before
    the next command; a pipeline, with no retries allowed (`store_client`), only raises.
    A client that sends only pipelines (a node that reads the latest seqs and appends
    nothing) then kept asking a killed master after its replica had taken over."""

    def __init__(self, client: RedisCluster) -> None:
        super().__init__(client)
        self._cluster = client

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> Any:
        try:
            return await super().execute(raise_on_error, allow_redirections)
        except (RedisConnectionError, RedisTimeoutError):
            # One refresh for the failures of a moment (redis-py's own lock and epoch);
            # with no node up it fails, and the next failure asks again.
            with contextlib.suppress(*REDIS_ERRORS, OSError):
                await self._cluster.nodes_manager.initialize()
            raise


def store_client(url: str, *, read_timeout: float = COMMAND_TIMEOUT_S) -> Redis | RedisCluster:
    """`redis_client`, or for `redis-cluster://host:port[,host:port...]` a Redis Cluster
    client (redis-py's) that starts from those nodes and learns the rest of the cluster
    from them, failing as fast."""
    if not url.startswith(CLUSTER_SCHEME):
        return redis_client(url, read_timeout=read_timeout)
    nodes = []
    for address in url.removeprefix(CLUSTER_SCHEME).split(","):
        host, _, port = address.strip().rpartition(":")
        nodes.append(ClusterNode(host, int(port)))
    return _Cluster(
        startup_nodes=nodes,
        decode_responses=True,
        socket_timeout=read_timeout,
        socket_connect_timeout=COMMAND_TIMEOUT_S,
        socket_keepalive=True,
        # No retry: a command that failed after it was sent may have run, and an append run
        # twice would allocate two seqs. The caller gets a 503 (a publish with an
        # idempotency key is safe to repeat).
        retry=Retry(NoBackoff(), 0),
        # redis-py closes every connection of the client at each 5th MOVED (to refresh the
        # slots from scratch), the ones with a command in flight too: an append that ran
        # then fails as lost. 0: a MOVED repoints its own slot only, which is all a
        # resharding or a failover needs.
        reinitialize_steps=0,
        health_check_interval=30,
    )


async def learn_slots(client: Redis | RedisCluster) -> None:
    """On a cluster, learn the slot map now, at start-up, rather than in the first burst
    of requests: redis-py's first `initialize()` also reads and parses the server's command
    table, about 0.1 s of CPU per client, and every command waits for it (a burst of 200
    publishes and a connect then took a second). Nothing on one Redis. A cluster that
    cannot be reached now is asked again by the first command."""
    if isinstance(client, RedisCluster):
        try:
            await client.initialize()
        except (*REDIS_ERRORS, OSError) as exc:
            log.warning("the Redis Cluster is not reachable yet: %s", exc)


@contextmanager
def store_errors() -> Iterator[None]:
    """Any Redis failure (down, timeout, OOM, loading) is `StoreUnavailable`: a 503.

    `RedisStore` methods use `RedisStore._store_errors()`, which also counts the failure.
    """
    try:
        yield
    except REDIS_ERRORS as exc:
        log.warning("redis store unavailable: %s", exc)
        raise StoreUnavailable() from exc


class RedisStore:
    """Events and seqs in Redis: shared by every node, durable when Redis persists (AOF)."""

    backend = "redis"

    def __init__(self, url: str, history_size: int, *, follow_block_ms: int = 2000) -> None:
        self.failures = 0
        self._history_size = history_size
        self._redis = store_client(url)
        # How a node learns of new events: `HintedFollow`, on a client of its own. When a
        # command to a node fails, redis-py's cluster client closes that node's idle
        # connections in tasks of their own, so also one that a pipeline takes meanwhile,
        # which then fails with an AttributeError, not a RedisError: on the appends' client,
        # the appends failing on a killed master broke the follow in 2 of 9 kills (and an
        # error that is not `StoreUnavailable` ends the relay).
        self._follower = store_client(url)
        self._hinted = HintedFollow(self._follower, block_s=follow_block_ms / 1000)
        self._publish = "SPUBLISH" if isinstance(self._redis, RedisCluster) else "PUBLISH"
        self._append = self._redis.register_script(_APPEND_SCRIPT)
        self._append_once = self._redis.register_script(_APPEND_ONCE_SCRIPT)
        self._epoch = self._redis.register_script(_EPOCH_SCRIPT)
        self._expire = self._redis.register_script(_EXPIRE_SCRIPT)

    async def append(
        self,
        tenant: str,
        message: str,
        timestamp: str,
        *,
        history_size: int | None = None,
        expire_before: str | None = None,
    ) -> Event:
        with self._store_errors():
            seq = await self._append(
                keys=[seq_key(tenant), stream_key(tenant)],
                args=[
                    history_size or self._history_size,
                    message,
                    timestamp,
                    expire_before or "",
                    hint_channel(tenant),
                    self._publish,
                ],
            )
        return Event(int(seq), tenant, message, timestamp)

    async def append_once(
        self,
        tenant: str,
        key: str,
        message: str,
        timestamp: str,
        *,
        ttl: int,
        history_size: int | None = None,
        expire_before: str | None = None,
    ) -> tuple[Event, bool]:
        size = history_size or self._history_size
        with self._store_errors():
            created, claim = await self._append_once(
                keys=[seq_key(tenant), stream_key(tenant), claim_key(tenant, key)],
                args=[
                    size,
                    message,
                    timestamp,
                    expire_before or "",
                    ttl,
                    hint_channel(tenant),
                    self._publish,
                ],
            )
        seq, first_timestamp, first_message = claim.split("\n", 2)
        return Event(int(seq), tenant, first_message, first_timestamp), bool(created)

    async def epoch(self) -> str:
        with self._store_errors():
            epoch: str = await self._epoch(keys=[EPOCH_KEY], args=[secrets.token_urlsafe(6)])
        return epoch

    async def query(
        self,
        tenant: str,
        *,
        limit: int,
        since: int | None = None,
        before: int | None = None,
        expire_before: str | None = None,
    ) -> list[Event]:
        """`select_window`'s rule as one range command (atomic, one round trip).

        With `expire_before`, a window that starts with an expired event is read again
        after `expire`: its bounds move; a window without one costs nothing more.
        """
        events = await self._range(tenant, limit, since, before)
        if expire_before is None or not events or events[0].timestamp >= expire_before:
            return events
        await self.expire(tenant, expire_before)
        # An event stamped before the cutoff could be appended between the two calls by a
        # node whose clock is behind: never served either.
        return unexpired(await self._range(tenant, limit, since, before), expire_before)

    async def expire(self, tenant: str, before: str) -> None:
        with self._store_errors():
            await self._expire(keys=[seq_key(tenant), stream_key(tenant)], args=[before])

    async def _range(
        self, tenant: str, limit: int, since: int | None, before: int | None
    ) -> list[Event]:
        """Only `since`: the oldest `limit` entries after it (XRANGE). Otherwise the newest
        `limit` entries below `before` and above `since` (XREVRANGE, then reversed)."""
        key = stream_key(tenant)
        entries: Any
        with self._store_errors():
            if since is not None and before is None:
                entries = await self._redis.xrange(key, f"({since}-0", "+", count=limit)
            elif before is not None and before <= 1:
                entries = []
            else:
                high = "+" if before is None else f"({before}-0"
                low = "-" if since is None else f"({since}-0"
                newest_first = await self._redis.xrevrange(key, high, low, count=limit)
                entries = list(reversed(newest_first or []))
        return [_event(tenant, entry) for entry in entries]

    async def counts(self, tenant: str) -> TenantCounts:
        with self._store_errors():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.get(seq_key(tenant))
                pipe.xlen(stream_key(tenant))
                pipe.xrevrange(stream_key(tenant), "+", "-", count=1)
                latest, held, last = await pipe.execute()
        return TenantCounts(int(latest or 0), int(held), last[0][1]["timestamp"] if last else None)

    async def latest_seqs(self, tenants: Sequence[str]) -> dict[str, int]:
        """The latest seq of each tenant, in one round trip (one per master on a cluster:
        the tenants' keys are in different slots)."""
        with self._store_errors():
            return await read_latest_seqs(self._redis, tenants)

    async def answered_latest_seqs(
        self, tenants: Sequence[str]
    ) -> tuple[dict[str, int], list[str]]:
        """`latest_seqs` of the tenants whose master answers, and the tenants whose master
        failed (`read_answered_latest_seqs`); `StoreUnavailable` when none answered."""
        with self._store_errors():
            return await read_answered_latest_seqs(self._redis, tenants)

    def recheck(self, tenants: Sequence[str]) -> None:
        """Compare the latest seqs of `tenants` with their cursors before their streams
        are read again (`HintedFollow`): the caller could not (their master failed)."""
        self._hinted.recheck(tenants)

    async def start(self) -> None:
        """Learn the cluster's slots now, for the follower's client too (`learn_slots`)."""
        await learn_slots(self._follower)

    def watch(self, tenant: str) -> None:
        """Hear of `tenant`'s new events from now on (`HintedFollow`); a `follow` whose
        cursors name it reads its stream once that holds (and whenever an append says)."""
        self._hinted.watch(tenant)

    def unwatch(self, tenant: str) -> None:
        self._hinted.unwatch(tenant)

    async def follow(self, cursors: Mapping[str, int], *, count: int) -> list[Event]:
        """Events with seq > cursors[tenant], oldest first per tenant, at most `count` per
        tenant, of the watched tenants that have something new; waits up to the follow
        block time for the first one, then returns what it read. `StoreUnavailable` also
        when a subscription to the news was lost meanwhile: the caller checks its cursors
        (a Redis that restarted without its data numbers from 1 again)."""
        with self._store_errors():
            return await self._hinted.follow(cursors, count)

    async def purge(self, tenant: str) -> None:
        with self._store_errors():
            batch: list[str] = []
            async for key in self._keys_of(tenant):
                batch.append(key)
                if len(batch) >= PURGE_BATCH:
                    await self._redis.unlink(*batch)
                    batch = []
            if batch:
                await self._redis.unlink(*batch)

    async def _keys_of(self, tenant: str) -> AsyncIterator[str]:
        """Every key of `tenant`. On a cluster they share the tenant's slot (its hash tag):
        only the master that holds it is scanned, not every master."""
        if not isinstance(self._redis, RedisCluster):
            async for key in self._redis.scan_iter(match=tenant_keys(tenant), count=1000):
                yield key
            return
        await self._redis.initialize()  # the slots, before the first command picks a node
        owner = self._redis.get_node_from_key(seq_key(tenant))
        keys = self._redis.scan_iter(match=tenant_keys(tenant), count=1000, target_nodes=owner)
        async for key in keys:
            yield key

    @contextmanager
    def _store_errors(self) -> Iterator[None]:
        """`store_errors()`, counting each failure in `failures`."""
        try:
            with store_errors():
                yield
        except StoreUnavailable:
            self.failures += 1
            raise

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except (*REDIS_ERRORS, OSError):
            return False

    async def close(self) -> None:
        await self._hinted.close()
        await self._follower.aclose()
        await self._redis.aclose()


async def read_latest_seqs(client: Redis | RedisCluster, tenants: Sequence[str]) -> dict[str, int]:
    """`RedisStore.latest_seqs` through `client`, errors unconverted."""
    if not tenants:
        return {}
    keys = [seq_key(t) for t in tenants]
    if isinstance(client, RedisCluster):
        values = await client.mget_nonatomic(keys)
    else:
        values = await client.mget(keys)
    return {tenant: int(value or 0) for tenant, value in zip(tenants, values, strict=True)}


async def read_answered_latest_seqs(
    client: Redis | RedisCluster, tenants: Sequence[str]
) -> tuple[dict[str, int], list[str]]:
    """`read_latest_seqs` of each master's tenants concurrently (`by_master`): the seqs of
    those whose master answered, and the tenants whose master failed. A hung master thus
    costs the others nothing but the wait for its timeout. Raises when none answered (on
    one Redis: when it failed), as `read_latest_seqs` does."""
    groups = list((await by_master(client, tenants)).values())
    results = await asyncio.gather(
        *(read_latest_seqs(client, group) for group in groups), return_exceptions=True
    )
    latest: dict[str, int] = {}
    unanswered: list[str] = []
    errors: list[BaseException] = []
    for group, result in zip(groups, results, strict=True):
        if isinstance(result, BaseException):
            if not isinstance(result, (*REDIS_ERRORS, OSError)):
                raise result  # not a failure of Redis
            unanswered.extend(group)
            errors.append(result)
        else:
            latest.update(result)
    if errors and not latest:
        raise errors[0]
    return latest, unanswered


async def by_master(client: Redis | RedisCluster, tenants: Sequence[str]) -> dict[str, list[str]]:
    """`tenants` grouped by the master that holds their slot, by its name (on one Redis,
    one group): what one pipeline can read in one round trip, and fail together."""
    if not isinstance(client, RedisCluster):
        return {"": list(tenants)} if tenants else {}
    await client.initialize()  # the slots, before the first command picks a node
    groups: dict[str, list[str]] = {}
    for tenant in tenants:
        node = client.get_node_from_key(stream_key(tenant))
        groups.setdefault(node.name if node else "", []).append(tenant)
    return groups


_HINT_PREFIX, _HINT_SUFFIX = "feed:{", "}:appended"


def hint_channel(tenant: str) -> str:
    """Where the append scripts publish the seq of each new event of `tenant`: PUBLISH on
    one Redis; SPUBLISH on a cluster, in the tenant's slot (the shard of its stream). The
    seq is for whoever watches the channel (`redis-cli`); a node reads from its cursor,
    whatever a hint says."""
    return f"{_HINT_PREFIX}{tenant}{_HINT_SUFFIX}"


def hinted_tenant(channel: str) -> str:
    """The tenant whose `hint_channel` is `channel`."""
    return channel.removeprefix(_HINT_PREFIX).removesuffix(_HINT_SUFFIX)


class HintedFollow:
    """`RedisStore.follow`: a node reads only the streams that have something new.

    Each append also publishes its seq on the tenant's hint channel, in the same script
    (on a cluster with SPUBLISH: only the shard that holds the stream carries it), a node
    subscribes to the hint channels of the tenants it follows (`Subscriber`), and `follow`
    reads, without blocking, the streams that were hinted: one XREAD each, in one pipeline
    per master, the masters' concurrently (on one Redis, one pipeline), so that a hung
    master holds up only the reads of its own tenants (`follow`). An event thus costs a
    node one read of one stream, however many tenants it follows. The XREAD BLOCK over
    every followed stream that this replaces cost a pass over all of them per event, and
    cannot block on the streams of several slots of a cluster at all.

    Nothing is missed for want of a hint. A tenant's stream is read from its cursor when
    its subscription is confirmed: at first, and after a reconnection, a failover or a
    move of its slot (what was appended meanwhile had no hint for this node). Redis drops
    a subscriber's messages only by closing its connection (past its output buffer
    limit), which ends in such a confirmation too; still, every `heal_s` the followed
    tenants' latest seqs are compared with the cursors and those behind are read. When a
    subscription was lost, the next `follow` raises `StoreUnavailable` once, so that the
    caller checks its cursors against a Redis that may have restarted without its data;
    so does a heal that finds a tenant's seq behind its cursor. The cursors keep delivery
    exactly once and in order; a hint only says when to read.
    """

    def __init__(
        self, client: Redis | RedisCluster, *, block_s: float, heal_s: float = HEAL_S
    ) -> None:
        self._client = client
        self._subscriber = Subscriber(
            client, self._hinted, self._hint, self._lost, what="stream hints"
        )
        self._block_s = block_s
        self._heal_s = heal_s
        self._watched: set[str] = set()  # the tenants whose hint channels are subscribed
        # Watched tenants whose streams to read, in the order their hints came.
        self._pending: dict[str, None] = {}
        # The reads under way, one per master: each its tenants' cursors and when it began.
        # A tenant is in at most one, until a follow has returned its events: its next
        # read starts from the cursor those moved.
        self._reads: dict[asyncio.Task[list[tuple[str, Any]]], tuple[dict[str, int], float]]
        self._reads = {}
        self._reading: set[str] = set()  # the tenants of `_reads`
        self._held: dict[str, float] = {}  # tenant of a failed read -> when to read it again
        # Tenants whose latest seq is compared with their cursor before their next read:
        # their master failed, and may have come back without their newest events.
        self._unchecked: set[str] = set()
        self._answered_at = -math.inf  # when a read last answered
        self._failure: BaseException | None = None  # to raise at the next follow
        self._signal = asyncio.Event()  # set when there is something to read, or to say
        self._broken = False  # a subscription was lost since the last follow
        self._next_heal: float | None = None

    def watch(self, tenant: str) -> None:
        self._watched.add(tenant)
        self._subscriber.subscribe(hint_channel(tenant))
        self._subscriber.start()

    def unwatch(self, tenant: str) -> None:
        self._watched.discard(tenant)
        self._pending.pop(tenant, None)
        self._held.pop(tenant, None)
        self._unchecked.discard(tenant)
        self._subscriber.unsubscribe(hint_channel(tenant))

    def recheck(self, tenants: Sequence[str]) -> None:
        """`RedisStore.recheck`."""
        self._unchecked.update(tenant for tenant in tenants if tenant in self._watched)

    async def follow(self, cursors: Mapping[str, int], count: int) -> list[Event]:
        """What the class says, for the watched tenants of `cursors`. A pending tenant
        without a cursor yet (its hint came before its cursor was set) stays pending.

        The tenants to read are grouped by master (`by_master`), and each group is read
        in a task of its own, one pipeline: a follow returns the events of the reads that
        answered, as soon as one has, and a read of a hung master, waiting for its
        timeout, holds up only its own tenants. A read that fails puts its tenants back,
        to be read from their cursors (checked first: `_unchecked`); when another read
        answered since it began (the store is up, that master is not), the failure is not
        raised and they are held for RETRY_S, so that a dead master's tenants are not
        tried (and timed out) again at every follow. Otherwise it is raised, as one Redis
        down is, and the caller's backoff paces the next try."""
        loop = asyncio.get_running_loop()
        if self._next_heal is None:
            self._next_heal = loop.time() + self._heal_s
        deadline = loop.time() + self._block_s
        while True:
            self._signal.clear()
            if self._broken:
                self._broken = False
                raise StoreUnavailable("the subscription to new events was lost")
            if self._failure is not None:
                failure, self._failure = self._failure, None
                raise failure
            if loop.time() >= self._next_heal:
                self._next_heal = loop.time() + self._heal_s
                await self._heal(cursors)
            await self._start_reads(cursors, count)
            if any(read.done() for read in self._reads):
                return self._collect(count)
            now = loop.time()
            if now >= deadline:
                return []
            # Until a hint, a read ends, the heal, or a held tenant may be read again.
            wake = min(deadline, self._next_heal, *(at for at in self._held.values() if at > now))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(wake):
                    await self._signal.wait()

    async def _start_reads(self, cursors: Mapping[str, int], count: int) -> None:
        """A read, per master, of the pending tenants of `cursors` not being read or held."""
        now = asyncio.get_running_loop().time()
        tenants = [
            tenant
            for tenant in self._pending
            if tenant in cursors
            and tenant not in self._reading
            and self._held.get(tenant, now) <= now
        ]
        if not tenants:
            return
        for tenant in tenants:
            del self._pending[tenant]
            self._held.pop(tenant, None)
        try:
            groups = await by_master(self._client, tenants)
        except BaseException:
            self._pending.update(dict.fromkeys(tenants))  # read again next time
            raise
        for group in groups.values():
            # The cursors now: the relay's dict may lose a tenant while the read starts.
            reads = {tenant: cursors[tenant] for tenant in group if tenant in cursors}
            read = asyncio.create_task(self._read(reads, count), name="feed-follow-read")
            read.add_done_callback(lambda _: self._signal.set())
            self._reads[read] = (reads, now)
            self._reading.update(reads)

    async def _read(self, reads: dict[str, int], count: int) -> list[tuple[str, Any]]:
        """One XREAD per tenant of `reads` from its cursor, in one pipeline (its tenants
        are on one master); first, of its unchecked tenants, the latest seqs: a stream
        behind its cursor raises StoreUnavailable, for the caller to check its cursors."""
        unchecked = [tenant for tenant in reads if tenant in self._unchecked]
        if unchecked:
            latest = await read_latest_seqs(self._client, unchecked)
            self._unchecked.difference_update(unchecked)  # a stream behind is said once
            for tenant in unchecked:
                if latest[tenant] < reads[tenant]:
                    raise StoreUnavailable(f"the {tenant} stream is behind this node's cursor")
        async with self._client.pipeline(transaction=False) as pipe:
            for tenant, cursor in reads.items():
                pipe.xread({stream_key(tenant): f"{cursor}-0"}, count=count)
            replies = await pipe.execute()
        self._answered_at = asyncio.get_running_loop().time()
        return list(zip(reads, replies, strict=True))

    def _collect(self, count: int) -> list[Event]:
        """The events of the reads that ended; what failed is put back (see `follow`)."""
        now = asyncio.get_running_loop().time()
        events: list[Event] = []
        failed: list[tuple[dict[str, int], float, BaseException]] = []
        for read, (reads, began) in list(self._reads.items()):
            if not read.done():
                continue
            del self._reads[read]
            self._reading.difference_update(reads)
            failure = read.exception()
            if failure is not None:
                failed.append((reads, began, failure))
                continue
            for tenant, reply in read.result():
                for _key, entries in reply or []:
                    events.extend(_event(tenant, entry) for entry in entries)
                    if len(entries) >= count and tenant in self._watched:  # more behind
                        self._pending[tenant] = None
        for reads, began, failure in failed:
            tenants = [tenant for tenant in reads if tenant in self._watched]
            self._pending.update(dict.fromkeys(tenants))
            if isinstance(failure, StoreUnavailable):  # a stream behind: the caller checks
                self._failure = failure
                continue
            self._unchecked.update(tenants)
            if self._answered_at > began:  # the store is up, their master is not
                log.warning(
                    "reading %d streams failed, again in %.0f s: %s", len(tenants), RETRY_S, failure
                )
                self._held.update(dict.fromkeys(tenants, now + RETRY_S))
            else:
                self._failure = failure
        if self._pending:
            self._signal.set()
        if self._failure is not None and not events:  # else raised by the next follow
            failure, self._failure = self._failure, None
            raise failure
        return events

    async def _heal(self, cursors: Mapping[str, int]) -> None:
        """Of the followed tenants whose master answers: those behind the cursors are
        pending, a stream behind its cursor raises (the others: at the next heal)."""
        followed = [tenant for tenant in cursors if tenant in self._watched]
        latest, _unanswered = await read_answered_latest_seqs(self._client, followed)
        for tenant, seq in latest.items():
            cursor = cursors.get(tenant)
            if cursor is None or tenant not in self._watched:  # no longer followed
                continue
            if seq < cursor:
                raise StoreUnavailable(f"the {tenant} stream is behind this node's cursor")
            if seq > cursor:
                self._pending[tenant] = None

    def _hint(self, channel: str) -> None:
        tenant = hinted_tenant(channel)
        if tenant in self._watched:  # else a hint that came before its unsubscription
            self._pending[tenant] = None
            self._signal.set()

    async def _hinted(self, channel: str, data: bytes) -> None:
        self._hint(channel)

    def _lost(self, channel: str) -> None:
        self._broken = True
        self._signal.set()

    async def close(self) -> None:
        for read in list(self._reads):
            await stop(read)
        await self._subscriber.close()


def _event(tenant: str, entry: Any) -> Event:
    """An event from an XRANGE/XREAD entry `(id, {field: value})`."""
    entry_id, fields = entry
    return Event(int(entry_id.partition("-")[0]), tenant, fields["message"], fields["timestamp"])
