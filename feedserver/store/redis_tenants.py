"""The tenant registry shared by every node: a hash in the Redis of `FEED_STORE`.

Keys on one redis-server (`redis://`), the names every deployment has used:

    feed:tenants           hash: tenant id -> `tenants.encode_record` (JSON, schemaVersion)
    feed:tenants:deleted   set: ids deleted at runtime (not bootstrapped from FEED_TENANTS)
    feed:tenants:version   a counter, incremented by every change
    feed:tenants:changed   pub/sub channel: the id of each changed tenant (PUBLISH)

On a Redis Cluster (`redis-cluster://`) a transaction touches one slot only, and a notice
sent inside it must be a sharded one (SPUBLISH, to the channel's slot): there the names
carry one hash tag, `feed:{tenants}`, `feed:{tenants}:deleted`, `feed:{tenants}:version`,
and the notice goes to the sharded channel `feed:{tenants}:changed`. `changed_channel` and
`sharded` tell a subscriber which channel to follow, and how (SSUBSCRIBE when sharded).

A change is one optimistic transaction (WATCH the hash and the set, read the fields and
memberships of the ids the edit names, edit, MULTI ... EXEC, again when another writer came
first), so two nodes creating one id at once get one tenant and one 409, and a change costs
the tenants it touches, not the registry's size. How nodes follow the changes:
`cluster.TenantChannel`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from redis.asyncio import RedisCluster
from redis.exceptions import WatchError

from ..tenants import (
    Changed,
    Edit,
    Tenant,
    TenantRecordError,
    TenantState,
    decode_record,
    encode_record,
)
from .redis import store_client, store_errors

TENANTS_KEY = "feed:tenants"
TENANTS_DELETED_KEY = "feed:tenants:deleted"
TENANTS_VERSION_KEY = "feed:tenants:version"
TENANTS_CHANGED_CHANNEL = "feed:tenants:changed"


class RegistryKeys(NamedTuple):
    tenants: str
    deleted: str
    version: str
    changed: str  # the channel of the change notices
    publish: str  # the command that sends one: PUBLISH, or SPUBLISH to the channel's slot


PLAIN_KEYS = RegistryKeys(
    TENANTS_KEY, TENANTS_DELETED_KEY, TENANTS_VERSION_KEY, TENANTS_CHANGED_CHANNEL, "PUBLISH"
)
SHARDED_KEYS = RegistryKeys(
    "feed:{tenants}",
    "feed:{tenants}:deleted",
    "feed:{tenants}:version",
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
        pass  # every node writes: Redis serialises the transactions

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
        await pipe.watch(keys.tenants, keys.deleted)
        before = await self._part(pipe, edit.ids)
        changed = before.edited(edit)
        after, ids = changed
        if not ids:
            await pipe.unwatch()
            return changed
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
