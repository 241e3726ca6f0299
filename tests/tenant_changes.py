"""Awaiting a change of one tenant in a node's `TenantDirectory` (no polling).

created = next_change(node.app[TENANTS].directory, "acme")   # before the change
... create acme on another node ...
tenant = await asyncio.wait_for(created, 1)                   # None: deleted

And `HeldCallbacks`, a watcher that reloads only when the caller says so.
"""

from __future__ import annotations

import asyncio

from feedserver.cluster import TenantChannel
from feedserver.tenants import Reload, ReloadAll, Tenant, TenantDirectory, TenantRegistry


def next_change(directory: TenantDirectory, tenant_id: str) -> asyncio.Future[Tenant | None]:
    """Resolved with the record of the next change of `tenant_id` in `directory`."""
    future: asyncio.Future[Tenant | None] = asyncio.get_running_loop().create_future()

    async def listener(changed: str, tenant: Tenant | None) -> None:
        if changed == tenant_id and not future.done():
            future.set_result(tenant)

    directory.on_change(listener)
    return future


async def listening(registry: TenantRegistry) -> None:
    """Until the registry hears other nodes' changes (subscribed to the Redis channel)."""
    assert isinstance(registry.watcher, TenantChannel)
    await asyncio.wait_for(registry.watcher.listening.wait(), 10)


class HeldCallbacks:
    """A `TenantWatcher` that only keeps the callbacks it is given: its owner reloads."""

    reload: Reload
    reload_all: ReloadAll

    async def start(self, reload: Reload, reload_all: ReloadAll) -> None:
        self.reload, self.reload_all = reload, reload_all

    async def close(self) -> None:
        pass
