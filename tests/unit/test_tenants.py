"""Tenant records, their JSON and stored forms, the state edits and the directory."""

from __future__ import annotations

import orjson
import pytest

from feedserver.errors import (
    ForbiddenTenant,
    KeyExists,
    NotFound,
    TenantExists,
    TenantSuspended,
    ValidationFailed,
)
from feedserver.keys import BOOTSTRAP_POLICY, TenantPolicy, generate_hs256_key, parse_public_jwk
from feedserver.store.tenant_file import parse_tenant_file
from feedserver.tenants import (
    MAX_ACTIVE_KEYS,
    MAX_KEYS,
    SCHEMA_VERSION,
    SUSPENDED,
    Edit,
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
        "keys": [],
        "policy": {"acceptOperatorKey": False, "tokensValidAfter": None},
    }
    assert Tenant.from_record(tenant.to_record()) == tenant
    stored = encode_record(tenant)
    assert orjson.loads(stored)["schemaVersion"] == SCHEMA_VERSION
    assert decode_record(stored) == tenant


EC_PUBLIC_JWK = {  # RFC 7515 A.3's P-256 key, public members only
    "kty": "EC",
    "crv": "P-256",
    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
}


def test_keys_and_policy_are_stored_with_the_secret_and_shown_without_it() -> None:
    hs = generate_hs256_key("k-hs", created_at=1.0)
    es = parse_public_jwk(EC_PUBLIC_JWK, "ES256", kid="k-es", created_at=2.0)
    tenant = Tenant(
        "acme", created_at=CREATED, keys=(hs, es), policy=TenantPolicy(True, 1700000000.0)
    )
    assert hs.secret is not None
    shown = tenant.to_json()
    assert hs.secret not in orjson.dumps(shown).decode()
    assert [k["kid"] for k in shown["keys"]] == ["k-hs", "k-es"]
    assert shown["keys"][1]["jwk"] == EC_PUBLIC_JWK
    assert shown["policy"] == {"acceptOperatorKey": True, "tokensValidAfter": 1700000000.0}
    stored = encode_record(tenant)
    assert hs.secret in stored.decode()
    again = decode_record(stored)
    assert again == tenant and again.keys[0].secret == hs.secret


@pytest.mark.parametrize("bootstrap", [True, False])
def test_a_record_of_schema_version_1_still_loads_and_keeps_accepting_the_operator_key(
    bootstrap: bool,
) -> None:
    # What the version before keys wrote; every tenant then accepted FEED_AUTH_SECRET's tokens.
    v1 = {
        "schemaVersion": 1,
        "id": "acme",
        "status": "active",
        "createdAt": CREATED,
        "bootstrap": bootstrap,
        "settings": {"historySize": 5},
    }
    tenant = decode_record(orjson.dumps(v1))
    assert (tenant.id, tenant.keys, tenant.settings.history_size) == ("acme", (), 5)
    assert tenant.policy == TenantPolicy(accept_operator_key=True)
    record = {k: v for k, v in v1.items() if k != "schemaVersion"}
    state = parse_tenant_file(
        orjson.dumps({"schemaVersion": 1, "tenants": [record], "deleted": []})
    )
    assert state.tenants["acme"] == tenant
    assert orjson.loads(encode_record(tenant))["schemaVersion"] == SCHEMA_VERSION == 2


