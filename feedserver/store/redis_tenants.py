"""The tenant registry shared by every node: a hash in the Redis of `FEED_STORE`.

Keys:

    feed:tenants           hash: tenant id -> `tenants.encode_record` (JSON, schemaVersion)
    feed:tenants:deleted   set: ids deleted at runtime (not bootstrapped from FEED_TENANTS)
    feed:tenants:version   a counter, incremented by every change
    feed:tenants:changed   pub/sub channel: the id of each changed tenant

A change is one optimistic transaction (WATCH the hash and the set, read the fields and
memberships of the ids the edit names, edit, MULTI ... EXEC, again when another writer came
first), so two nodes creating one id at once get one tenant and one 409, and a change costs
the tenants it touches, not the registry's size. How nodes follow the changes:
`cluster.TenantChannel`.
"""

from __future__ import annotations

from typing import Any

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
from .redis import redis_client, store_errors

TENANTS_KEY = "feed:tenants"
TENANTS_DELETED_KEY = "feed:tenants:deleted"
TENANTS_VERSION_KEY = "feed:tenants:version"
TENANTS_CHANGED_CHANNEL = "feed:tenants:changed"


class RedisTenants:
    def __init__(self, url: str) -> None:
        self._redis = redis_client(url)

    async def open(self) -> None:
        pass  # every node writes: Redis serialises the transactions

    async def read(self) -> TenantState:
        with store_errors():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(TENANTS_KEY)
                pipe.smembers(TENANTS_DELETED_KEY)
                records, deleted = await pipe.execute()
        return _state(records, deleted)

    async def read_one(self, tenant_id: str) -> Tenant | None:
        with store_errors():
            record = await self._redis.hget(TENANTS_KEY, tenant_id)
        return None if record is None else _decode(tenant_id, record)

    async def change(self, edit: Edit) -> Changed:
        with store_errors():
            async with self._redis.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        return await self._change(pipe, edit)
                    except WatchError:  # another writer changed the registry meanwhile
                        continue

    async def _change(self, pipe: Any, edit: Edit) -> Changed:
        await pipe.watch(TENANTS_KEY, TENANTS_DELETED_KEY)
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
                pipe.hdel(TENANTS_KEY, tenant_id)
            else:
                pipe.hset(TENANTS_KEY, tenant_id, encode_record(tenant))
        if gone := before.deleted - after.deleted:
            pipe.srem(TENANTS_DELETED_KEY, *gone)
        if new := after.deleted - before.deleted:
            pipe.sadd(TENANTS_DELETED_KEY, *new)
        pipe.incr(TENANTS_VERSION_KEY)
        for tenant_id in ids:
            pipe.publish(TENANTS_CHANGED_CHANNEL, tenant_id)
        await pipe.execute()
        return changed

    @staticmethod
    async def _part(pipe: Any, ids: tuple[str, ...]) -> TenantState:
        """The records and tombstones of `ids`, read while watching."""
        if not ids:
            return TenantState()
        records = await pipe.hmget(TENANTS_KEY, ids)
        deleted = await pipe.smismember(TENANTS_DELETED_KEY, ids)
        found = {i: r for i, r in zip(ids, records, strict=True) if r is not None}
        return TenantState(
            {tenant_id: _decode(tenant_id, record) for tenant_id, record in found.items()},
            {i for i, gone in zip(ids, deleted, strict=True) if gone},
        )

    async def version(self) -> int:
        with store_errors():
            return int(await self._redis.get(TENANTS_VERSION_KEY) or 0)

    async def close(self) -> None:
        await self._redis.aclose()


def _state(records: dict[str, str], deleted: set[str]) -> TenantState:
    return TenantState(
        {tenant_id: _decode(tenant_id, record) for tenant_id, record in records.items()},
        set(deleted),
    )


def _decode(tenant_id: str, record: bytes | str) -> Tenant:
    try:
        tenant = decode_record(record)
    except TenantRecordError as exc:
        raise TenantRecordError(f"{TENANTS_KEY} field {tenant_id!r}: {exc}") from None
    if tenant.id != tenant_id:
        raise TenantRecordError(f"{TENANTS_KEY} field {tenant_id!r} holds tenant {tenant.id!r}")
    return tenant
