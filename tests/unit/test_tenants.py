"""Tenant records, their JSON and stored forms, the state edits and the directory."""

from __future__ import annotations

import orjson
import pytest

from feedserver.errors import (
    ForbiddenTenant,
    NotFound,
    TenantExists,
    TenantSuspended,
    ValidationFailed,
)
from feedserver.store.tenant_file import parse_tenant_file
from feedserver.tenants import (
    SCHEMA_VERSION,
    SUSPENDED,
    Tenant,
    TenantDirectory,
    TenantRecordError,
    TenantSettings,
    TenantState,
    decode_record,
    encode_record,
)

CREATED = "2026-01-20T10:30:00.000Z"


def test_a_tenant_round_trips_through_its_json_and_its_stored_form() -> None:
    tenant = Tenant(
        "acme-1",
        SUSPENDED,
        CREATED,
        bootstrap=True,
        settings=TenantSettings(max_events_per_sec=50, history_size=10),
    )
    assert tenant.to_json() == {
        "id": "acme-1",
        "status": "suspended",
        "createdAt": CREATED,
        "bootstrap": True,
        "settings": {
            "maxEventsPerSec": 50,
            "maxConnections": None,
            "historySize": 10,
            "maxMessageLength": None,
            "retentionSeconds": None,
        },
    }
    assert Tenant.from_json(tenant.to_json()) == tenant
    stored = encode_record(tenant)
    assert orjson.loads(stored)["schemaVersion"] == SCHEMA_VERSION
    assert decode_record(stored) == tenant


def test_a_new_tenant_is_active_with_the_server_settings_and_a_utc_creation_time() -> None:
    tenant = Tenant("acme")
    assert tenant.active and not tenant.bootstrap
    assert tenant.settings == TenantSettings()
    assert tenant.created_at.endswith("Z") and tenant.created_at[10] == "T"


@pytest.mark.parametrize("tenant_id", ["", "Acme", "-a", "a b", "x" * 65, "a.b", "_other"])
def test_a_tenant_id_must_match_the_id_rule(tenant_id: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        Tenant(tenant_id)
    assert refused.value.details == {"id": "must match ^[a-z0-9][a-z0-9_-]{0,63}$"}


def test_a_status_is_active_or_suspended() -> None:
    with pytest.raises(ValidationFailed):
        Tenant("acme", "paused")


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"max_events_per_sec": 0}, "settings.maxEventsPerSec"),
        ({"max_connections": 10**7 + 1}, "settings.maxConnections"),
        ({"history_size": True}, "settings.historySize"),
        ({"max_message_length": 5.0}, "settings.maxMessageLength"),
        ({"retention_seconds": "60"}, "settings.retentionSeconds"),
    ],
)
def test_each_setting_is_null_or_an_integer_in_its_range(
    settings: dict[str, object], field: str
) -> None:
    with pytest.raises(ValidationFailed) as refused:
        TenantSettings(**settings)  # type: ignore[arg-type]
    assert list(refused.value.details or {}) == [field]


def test_settings_from_json_refuse_unknown_names_and_take_absent_ones_as_defaults() -> None:
    assert TenantSettings.from_json({"historySize": 5}) == TenantSettings(history_size=5)
    with pytest.raises(ValidationFailed) as refused:
        TenantSettings.from_json({"historysize": 5})
    assert refused.value.details == {"settings.historysize": "unknown"}
    with pytest.raises(ValidationFailed):
        TenantSettings.from_json([])


def test_overriding_settings_changes_only_those_named_and_none_is_the_default() -> None:
    settings = TenantSettings(max_events_per_sec=5, history_size=7)
    changed = settings.overridden({"history_size": None, "max_connections": 3})
    assert changed == TenantSettings(max_events_per_sec=5, max_connections=3)
    with pytest.raises(ValidationFailed):
        settings.overridden({"colour": 1})


@pytest.mark.parametrize(
    "record",
    [
        b"not json",
        b"[]",
        b'{"id": "a", "status": "active", "createdAt": "x", "bootstrap": false, "settings": {}}',
        b'{"schemaVersion": 2, "id": "a", "status": "active", "createdAt": "x",'
        b' "bootstrap": false, "settings": {}}',
        b'{"schemaVersion": 1, "id": "a", "status": "gone", "createdAt": "x",'
        b' "bootstrap": false, "settings": {}}',
        b'{"schemaVersion": 1, "id": "a", "status": "active", "createdAt": "x",'
        b' "bootstrap": "no", "settings": {}}',
        b'{"schemaVersion": 1, "id": "a", "status": "active", "createdAt": "x",'
        b' "bootstrap": false, "settings": {"historySize": 0}}',
        b'{"schemaVersion": 1, "id": "a", "status": "active", "createdAt": "x",'
        b' "bootstrap": false, "settings": {}, "colour": "red"}',
    ],
    ids=["json", "array", "no-version", "version-2", "status", "bootstrap", "setting", "extra"],
)
def test_a_stored_record_this_version_cannot_read_is_refused(record: bytes) -> None:
    with pytest.raises(TenantRecordError):
        decode_record(record)