def test_two_keys_under_one_kid_are_not_a_tenant() -> None:
    key = generate_hs256_key("twin")
    with pytest.raises(ValidationFailed):
        Tenant("acme", keys=(key, generate_hs256_key("twin")))
    with pytest.raises(TenantRecordError):
        decode_record(
            orjson.dumps(
                {"schemaVersion": 2, **Tenant("acme", keys=(key,)).to_record()}
                | {"keys": [key.to_record(), key.to_record()]}
            )
        )


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
        b'{"schemaVersion": 3, "id": "a", "status": "active", "createdAt": "x",'
        b' "bootstrap": false, "settings": {}}',
        b'{"schemaVersion": "1", "id": "a", "status": "active", "createdAt": "x",'
        b' "bootstrap": false, "settings": {}}',
        b'{"schemaVersion": 2, "id": "a", "status": "active", "createdAt": "x",'
        b' "bootstrap": false, "settings": {}}',
        b'{"schemaVersion": 1, "id": "a", "status": "active", "createdAt": "x",'
        b' "bootstrap": false, "settings": {}, "keys": [], "policy": {}}',
        b'{"schemaVersion": 2, "id": "a", "status": "active", "createdAt": "x",'
        b' "bootstrap": false, "settings": {}, "keys": {}, "policy": {}}',
        b'{"schemaVersion": 2, "id": "a", "status": "active", "createdAt": "x",'
        b' "bootstrap": false, "settings": {}, "keys": [{"kid": "k"}], "policy": {}}',
        b'{"schemaVersion": 2, "id": "a", "status": "active", "createdAt": "x",'
        b' "bootstrap": false, "settings": {}, "keys": [],'
        b' "policy": {"acceptOperatorKey": "yes"}}',
        b'{"schemaVersion": 1, "id": "a", "status": "gone", "createdAt": "x",'
        b' "bootstrap": false, "settings": {}}',
        b'{"schemaVersion": 1, "id": "a", "status": "active", "createdAt": "x",'
        b' "bootstrap": "no", "settings": {}}',
        b'{"schemaVersion": 1, "id": "a", "status": "active", "createdAt": "x",'
        b' "bootstrap": false, "settings": {"historySize": 0}}',
        b'{"schemaVersion": 1, "id": "a", "status": "active", "createdAt": "x",'
        b' "bootstrap": false, "settings": {}, "colour": "red"}',
    ],
    ids=[
        "json",
        "array",
        "no-version",
        "version-3",
        "version-text",
        "v2-without-keys",
        "v1-with-keys",
        "keys-object",
        "bad-key",
        "bad-policy",
        "status",
        "bootstrap",
        "setting",
        "extra",
    ],
)
def test_a_stored_record_this_version_cannot_read_is_refused(record: bytes) -> None:
    with pytest.raises(TenantRecordError):
        decode_record(record)


