"""The tenant registry shared by every node: a hash in the Redis of `FEED_STORE`.

Keys on one redis-server (`redis://`), the names every deployment has used:

    feed:tenants           hash: tenant id -> `tenants.encode_record` (JSON, schemaVersion)
    feed:tenants:deleted   set: ids deleted at runtime (not bootstrapped from FEED_TENANTS)
    feed:tenants:version   a counter, incremented by every change
    feed:tenants:log       stream: one entry per change, `version` (the counter it set)
                           and `ids` (comma-separated, "*" for more than LOGGED_IDS), the
                           last LOG_LENGTH or so
    feed:tenants:changed   pub/sub channel: the id of each changed tenant (PUBLISH)

On a Redis Cluster (`redis-cluster://`) a transaction touches one slot only, and a notice
sent inside it must be a sharded one (SPUBLISH, to the channel's slot): there the names
carry one hash tag, `feed:{tenants}`, `feed:{tenants}:deleted`, `feed:{tenants}:version`,
`feed:{tenants}:log`, and the notice goes to the sharded channel `feed:{tenants}:changed`.
`changed_channel` and `sharded` tell a subscriber which channel to follow, and how
(SSUBSCRIBE when sharded).

A change is one optimistic transaction (WATCH the hash, the set and the counter, read the
fields and memberships of the ids the edit names, edit, MULTI ... EXEC, again when another
writer came first), so two nodes creating one id at once get one tenant and one 409, and a
change costs the tenants it touches, not the registry's size. How nodes follow the
changes: `cluster.TenantChannel`; the log lets a node that checks the version after a
change read only what changed since its last reload (`changes_since`), not the whole
registry.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from redis.asyncio import RedisCluster
from redis.exceptions import WatchError

from ..tenants import (
    Changed,
    Edit,
    Loaded,
    Mark,
    Since,
    Tenant,
    TenantRecordError,
    TenantState,
    decode_record,
    encode_record,
)
from .redis import learn_slots, store_client, store_errors

TENANTS_KEY = "feed:tenants"
TENANTS_DELETED_KEY = "feed:tenants:deleted"
TENANTS_VERSION_KEY = "feed:tenants:version"
TENANTS_CHANGED_CHANNEL = "feed:tenants:changed"
TENANTS_LOG_KEY = "feed:tenants:log"
# Changes a node may fall behind by and still catch up by reading only them.
LOG_LENGTH = 1000
# A change of more ids (a bootstrap) is logged as "*": whoever is behind it reads it all.
LOGGED_IDS = 100


class RegistryKeys(NamedTuple):
    tenants: str
    deleted: str
    version: str
    log: str
    changed: str  # the channel of the change notices
    publish: str  # the command that sends one: PUBLISH, or SPUBLISH to the channel's slot


PLAIN_KEYS = RegistryKeys(
    TENANTS_KEY,
    TENANTS_DELETED_KEY,
    TENANTS_VERSION_KEY,
    TENANTS_LOG_KEY,
    TENANTS_CHANGED_CHANNEL,
    "PUBLISH",
)
SHARDED_KEYS = RegistryKeys(
    "feed:{tenants}",
    "feed:{tenants}:deleted",
    "feed:{tenants}:version",
    "feed:{tenants}:log",
    "feed:{tenants}:changed",
    "SPUBLISH",
)


class RedisTenants:
    def __init__(self, url: str) -> None:
        self._redis = store_client(url)
        # True on a Redis Cluster: the notices are sharded, subscribe with SSUBSCRIBE.
        self.sharded = isinstance(self._redis, RedisCluster)
        self.keys = SHARDED_KEYS if self.sharded else PLAIN_KEYS
        self.changed_channel = self.keys.changed

    async def open(self) -> None:
        # Every node writes: Redis serialises the transactions; nothing to claim here.
        await learn_slots(self._redis)

    async def read(self) -> TenantState:
        with store_errors():
            async with self._redis.pipeline(transaction=True) as pipe:
                # Raw commands: redis-py's (8.1) cluster transaction hands `hgetall`'s and
                # `smembers`' `keys=` argument to their reply parsers, which take none.
                pipe.execute_command("HGETALL", self.keys.tenants)
                pipe.execute_command("SMEMBERS", self.keys.deleted)
                records, deleted = await pipe.execute()
        return _state(self.keys.tenants, records, deleted)

    async def read_one(self, tenant_id: str) -> Tenant | None:
        with store_errors():
            record = await self._redis.hget(self.keys.tenants, tenant_id)
        return None if record is None else _decode(self.keys.tenants, tenant_id, record)

    async def change(self, edit: Edit) -> Changed:
        with store_errors():
            async with self._redis.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        return await self._change(pipe, edit)
                    except WatchError:  # another writer changed the registry meanwhile
                        continue

    async def _change(self, pipe: Any, edit: Edit) -> Changed:
        keys = self.keys
        await pipe.watch(keys.tenants, keys.deleted, keys.version)
        before = await self._part(pipe, edit.ids)
        changed = before.edited(edit)
        after, ids = changed
        if not ids:
            await pipe.unwatch()
            return changed
        version = int(await pipe.get(keys.version) or 0) + 1  # watched: what INCR sets
        pipe.multi()
        for tenant_id in ids:
            tenant = after.tenants.get(tenant_id)
            if tenant is None:
                pipe.hdel(keys.tenants, tenant_id)
            else:
                pipe.hset(keys.tenants, tenant_id, encode_record(tenant))
        if gone := before.deleted - after.deleted:
            pipe.srem(keys.deleted, *gone)
        if new := after.deleted - before.deleted:
            pipe.sadd(keys.deleted, *new)
        pipe.incr(keys.version)
        logged = ",".join(ids) if len(ids) <= LOGGED_IDS else "*"
        pipe.xadd(
            keys.log, {"version": version, "ids": logged}, maxlen=LOG_LENGTH, approximate=True
        )
        for tenant_id in ids:
            pipe.execute_command(keys.publish, keys.changed, tenant_id)
        await pipe.execute()
        return changed

    async def _part(self, pipe: Any, ids: tuple[str, ...]) -> TenantState:
        """The records and tombstones of `ids`, read while watching."""
        if not ids:
            return TenantState()
        records = await pipe.hmget(self.keys.tenants, ids)
        deleted = await pipe.smismember(self.keys.deleted, ids)
        found = {i: r for i, r in zip(ids, records, strict=True) if r is not None}
        tombstones = {i for i, gone in zip(ids, deleted, strict=True) if gone}
        return _state(self.keys.tenants, found, tombstones)

    async def version(self) -> int:
        with store_errors():
            return int(await self._redis.get(self.keys.version) or 0)

    async def load(self) -> Loaded:
        with store_errors():
            async with self._redis.pipeline(transaction=True) as pipe:
                # Raw commands: see `read`.
                pipe.execute_command("HGETALL", self.keys.tenants)
                pipe.execute_command("SMEMBERS", self.keys.deleted)
                pipe.execute_command("GET", self.keys.version)
                pipe.execute_command("XREVRANGE", self.keys.log, "+", "-", "COUNT", 1)
                records, deleted, version, last = await pipe.execute()
        mark = Mark(int(version or 0))
        if last and int(last[0][1]["version"]) == mark.version:  # else not logged
            mark = Mark(mark.version, last[0][0])
        return Loaded(_state(self.keys.tenants, records, deleted), mark)

    async def changes_since(self, mark: Mark) -> Since | None:
        """From the log: the entries from `mark`'s own (still there: not trimmed, and not a
        Redis that lost its data, whose new entries have other ids) to now, each version
        one more than the last and the last the counter's (else a writer that logs nothing,
        an older version, changed it)."""
        if mark.entry is None:
            return None
        with store_errors():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.execute_command("GET", self.keys.version)
                pipe.execute_command(
                    "XRANGE", self.keys.log, mark.entry, "+", "COUNT", LOG_LENGTH + 1
                )
                version, entries = await pipe.execute()
        if not entries or entries[0][0] != mark.entry:
            return None
        versions = [int(fields["version"]) for _, fields in entries]
        if versions != list(range(mark.version, int(version or 0) + 1)):
            return None
        ids = [fields["ids"] for _, fields in entries[1:]]
        if "*" in ids:
            return None
        changed = sorted({i for logged in ids for i in logged.split(",")})
        return Since(Mark(versions[-1], entries[-1][0]), changed)

    async def close(self) -> None:
        await self._redis.aclose()


def _state(key: str, records: dict[str, str], deleted: set[str]) -> TenantState:
    return TenantState(
        {tenant_id: _decode(key, tenant_id, record) for tenant_id, record in records.items()},
        set(deleted),
    )


def _decode(key: str, tenant_id: str, record: bytes | str) -> Tenant:
    """The tenant in field `tenant_id` of hash `key`; TenantRecordError naming both."""
    try:
        tenant = decode_record(record)
    except TenantRecordError as exc:
        raise TenantRecordError(f"{key} field {tenant_id!r}: {exc}") from None
    if tenant.id != tenant_id:
        raise TenantRecordError(f"{key} field {tenant_id!r} holds tenant {tenant.id!r}")
    return tenant