@pytest.mark.parametrize(
    "body",
    [
        {"tenants": [], "deleted": []},
        {"schemaVersion": 2, "tenants": [], "deleted": []},
        {"schemaVersion": 1, "tenants": {}, "deleted": []},
        {"schemaVersion": 1, "tenants": [], "deleted": ["Bad Id"]},
        {"schemaVersion": 1, "tenants": [Tenant("a").to_json()] * 2, "deleted": []},
    ],
    ids=["no-version", "version-2", "tenants-object", "bad-tombstone", "twice"],
)
def test_a_tenant_file_this_version_cannot_read_is_refused(body: dict[str, object]) -> None:
    with pytest.raises(TenantRecordError):
        parse_tenant_file(orjson.dumps(body))


# -- the state edits ------------------------------------------------------------------------


def test_adding_an_existing_id_is_tenant_exists_and_adding_clears_its_tombstone() -> None:
    state = TenantState()
    state.add(Tenant("a"))
    with pytest.raises(TenantExists):
        state.add(Tenant("a"))
    state.remove("a")
    assert state.deleted == {"a"}
    state.add(Tenant("a"))
    assert "a" in state.tenants and state.deleted == set()


def test_bootstrap_creates_what_is_missing_except_what_was_deleted() -> None:
    state = TenantState({"a": Tenant("a", created_at=CREATED)}, {"b"})
    state.add_bootstrap(["a", "b", "c"], "2026-02-01T00:00:00.000Z")
    assert state.tenants["a"] == Tenant("a", created_at=CREATED)
    assert "b" not in state.tenants
    assert state.tenants["c"] == Tenant("c", created_at="2026-02-01T00:00:00.000Z", bootstrap=True)


def test_revising_or_removing_a_missing_tenant_is_not_found() -> None:
    state = TenantState()
    with pytest.raises(NotFound):
        state.revise("a", SUSPENDED, None)
    with pytest.raises(NotFound):
        state.remove("a")


def test_changed_since_names_the_ids_whose_record_differs() -> None:
    before = TenantState(
        {"a": Tenant("a", created_at=CREATED), "b": Tenant("b", created_at=CREATED)}
    )
    after = before.copy()
    after.revise("a", SUSPENDED, None)
    after.remove("b")
    after.add(Tenant("c", created_at=CREATED))
    assert after.changed_since(before) == ["a", "b", "c"]
    assert before.changed_since(before.copy()) == []


# -- the directory --------------------------------------------------------------------------


async def test_the_directory_tells_listeners_of_changes_only() -> None:
    directory = TenantDirectory()
    heard: list[tuple[str, Tenant | None]] = []

    async def listener(tenant_id: str, tenant: Tenant | None) -> None:
        heard.append((tenant_id, tenant))

    directory.on_change(listener)
    a = Tenant("a", created_at=CREATED)
    await directory.apply("a", a)
    await directory.apply("a", a)  # the same record: no change
    await directory.apply("b", None)  # never there: no change
    suspended = Tenant("a", SUSPENDED, CREATED)
    await directory.apply("a", suspended)
    await directory.apply("a", None)
    assert heard == [("a", a), ("a", suspended), ("a", None)]
    assert "a" not in directory and len(directory) == 0


async def test_listeners_hear_of_a_new_tenant_in_order_and_of_a_deletion_in_reverse() -> None:
    directory = TenantDirectory()
    heard: list[str] = []

    def listener(name: str):  # type: ignore[no-untyped-def]
        async def hear(tenant_id: str, tenant: Tenant | None) -> None:
            heard.append(f"{name} {'deleted' if tenant is None else 'created'}")

        return hear

    for name in ("metrics", "feed", "relay"):
        directory.on_change(listener(name))
    await directory.apply("a", Tenant("a"))
    await directory.apply("a", None)
    assert heard == [
        "metrics created",
        "feed created",
        "relay created",
        "relay deleted",
        "feed deleted",
        "metrics deleted",
    ]


async def test_a_failing_listener_does_not_stop_the_others_or_the_change() -> None:
    directory = TenantDirectory()
    heard: list[str] = []

    async def fails(tenant_id: str, tenant: Tenant | None) -> None:
        raise RuntimeError("boom")

    async def hears(tenant_id: str, tenant: Tenant | None) -> None:
        heard.append(tenant_id)

    directory.on_change(fails)
    directory.on_change(hears)
    await directory.apply("a", Tenant("a"))
    assert heard == ["a"] and "a" in directory


async def test_replace_applies_the_whole_snapshot() -> None:
    directory = TenantDirectory([Tenant("a", created_at=CREATED), Tenant("b", created_at=CREATED)])
    c = Tenant("c", created_at=CREATED)
    await directory.replace({"b": Tenant("b", created_at=CREATED), "c": c})
    assert directory.ids() == ("b", "c")
    assert dict(directory.view) == {"b": Tenant("b", created_at=CREATED), "c": c}


async def test_active_refuses_unknown_and_suspended_tenants() -> None:
    directory = TenantDirectory([Tenant("a"), Tenant("s", SUSPENDED)])
    assert directory.active("a").id == "a"
    with pytest.raises(TenantSuspended) as suspended:
        directory.active("s")
    assert (suspended.value.status, suspended.value.code) == (403, "tenant_suspended")
    with pytest.raises(ForbiddenTenant):
        directory.active("nobody")