@pytest.mark.parametrize(
    "body",
    [
        {"tenants": [], "deleted": []},
        {"schemaVersion": 3, "tenants": [], "deleted": []},
        {"schemaVersion": 2, "tenants": {}, "deleted": []},
        {"schemaVersion": 2, "tenants": [], "deleted": ["Bad Id"]},
        {"schemaVersion": 2, "tenants": [Tenant("a").to_record()] * 2, "deleted": []},
        {"schemaVersion": 1, "tenants": [Tenant("a").to_record()], "deleted": []},
    ],
    ids=["no-version", "version-3", "tenants-object", "bad-tombstone", "twice", "v1-with-v2"],
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
    assert state.missing(["a", "b", "c"]) == ("c",)
    state.add_bootstrap(["a", "b", "c"], "2026-02-01T00:00:00.000Z")
    assert state.tenants["a"] == Tenant("a", created_at=CREATED)
    assert "b" not in state.tenants
    assert state.tenants["c"] == Tenant(
        "c", created_at="2026-02-01T00:00:00.000Z", bootstrap=True, policy=BOOTSTRAP_POLICY
    )
    assert state.tenants["c"].policy.accept_operator_key
    assert not Tenant("runtime").policy.accept_operator_key


def test_revising_or_removing_a_missing_tenant_is_not_found() -> None:
    state = TenantState()
    with pytest.raises(NotFound):
        state.revise("a", SUSPENDED, None)
    with pytest.raises(NotFound):
        state.remove("a")


def test_keys_are_added_revoked_and_kept_and_a_listed_kid_is_not_given_again() -> None:
    state = TenantState({"a": Tenant("a", created_at=CREATED)})
    first, second = generate_hs256_key("one"), generate_hs256_key("two")
    state.add_key("a", first)
    state.add_key("a", second)
    assert state.tenants["a"].keys == (first, second)
    state.revoke_key("a", "one")
    assert [(k.kid, k.status) for k in state.tenants["a"].keys] == [
        ("one", "revoked"),
        ("two", "active"),
    ]
    with pytest.raises(KeyExists):
        state.add_key("a", generate_hs256_key("one"))  # revoked, still taken
    with pytest.raises(NotFound) as missing:
        state.revoke_key("a", "three")
    assert missing.value.details == {"kid": "no such key"}
    with pytest.raises(NotFound):
        state.add_key("b", generate_hs256_key())


def test_active_keys_are_capped_and_the_oldest_revoked_go_past_the_total_cap() -> None:
    state = TenantState({"a": Tenant("a", created_at=CREATED)})
    for n in range(MAX_ACTIVE_KEYS):
        state.add_key("a", generate_hs256_key(f"k{n}"))
    with pytest.raises(KeyExists):
        state.add_key("a", generate_hs256_key("over"))
    for n in range(MAX_KEYS - MAX_ACTIVE_KEYS + 5):
        state.revoke_key("a", state.tenants["a"].keys[-1].kid)
        state.add_key("a", generate_hs256_key(f"r{n}"))
    keys = state.tenants["a"].keys
    assert len(keys) == MAX_KEYS
    assert sum(k.active for k in keys) == MAX_ACTIVE_KEYS
    assert keys[-1].kid == f"r{MAX_KEYS - MAX_ACTIVE_KEYS + 4}" and keys[-1].active


def test_the_cut_off_and_the_operator_key_policy_change_only_what_is_named() -> None:
    state = TenantState({"a": Tenant("a", created_at=CREATED, policy=BOOTSTRAP_POLICY)})
    state.cut_off("a", 200.0)
    state.cut_off("a", 100.0)  # never backwards: what 200 voided stays void
    assert state.tenants["a"].policy == TenantPolicy(True, 200.0)
    state.revise("a", None, None, accept_operator_key=False)
    assert state.tenants["a"].policy == TenantPolicy(False, 200.0)
    state.revise("a", SUSPENDED, None)
    assert state.tenants["a"].policy == TenantPolicy(False, 200.0)


def test_the_directory_hands_out_keys_and_policy_by_one_lookup() -> None:
    key = generate_hs256_key("k")
    directory = TenantDirectory([Tenant("a", keys=(key,), policy=BOOTSTRAP_POLICY)])
    assert directory.keys_of("a") == (key,) and directory.policy_of("a") == BOOTSTRAP_POLICY
    assert directory.keys_of("nobody") == () and directory.policy_of("nobody") is None


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


def test_an_edit_runs_on_the_part_of_its_ids_and_names_what_it_changed() -> None:
    whole = TenantState(
        {"a": Tenant("a", created_at=CREATED), "b": Tenant("b", created_at=CREATED)}, {"c"}
    )
    part = whole.part(["a", "c", "d"])
    assert part == TenantState({"a": whole.tenants["a"]}, {"c"})

    def swap(state: TenantState) -> None:
        state.remove("a")
        state.add(Tenant("c"))

    changed = part.edited(Edit(("a", "c"), swap))
    assert changed.ids == ["a", "c"]
    assert changed.state.tenants.keys() == {"c"} and changed.state.deleted == {"a"}
    assert part == TenantState({"a": whole.tenants["a"]}, {"c"})  # edited a copy
    whole.put(changed.state, ("a", "c"))
    assert whole.tenants.keys() == {"b", "c"} and whole.deleted == {"a"}


def test_an_edit_that_touches_an_id_it_does_not_name_is_refused() -> None:
    part = TenantState().part(["a"])
    with pytest.raises(ValueError, match="touched"):
        part.edited(Edit(("a",), lambda s: s.add(Tenant("b"))))


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
