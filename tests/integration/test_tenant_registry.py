"""One contract, three tenant backends: this process's memory, a file in FEED_DATA_DIR, and
Redis (one redis-server, or a real 3-master Redis Cluster); then what only the file (one
writer, atomic writes) and Redis (every node follows) add."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis, RedisCluster

from feedserver.cluster import TenantChannel
from feedserver.errors import KeyExists, NotFound, TenantExists, ValidationFailed
from feedserver.keys import BOOTSTRAP_POLICY, TenantPolicy, generate_hs256_key
from feedserver.store.redis import redis_client, store_client
from feedserver.store.redis_tenants import (
    TENANTS_CHANGED_CHANNEL,
    TENANTS_KEY,
    TENANTS_VERSION_KEY,
    RedisTenants,
)
from feedserver.store.tenant_file import DataDirLocked, HeldTenants, TenantFile
from feedserver.tenants import (
    SUSPENDED,
    Edit,
    Tenant,
    TenantBackend,
    TenantDirectory,
    TenantRecordError,
    TenantRegistry,
    TenantSettings,
    TenantWatcher,
    encode_record,
)
from tests.redis_cluster import RedisClusterServers
from tests.redis_server import RedisServer, running_redis
from tests.tenant_changes import HeldCallbacks, listening, next_change

# Opens a started registry over the fixture's backing state, with these bootstrap ids.
RegistryFactory = Callable[..., Awaitable[TenantRegistry]]
CHANGE_WITHIN_S = 1.0


@pytest.fixture(params=["memory", "file", "redis", "redis-cluster"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def open_registry(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[RegistryFactory]:
    opened: list[TenantRegistry] = []
    async with contextlib.AsyncExitStack() as stack:
        url = None
        if kind == "redis":
            redis = await stack.enter_async_context(running_redis(tmp_path, appendonly=True))
            url = redis.url
        elif kind == "redis-cluster":
            url = request.getfixturevalue("redis_cluster").url

        async def open_one(*bootstrap: str, resync_s: float = 5.0) -> TenantRegistry:
            backend: TenantBackend
            watcher = None
            if url is not None:
                backend = RedisTenants(url)
                watcher = watcher_of(url, backend, resync_s)
            elif kind == "file":
                backend = TenantFile(tmp_path / "data")
            else:
                backend = HeldTenants()
            registry = TenantRegistry(
                backend, TenantDirectory(), bootstrap=bootstrap, watcher=watcher
            )
            await registry.start()
            opened.append(registry)
            return registry

        yield open_one
        for registry in opened:
            await registry.close()


@pytest.fixture
async def registry(open_registry: RegistryFactory) -> TenantRegistry:
    return await open_registry("tenant_a", "tenant_b")


async def reopen(
    open_registry: RegistryFactory, old: TenantRegistry, *bootstrap: str
) -> TenantRegistry:
    """The registry of a restarted node: the old one closed, a new one over the same state."""
    await old.close()
    return await open_registry(*bootstrap)


async def test_the_bootstrap_tenants_exist_from_the_start(registry: TenantRegistry) -> None:
    assert [t.id for t in await registry.list()] == ["tenant_a", "tenant_b"]
    assert all(t.bootstrap and t.active for t in await registry.list())
    assert registry.directory.ids() == ("tenant_a", "tenant_b")


async def test_a_created_tenant_is_listed_and_in_the_directory(registry: TenantRegistry) -> None:
    created = await registry.create("acme", TenantSettings(history_size=10))
    assert (created.id, created.status, created.bootstrap) == ("acme", "active", False)
    assert await registry.get("acme") == created
    assert [t.id for t in await registry.list()] == ["acme", "tenant_a", "tenant_b"]
    assert registry.directory.get("acme") == created


async def test_creating_an_existing_id_is_tenant_exists_and_changes_nothing(
    registry: TenantRegistry,
) -> None:
    first = await registry.create("acme")
    with pytest.raises(TenantExists):
        await registry.create("acme", TenantSettings(history_size=10))
    assert await registry.get("acme") == first == registry.directory.get("acme")


async def test_two_creates_of_one_id_at_once_make_one_tenant(registry: TenantRegistry) -> None:
    results = await asyncio.gather(
        registry.create("acme"), registry.create("acme"), return_exceptions=True
    )
    assert sorted(type(r).__name__ for r in results) == ["Tenant", "TenantExists"]


async def test_changes_of_other_tenants_at_once_are_all_kept(registry: TenantRegistry) -> None:
    """Straight to the backend, past the registry's lock: each change edits the state the
    one before it left (the file's writer, too, while another change is being written)."""
    ids = [f"t{n}" for n in range(10)]
    await asyncio.gather(*(registry.backend.change(creating(i)) for i in ids))
    assert [t.id for t in await registry.list()] == sorted([*ids, "tenant_a", "tenant_b"])


def creating(tenant_id: str) -> Edit:
    return Edit((tenant_id,), lambda state: state.add(Tenant(tenant_id)))


async def test_an_edit_touching_an_id_it_does_not_name_changes_nothing(
    registry: TenantRegistry,
) -> None:
    with pytest.raises(ValueError):
        await registry.backend.change(Edit(("acme",), lambda s: s.add(Tenant("globex"))))
    assert [t.id for t in await registry.list()] == ["tenant_a", "tenant_b"]


async def test_a_malformed_id_is_refused(registry: TenantRegistry) -> None:
    with pytest.raises(ValidationFailed):
        await registry.create("Not An Id")
    assert len(await registry.list()) == 2


async def test_update_changes_the_status_and_only_the_settings_named(
    registry: TenantRegistry,
) -> None:
    await registry.create("acme", TenantSettings(history_size=10, max_connections=5))
    changed = await registry.update("acme", status=SUSPENDED, settings={"history_size": None})
    assert changed.status == SUSPENDED
    assert changed.settings == TenantSettings(max_connections=5)
    assert await registry.get("acme") == changed == registry.directory.get("acme")
    resumed = await registry.update("acme", status="active")
    assert resumed.active and resumed.settings == changed.settings


async def test_an_unknown_tenant_is_not_found(registry: TenantRegistry) -> None:
    with pytest.raises(NotFound):
        await registry.get("nobody")
    with pytest.raises(NotFound):
        await registry.update("nobody", status=SUSPENDED)
    with pytest.raises(NotFound):
        await registry.delete("nobody")


async def test_a_deleted_tenant_is_gone_and_its_listeners_hear_it(
    registry: TenantRegistry,
) -> None:
    heard: list[tuple[str, Tenant | None]] = []

    async def listener(tenant_id: str, tenant: Tenant | None) -> None:
        heard.append((tenant_id, tenant))

    registry.directory.on_change(listener)
    await registry.delete("tenant_a")
    assert heard == [("tenant_a", None)]
    assert "tenant_a" not in registry.directory
    with pytest.raises(NotFound):
        await registry.get("tenant_a")
    again = await registry.create("tenant_a")
    assert not again.bootstrap and registry.directory.get("tenant_a") == again


@pytest.mark.parametrize("kind", ["file", "redis", "redis-cluster"])  # those that keep it
async def test_the_registry_survives_a_restart_and_a_deleted_bootstrap_id_stays_deleted(
    kind: str, open_registry: RegistryFactory, registry: TenantRegistry
) -> None:
    acme = await registry.create("acme", TenantSettings(max_events_per_sec=5))
    await registry.update("tenant_b", status=SUSPENDED)
    await registry.delete("tenant_a")
    restarted = await reopen(open_registry, registry, "tenant_a", "tenant_b", "tenant_c")
    assert [t.id for t in await restarted.list()] == ["acme", "tenant_b", "tenant_c"]
    assert await restarted.get("acme") == acme
    assert (await restarted.get("tenant_b")).status == SUSPENDED
    assert (await restarted.get("tenant_c")).bootstrap
    assert restarted.directory.ids() == ("acme", "tenant_b", "tenant_c")


async def test_keys_and_the_policy_are_kept_by_every_backend_secret_included(
    registry: TenantRegistry,
) -> None:
    await registry.create("acme")
    key = generate_hs256_key("k1")
    added = await registry.add_key("acme", key)
    assert added.keys == (key,) and not added.policy.accept_operator_key
    assert (await registry.get("acme")).keys[0].secret == key.secret
    assert registry.directory.keys_of("acme") == (key,)
    with pytest.raises(KeyExists):
        await registry.add_key("acme", generate_hs256_key("k1"))
    revoked = await registry.revoke_key("acme", "k1")
    assert [k.status for k in revoked.keys] == ["revoked"]
    with pytest.raises(NotFound):
        await registry.revoke_key("acme", "k2")
    cut = await registry.revoke_tokens("acme", 1700000000.0)
    assert cut.policy.tokens_valid_after == 1700000000.0
    opened = await registry.update("acme", accept_operator_key=True)
    assert opened.policy == TenantPolicy(True, 1700000000.0)
    assert await registry.get("acme") == opened == registry.directory.get("acme")
    assert registry.directory.policy_of("tenant_a") == BOOTSTRAP_POLICY


@pytest.mark.parametrize("kind", ["file", "redis", "redis-cluster"])
async def test_keys_survive_a_restart(
    kind: str, open_registry: RegistryFactory, registry: TenantRegistry
) -> None:
    await registry.create("acme")
    key = generate_hs256_key()
    await registry.add_key("acme", key)
    restarted = await reopen(open_registry, registry, "tenant_a", "tenant_b")
    [kept] = restarted.directory.keys_of("acme")
    assert kept == key and kept.secret == key.secret


@pytest.mark.parametrize("kind", ["memory"])  # without FEED_DATA_DIR: the process only
async def test_without_a_data_dir_a_restart_starts_from_the_bootstrap(
    kind: str, open_registry: RegistryFactory, registry: TenantRegistry
) -> None:
    await registry.create("acme")
    await registry.delete("tenant_a")
    restarted = await reopen(open_registry, registry, "tenant_a", "tenant_b")
    assert [t.id for t in await restarted.list()] == ["tenant_a", "tenant_b"]


# -- the file: one writer, atomic writes, a corrupt file stops the start -------------------


async def test_a_second_writer_of_a_data_dir_is_refused_until_the_first_closes(
    tmp_path: Path,
) -> None:
    first = TenantFile(tmp_path)
    await first.open()
    second = TenantFile(tmp_path)
    with pytest.raises(DataDirLocked):
        await second.open()
    assert (await second.read()).tenants == {}  # reading needs no lock
    await first.close()
    await second.open()
    await second.close()


async def test_the_file_is_replaced_whole_and_no_temporary_file_is_left(tmp_path: Path) -> None:
    registry = TenantRegistry(TenantFile(tmp_path), TenantDirectory(), bootstrap=("tenant_a",))
    await registry.start()
    for n in range(5):
        await registry.create(f"t{n}")
    await registry.close()
    assert names_in(tmp_path) == ["tenants.json", "tenants.lock"]
    body = orjson.loads((tmp_path / "tenants.json").read_bytes())
    assert body["schemaVersion"] == 2 and body["deleted"] == []
    assert [t["id"] for t in body["tenants"]] == ["t0", "t1", "t2", "t3", "t4", "tenant_a"]
    # It holds the tenants' HS256 secrets: the server's user alone reads it.
    assert (tmp_path / "tenants.json").stat().st_mode & 0o777 == 0o600


async def test_a_file_of_the_version_before_keys_is_read_and_rewritten_at_the_next_change(
    tmp_path: Path,
) -> None:
    v1_tenant = {
        "id": "acme",
        "status": "active",
        "createdAt": "2026-01-20T10:30:00.000Z",
        "bootstrap": False,
        "settings": {"historySize": 5},
    }
    v1 = {"schemaVersion": 1, "tenants": [v1_tenant], "deleted": ["gone"]}
    (tmp_path / "tenants.json").write_bytes(orjson.dumps(v1))
    registry = TenantRegistry(TenantFile(tmp_path), TenantDirectory())
    await registry.start()
    try:
        acme = registry.directory.get("acme")
        assert acme is not None and acme.settings.history_size == 5
        assert acme.keys == () and acme.policy.accept_operator_key
        await registry.add_key("acme", generate_hs256_key("k1"))
    finally:
        await registry.close()
    body = orjson.loads((tmp_path / "tenants.json").read_bytes())
    assert body["schemaVersion"] == 2 and body["deleted"] == ["gone"]
    [stored] = body["tenants"]
    assert [k["kid"] for k in stored["keys"]] == ["k1"] and stored["keys"][0]["secret"]
    assert stored["policy"] == {"acceptOperatorKey": True, "tokensValidAfter": None}


async def test_the_writer_reads_nothing_back_at_a_change(tmp_path: Path) -> None:
    """The process holding the lock is the file's only writer: a change edits what it last
    wrote and decodes none of the other tenants (here: a file garbled behind its back)."""
    registry = TenantRegistry(TenantFile(tmp_path), TenantDirectory(), bootstrap=("tenant_a",))
    await registry.start()
    try:
        (tmp_path / "tenants.json").write_bytes(b"{not json")
        await registry.create("acme")
        assert registry.directory.ids() == ("tenant_a", "acme")
    finally:
        await registry.close()
    body = orjson.loads((tmp_path / "tenants.json").read_bytes())
    assert [t["id"] for t in body["tenants"]] == ["acme", "tenant_a"]


def names_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.mark.parametrize(
    "content",
    [b"{not json", b'{"schemaVersion": 9, "tenants": [], "deleted": []}'],
    ids=["not-json", "newer-version"],
)
async def test_a_corrupt_file_stops_the_start_naming_the_file(
    tmp_path: Path, content: bytes
) -> None:
    (tmp_path / "tenants.json").write_bytes(content)
    registry = TenantRegistry(TenantFile(tmp_path), TenantDirectory(), bootstrap=("tenant_a",))
    with pytest.raises(TenantRecordError) as refused:
        await registry.start()
    assert str(tmp_path / "tenants.json") in str(refused.value)
    assert (tmp_path / "tenants.json").read_bytes() == content  # left for the operator


# -- Redis: every node follows the registry -------------------------------------------------


def watcher_of(url: str, backend: RedisTenants, resync_s: float) -> TenantChannel:
    """How a node follows the registry (with SSUBSCRIBE on a cluster)."""
    return TenantChannel(url, backend, resync_s=resync_s)


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    async with running_redis(tmp_path, appendonly=True) as server:
        yield server


@contextlib.asynccontextmanager
async def node(
    url: str, *, resync_s: float = 5.0, watcher: TenantWatcher | None = None
) -> AsyncIterator[TenantRegistry]:
    backend = RedisTenants(url)
    registry = TenantRegistry(
        backend,
        TenantDirectory(),
        bootstrap=("tenant_a",),
        watcher=watcher or watcher_of(url, backend, resync_s),
    )
    await registry.start()
    try:
        yield registry
    finally:
        await registry.close()


async def test_every_change_on_one_node_reaches_the_others_within_a_second(
    redis_url: str,
) -> None:
    async with node(redis_url) as one, node(redis_url) as two:
        await listening(two)
        for change, expected in (
            (one.create("acme"), "active"),
            (one.update("acme", status=SUSPENDED), "suspended"),
        ):
            seen = next_change(two.directory, "acme")
            made = await change
            tenant = await asyncio.wait_for(seen, CHANGE_WITHIN_S)
            assert tenant == made and tenant is not None and tenant.status == expected
        seen = next_change(two.directory, "acme")
        await one.delete("acme")
        assert await asyncio.wait_for(seen, CHANGE_WITHIN_S) is None
        assert "acme" not in two.directory


async def test_two_nodes_creating_one_id_at_once_make_one_tenant(redis_url: str) -> None:
    async with node(redis_url) as one, node(redis_url) as two:
        results = await asyncio.gather(
            *(registry.create("acme") for registry in (one, two) for _ in range(5)),
            return_exceptions=True,
        )
        assert sorted(type(r).__name__ for r in results) == ["Tenant"] + ["TenantExists"] * 9


async def test_a_change_reads_only_the_tenants_it_names(redis_url: str) -> None:
    """A change reads its own ids' fields, not the whole hash: a record this version cannot
    read (written by a newer one, say) does not stop the others' administration."""
    async with node(redis_url) as one:
        assert isinstance(one.backend, RedisTenants)
        client = store_client(redis_url)
        await client.hset(one.backend.keys.tenants, "from_newer", b'{"schemaVersion": 9}')
        await client.aclose()
        created = await one.create("acme")
        suspended = await one.update("tenant_a", status=SUSPENDED)
        assert one.directory.get("acme") == created
        assert one.directory.get("tenant_a") == suspended


async def test_a_reload_after_changes_reads_only_what_they_changed(redis_url: str) -> None:
    """What a node's watcher does when the version moved (after every change, its own
    too): with the registry's change log, a few reads, not the whole registry (here
    unreadable as a whole: one record is of a newer version)."""
    watcher = HeldCallbacks()
    async with node(redis_url) as one, node(redis_url, watcher=watcher) as two:
        assert isinstance(one.backend, RedisTenants)
        client = store_client(redis_url)
        await client.hset(one.backend.keys.tenants, "from_newer", b'{"schemaVersion": 9}')
        await client.aclose()
        await one.create("acme")
        suspended = await one.update("tenant_a", status=SUSPENDED)
        assert await watcher.reload_all() == await one.backend.version()
        assert two.directory.get("acme") == await one.get("acme")
        assert two.directory.get("tenant_a") == suspended


async def test_a_reload_after_redis_lost_its_data_reads_everything_again(
    redis_url: str,
) -> None:
    """The log entry a node last read is gone with the data (a new log has new entry ids),
    so the next reload bootstraps and reads the whole registry, not the new log."""
    watcher = HeldCallbacks()
    async with node(redis_url) as one, node(redis_url, watcher=watcher) as two:
        await one.create("acme")
        await watcher.reload_all()
        assert two.directory.ids() == ("tenant_a", "acme")
        client = store_client(redis_url)
        await client.flushall()
        await client.aclose()
        await one.create("globex")
        assert await watcher.reload_all() == await one.backend.version()
        assert sorted(two.directory.ids()) == ["globex", "tenant_a"]


async def test_a_missed_notification_is_healed_by_the_periodic_resync(
    redis: RedisServer,
) -> None:
    async with node(redis.url, resync_s=0.2) as one:
        await listening(one)
        seen = next_change(one.directory, "quiet")
        # Written as a change is, but without its notification.
        client = redis_client(redis.url)
        await client.hset(TENANTS_KEY, "quiet", encode_record(Tenant("quiet")))
        await client.incr(TENANTS_VERSION_KEY)
        await client.aclose()
        tenant = await asyncio.wait_for(seen, 5)
        assert tenant is not None and tenant.id == "quiet"


async def test_after_a_redis_restart_a_node_hears_changes_again(redis: RedisServer) -> None:
    async with node(redis.url) as one, node(redis.url) as two:
        await listening(two)
        await redis.restart()
        await listening(two)  # subscribed again, and reloaded the registry
        seen = next_change(two.directory, "acme")
        await one.create("acme")
        assert await asyncio.wait_for(seen, CHANGE_WITHIN_S) is not None


async def test_on_one_redis_server_the_registry_keeps_its_key_names(redis: RedisServer) -> None:
    """What a deployment on one redis-server stored before the cluster layout existed is
    what it reads: the same keys, notices with PUBLISH on `feed:tenants:changed`."""
    client = redis_client(redis.url)
    await client.hset("feed:tenants", "acme", encode_record(Tenant("acme")))
    await client.sadd("feed:tenants:deleted", "tenant_a")  # a deleted bootstrap id
    await client.aclose()
    async with node(redis.url) as one:
        assert isinstance(one.backend, RedisTenants)
        assert not one.backend.sharded
        assert one.backend.changed_channel == TENANTS_CHANGED_CHANNEL == "feed:tenants:changed"
        assert one.directory.ids() == ("acme",)


async def test_on_a_cluster_each_change_is_spublished_to_the_channels_slot(
    redis_cluster: RedisClusterServers,
) -> None:
    async with node(redis_cluster.url) as one:
        assert isinstance(one.backend, RedisTenants) and one.backend.sharded
        channel = one.backend.changed_channel
        host, port = await slot_owner(redis_cluster.url, channel)
        subscriber = Redis(host=host, port=port, decode_responses=True)
        pubsub: Any = subscriber.pubsub()  # redis-py's PubSub is partly untyped
        try:
            await pubsub.ssubscribe(channel)
            assert (await next_message(pubsub))["type"] == "ssubscribe"  # before any change
            await one.create("acme")
            await one.update("acme", status=SUSPENDED)
            heard = [await next_message(pubsub) for _ in range(2)]
        finally:
            await pubsub.aclose()
            await subscriber.aclose()
    assert [(m["type"], m["channel"], m["data"]) for m in heard] == [
        ("smessage", channel, "acme"),
        ("smessage", channel, "acme"),
    ]


async def slot_owner(url: str, key: str) -> tuple[str, int]:
    """The address of the master that holds `key`'s slot."""
    client = store_client(url)
    assert isinstance(client, RedisCluster)
    try:
        await client.initialize()
        owner = client.get_node_from_key(key)
    finally:
        await client.aclose()
    assert owner is not None
    return str(owner.host), int(owner.port)


async def next_message(pubsub: Any) -> dict[str, Any]:
    """The next message `pubsub` receives, within CHANGE_WITHIN_S."""
    async with asyncio.timeout(CHANGE_WITHIN_S):
        while (message := await pubsub.get_message(timeout=CHANGE_WITHIN_S)) is None:
            continue
    assert isinstance(message, dict)
    return message
