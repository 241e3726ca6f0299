"""Tenants as records: which exist, in which state, with which overrides; the registry that
keeps them and the directory every request reads. No aiohttp, no socketio here.

- `Tenant` / `TenantSettings`: one record, with its API form (`to_json`: never a secret),
  its stored form (`to_record`, `from_record`: HS256 secrets included, so that every node
  verifies) and the bytes of that (`encode_record`, `decode_record`, with `schemaVersion`).
  A tenant's signing keys and token policy are part of its record (`keys.py`).
- `TenantDirectory`: this process's snapshot, id -> Tenant. Hot paths read it with one
  dict lookup and never wait for I/O; listeners hear every change (`on_change`).
- `TenantRegistry`: create, update, delete, get, list over a `TenantBackend` (a file in
  `FEED_DATA_DIR`, this process's memory, or Redis: `store/tenant_file.py`,
  `store/redis_tenants.py`), applying each change to the directory. `FEED_TENANTS` is the
  bootstrap: those ids are created when missing, unless they were deleted (a tombstone),
  so that an operator's deletion survives the next start.

Why a directory and not the backend on each request: a publish costs tens of
microseconds, a Redis round trip or a file read costs more than the whole publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol

import orjson

from .config import MAX_RETENTION_SECONDS, TENANT_RE
from .errors import (
    FeedError,
    ForbiddenTenant,
    KeyExists,
    NotFound,
    StoreUnavailable,
    TenantExists,
    TenantSuspended,
    ValidationFailed,
)
from .events import utc_timestamp
from .keys import BOOTSTRAP_POLICY, SigningKey, TenantPolicy

log = logging.getLogger(__name__)

# 2: records carry `keys` and `policy`. Version 1 records (without them) are still read:
# under version 1 every tenant accepted the operator key, so such a record keeps doing so.
SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS = (1, SCHEMA_VERSION)
# Active keys at once: enough for a rotation with overlap (and a spare), few enough that
# a token's kid lookup stays a short scan. Revoked keys are kept (their kids are not given
# again while listed), the oldest dropped past MAX_KEYS: a revoked key verifies nothing, kept
# or not, and a kid given again names a key with other material.
MAX_ACTIVE_KEYS = 10
MAX_KEYS = 50
ACTIVE = "active"
SUSPENDED = "suspended"
STATUSES = (ACTIVE, SUSPENDED)
TENANT_ID_RULE = f"must match {TENANT_RE.pattern}"


class SettingRule(NamedTuple):
    json_name: str
    lo: int
    hi: int


# Each per-tenant override: its JSON name and the values it may take (None: the server's
# own setting). The ranges are those of the matching FEED_* variables.
SETTING_RULES: dict[str, SettingRule] = {
    "max_events_per_sec": SettingRule("maxEventsPerSec", 1, 10**9),
    "max_connections": SettingRule("maxConnections", 1, 10**7),
    "history_size": SettingRule("historySize", 1, 1_000_000),
    "max_message_length": SettingRule("maxMessageLength", 1, 100_000),
    "retention_seconds": SettingRule("retentionSeconds", 1, MAX_RETENTION_SECONDS),
}
_BY_JSON_NAME = {rule.json_name: name for name, rule in SETTING_RULES.items()}


class TenantRecordError(ValueError):
    """A stored tenant record (file or Redis) that this version cannot read."""


@dataclass(frozen=True, slots=True)
class TenantSettings:
    """Per-tenant overrides; None means the server's setting (FEED_*)."""

    max_events_per_sec: int | None = None
    max_connections: int | None = None
    history_size: int | None = None
    max_message_length: int | None = None
    retention_seconds: int | None = None

    def __post_init__(self) -> None:
        problems = {
            f"settings.{rule.json_name}": f"must be null or an integer in {rule.lo}..{rule.hi}"
            for name, rule in SETTING_RULES.items()
            if not _allowed(getattr(self, name), rule)
        }
        if problems:
            raise ValidationFailed("Invalid tenant settings", problems)

    def to_json(self) -> dict[str, int | None]:
        return {rule.json_name: getattr(self, name) for name, rule in SETTING_RULES.items()}

    @classmethod
    def from_json(cls, data: object) -> TenantSettings:
        """From `{jsonName: int | null}`; absent names are None."""
        if not isinstance(data, dict):
            raise ValidationFailed("Invalid tenant settings", {"settings": "must be an object"})
        return cls().overridden({_setting_name(key): value for key, value in data.items()})

    def overridden(self, changes: Mapping[str, int | None]) -> TenantSettings:
        """These settings with `changes` (field name -> value; None: back to the default)."""
        unknown = [name for name in changes if name not in SETTING_RULES]
        if unknown:
            raise ValidationFailed(
                "Unknown tenant settings", {f"settings.{name}": "unknown" for name in unknown}
            )
        return replace(self, **changes)


def _allowed(value: object, rule: SettingRule) -> bool:
    if value is None:
        return True
    return type(value) is int and rule.lo <= value <= rule.hi


def _setting_name(json_name: object) -> str:
    name = _BY_JSON_NAME.get(json_name) if isinstance(json_name, str) else None
    if name is None:
        raise ValidationFailed("Unknown tenant settings", {f"settings.{json_name}": "unknown"})
    return name


_V1_RECORD_KEYS = frozenset({"id", "status", "createdAt", "bootstrap", "settings"})
_RECORD_KEYS = _V1_RECORD_KEYS | {"keys", "policy"}
# What a version 1 record's tenant accepted: every tenant then took the operator key.
_V1_POLICY = TenantPolicy(accept_operator_key=True)


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    status: str = ACTIVE  # ACTIVE | SUSPENDED
    created_at: str = field(default_factory=utc_timestamp)  # ISO 8601 UTC, as events
    bootstrap: bool = False  # created from FEED_TENANTS
    settings: TenantSettings = field(default_factory=TenantSettings)
    # Its own signing keys, active and revoked, oldest first (keys.SigningKey).
    keys: tuple[SigningKey, ...] = ()
    # Which tokens count: a runtime tenant's own keys only; FEED_TENANTS: BOOTSTRAP_POLICY.
    policy: TenantPolicy = field(default_factory=TenantPolicy)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not TENANT_RE.match(self.id):
            raise ValidationFailed("Invalid tenant id", {"id": TENANT_ID_RULE})
        if self.status not in STATUSES:
            raise ValidationFailed("Invalid status", {"status": "must be active or suspended"})
        kids = [key.kid for key in self.keys]
        if len(set(kids)) != len(kids):
            raise ValidationFailed("Invalid keys", {"keys": "two keys have one kid"})

    @property
    def active(self) -> bool:
        return self.status == ACTIVE

    def key(self, kid: str) -> SigningKey:
        """The key `kid` of this tenant, active or revoked; `NotFound` without one."""
        for key in self.keys:
            if key.kid == kid:
                return key
        raise NotFound(f"Tenant {self.id} has no key {kid}", {"kid": "no such key"})

    def to_json(self) -> dict[str, Any]:
        """What the admin API and the CLI show: the keys without their secrets."""
        return self._json([key.to_json() for key in self.keys])

    def to_record(self) -> dict[str, Any]:
        """What a backend stores: HS256 secrets included, so that every node verifies."""
        return self._json([key.to_record() for key in self.keys])

    def _json(self, keys: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "createdAt": self.created_at,
            "bootstrap": self.bootstrap,
            "settings": self.settings.to_json(),
            "keys": keys,
            "policy": self.policy.to_json(),
        }

    @classmethod
    def from_record(cls, data: object, version: int = SCHEMA_VERSION) -> Tenant:
        """The inverse of `to_record` (of `version`, one of READABLE_SCHEMA_VERSIONS);
        TenantRecordError for anything else."""
        expected = _V1_RECORD_KEYS if version == 1 else _RECORD_KEYS
        if not isinstance(data, dict) or data.keys() != expected:
            raise TenantRecordError(f"a tenant record has exactly {', '.join(sorted(expected))}")
        if not isinstance(data["createdAt"], str) or not isinstance(data["bootstrap"], bool):
            raise TenantRecordError(f"tenant {data['id']!r}: bad createdAt or bootstrap")
        try:
            keys: tuple[SigningKey, ...] = ()
            policy = _V1_POLICY
            if version != 1:
                if not isinstance(data["keys"], list) or not isinstance(data["policy"], dict):
                    raise TenantRecordError(f"tenant {data['id']!r}: bad keys or policy")
                keys = tuple(SigningKey.from_record(_record(k)) for k in data["keys"])
                policy = TenantPolicy.from_json(data["policy"])
            return cls(
                data["id"],
                data["status"],
                data["createdAt"],
                data["bootstrap"],
                TenantSettings.from_json(data["settings"]),
                keys,
                policy,
            )
        except FeedError as exc:
            raise TenantRecordError(
                f"tenant {data['id']!r}: {exc.details or exc.message}"
            ) from None


def _record(data: object) -> Mapping[str, Any]:
    if not isinstance(data, dict):
        raise ValidationFailed("Invalid keys", {"keys": "each key is a JSON object"})
    return data


def encode_record(tenant: Tenant) -> bytes:
    """The stored form of one tenant: its JSON with the schema version."""
    return orjson.dumps({"schemaVersion": SCHEMA_VERSION, **tenant.to_record()})


def decode_record(data: bytes | str) -> Tenant:
    """The inverse of `encode_record`; TenantRecordError for anything else."""
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise TenantRecordError(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise TenantRecordError("a tenant record is a JSON object")
    version = check_schema_version(body.pop("schemaVersion", None))
    return Tenant.from_record(body, version)


def check_schema_version(version: object) -> int:
    """`version` if this feedserver reads records of it; TenantRecordError otherwise."""
    if type(version) is not int or version not in READABLE_SCHEMA_VERSIONS:
        readable = " or ".join(str(v) for v in READABLE_SCHEMA_VERSIONS)
        raise TenantRecordError(
            f"schemaVersion {version!r} is not {readable}, the ones this feedserver reads"
        )
    return version


# -- the state a backend stores, and the edits the registry makes to it ---------------------


@dataclass(slots=True)
class TenantState:
    """Everything a backend stores: the tenants and the ids deleted at runtime."""

    tenants: dict[str, Tenant] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)  # tombstones: never bootstrapped again

    def copy(self) -> TenantState:
        return TenantState(dict(self.tenants), set(self.deleted))

    def part(self, ids: Iterable[str]) -> TenantState:
        """The records and tombstones of `ids` only: what an edit of them reads."""
        return TenantState(
            {i: self.tenants[i] for i in ids if i in self.tenants},
            {i for i in ids if i in self.deleted},
        )

    def put(self, part: TenantState, ids: Iterable[str]) -> None:
        """Make `part`'s records and tombstones of `ids` this state's."""
        for tenant_id in ids:
            if (tenant := part.tenants.get(tenant_id)) is None:
                self.tenants.pop(tenant_id, None)
            else:
                self.tenants[tenant_id] = tenant
            if tenant_id in part.deleted:
                self.deleted.add(tenant_id)
            else:
                self.deleted.discard(tenant_id)

    def edited(self, edit: Edit) -> Changed:
        """`edit` run on a copy of this state, the `part` of `edit.ids` a backend read; what
        the edit adds beyond its ids is refused (the backend would not store it)."""
        after = self.copy()
        edit.run(after)
        if stray := (after.tenants.keys() | after.deleted) - set(edit.ids):
            raise ValueError(f"an edit of {list(edit.ids)} touched {sorted(stray)}")
        return Changed(after, after.changed_since(self))

    def changed_since(self, before: TenantState) -> list[str]:
        """The ids whose record differs between `before` and this state."""
        ids = before.tenants.keys() | self.tenants.keys()
        return sorted(i for i in ids if before.tenants.get(i) != self.tenants.get(i))

    def add(self, tenant: Tenant) -> None:
        if tenant.id in self.tenants:
            raise TenantExists(f"Tenant {tenant.id} exists", {"id": "already exists"})
        self.tenants[tenant.id] = tenant
        self.deleted.discard(tenant.id)

    def missing(self, bootstrap: Iterable[str]) -> tuple[str, ...]:
        """The `bootstrap` ids that are neither present nor deleted at runtime."""
        return tuple(i for i in bootstrap if i not in self.tenants and i not in self.deleted)

    def add_bootstrap(self, ids: Iterable[str], created_at: str) -> None:
        """Create each of `ids` that is `missing`."""
        for tenant_id in self.missing(ids):
            self.tenants[tenant_id] = Tenant(
                tenant_id, ACTIVE, created_at, bootstrap=True, policy=BOOTSTRAP_POLICY
            )

    def revise(
        self,
        tenant_id: str,
        status: str | None,
        settings: Mapping[str, int | None] | None,
        accept_operator_key: bool | None = None,
    ) -> Tenant:
        current = self.existing(tenant_id)
        policy = current.policy
        if accept_operator_key is not None:
            policy = replace(policy, accept_operator_key=accept_operator_key)
        revised = replace(
            current,
            status=current.status if status is None else status,
            settings=current.settings.overridden(settings or {}),
            policy=policy,
        )
        self.tenants[tenant_id] = revised
        return revised

    def add_key(self, tenant_id: str, key: SigningKey) -> None:
        """`key` among the tenant's keys; `KeyExists` when its kid is taken (also by a
        revoked key still listed)."""
        current = self.existing(tenant_id)
        if any(k.kid == key.kid for k in current.keys):
            raise KeyExists(f"Tenant {tenant_id} has a key {key.kid}", {"kid": "already exists"})
        if sum(k.active for k in current.keys) >= MAX_ACTIVE_KEYS:
            raise KeyExists(
                f"Tenant {tenant_id} has {MAX_ACTIVE_KEYS} active keys: revoke one first",
                {"kid": f"at most {MAX_ACTIVE_KEYS} active keys"},
            )
        keys = [*current.keys, key]
        while len(keys) > MAX_KEYS:  # only revoked ones can be over: drop the oldest
            keys.remove(next(k for k in keys if not k.active))
        self.tenants[tenant_id] = replace(current, keys=tuple(keys))

    def revoke_key(self, tenant_id: str, kid: str) -> None:
        """Mark the key revoked (kept: its kid is not given again while listed); `NotFound`
        without it."""
        current = self.existing(tenant_id)
        current.key(kid)
        keys = tuple(k.revoked() if k.kid == kid else k for k in current.keys)
        self.tenants[tenant_id] = replace(current, keys=keys)

    def cut_off(self, tenant_id: str, before: float) -> None:
        """Void the tenant's tokens issued before `before`. The cut-off only moves forward:
        a later call cannot bring back tokens an earlier one voided."""
        current = self.existing(tenant_id)
        earlier = current.policy.tokens_valid_after
        after = before if earlier is None else max(before, earlier)
        policy = replace(current.policy, tokens_valid_after=after)
        self.tenants[tenant_id] = replace(current, policy=policy)

    def remove(self, tenant_id: str) -> None:
        self.existing(tenant_id)
        del self.tenants[tenant_id]
        self.deleted.add(tenant_id)

    def existing(self, tenant_id: str) -> Tenant:
        tenant = self.tenants.get(tenant_id)
        if tenant is None:
            raise no_such_tenant(tenant_id)
        return tenant


def no_such_tenant(tenant_id: str) -> NotFound:
    return NotFound(f"No tenant {tenant_id}", {"id": "no such tenant"})


class Edit(NamedTuple):
    """A change to the registry: the ids it may touch, and what it does to a `TenantState`
    holding their records and tombstones. A backend reads and writes only those ids, so a
    change costs what it touches, not the size of the registry."""

    ids: tuple[str, ...]
    run: Callable[[TenantState], object]


Reload = Callable[[str], Awaitable[None]]
ReloadAll = Callable[[], Awaitable[int]]


class Changed(NamedTuple):
    state: TenantState  # the edit's ids after it (not the whole registry)
    ids: list[str]  # whose record the edit changed


class Mark(NamedTuple):
    """Where a process's copy of the registry stands: the backend's version, and the entry
    of the backend's change log that brought it there (None: no log entry names it, and
    only reading everything again brings the copy up to date)."""

    version: int
    entry: str | None = None


class Loaded(NamedTuple):
    state: TenantState  # all of it
    mark: Mark  # where it stands


class Since(NamedTuple):
    mark: Mark  # where the changes bring a copy that stood at the mark asked about
    ids: list[str]  # whose record they changed


class TenantBackend(Protocol):
    """Where the registry keeps its `TenantState`: one file, this process, or Redis."""

    async def open(self) -> None:
        """Before the first change (a file backend locks its directory: one writer)."""
        ...

    async def read(self) -> TenantState: ...

    async def read_one(self, tenant_id: str) -> Tenant | None: ...

    async def change(self, edit: Edit) -> Changed:
        """Run `edit` on the current state of its ids (`TenantState.edited`) and store what it
        changed, as one atomic step (an `edit` that raises changes nothing). Other processes
        are told which ids changed."""
        ...

    async def version(self) -> int:
        """A number that moves with every change (Redis: a counter; elsewhere 0)."""
        ...

    async def load(self) -> Loaded:
        """The whole state and its mark, in one atomic read."""
        ...

    async def changes_since(self, mark: Mark) -> Since | None:
        """The ids changed after `mark`, and the mark they bring it to; None when the
        backend cannot name them (no log of its changes reaches back to `mark`)."""
        ...

    async def close(self) -> None: ...


class TenantWatcher(Protocol):
    """How a node hears of the changes other processes make to a shared backend (Redis)."""

    async def start(self, reload: Reload, reload_all: ReloadAll) -> None:
        """From now until `close()`: call `reload(id)` for each change another process
        makes, and `reload_all()` after any gap (each (re)connection, a missed
        notification)."""
        ...

    async def close(self) -> None: ...


# -- the directory ---------------------------------------------------------------------------

TenantListener = Callable[[str, "Tenant | None"], Awaitable[None]]


class TenantDirectory:
    """The tenants this process knows now: id -> Tenant, read synchronously on every request.

    Listeners hear every change once it is in the snapshot: a new or changed tenant in the
    order they registered, a deletion in the reverse order (what is set up first is torn
    down last: the metrics of a tenant exist before its first socket and outlive its last).
    """

    def __init__(self, tenants: Iterable[Tenant] = ()) -> None:
        self._tenants: dict[str, Tenant] = {t.id: t for t in tenants}
        # Read-only to everyone else; `in` on it is one dict lookup.
        self.view: Mapping[str, Tenant] = MappingProxyType(self._tenants)
        self._listeners: list[TenantListener] = []

    def on_change(self, listener: TenantListener) -> None:
        """Call `listener(tenant_id, tenant)` after each change (None: deleted)."""
        self._listeners.append(listener)

    def get(self, tenant_id: str) -> Tenant | None:
        return self._tenants.get(tenant_id)

    def ids(self) -> tuple[str, ...]:
        return tuple(self._tenants)

    def max_events_per_sec(self, tenant_id: str) -> int | None:
        """The tenant's own publish rate, None for the server-wide one."""
        tenant = self._tenants.get(tenant_id)
        return tenant.settings.max_events_per_sec if tenant is not None else None

    def max_connections(self, tenant_id: str) -> int | None:
        """The tenant's own connection cap, None for the server-wide one."""
        tenant = self._tenants.get(tenant_id)
        return tenant.settings.max_connections if tenant is not None else None

    def keys_of(self, tenant_id: str) -> Sequence[SigningKey]:
        """The tenant's signing keys (none for an unknown tenant): what verifies its tokens."""
        tenant = self._tenants.get(tenant_id)
        return tenant.keys if tenant is not None else ()

    def policy_of(self, tenant_id: str) -> TenantPolicy | None:
        """Which of the tenant's tokens count; None: no such tenant."""
        tenant = self._tenants.get(tenant_id)
        return tenant.policy if tenant is not None else None

    def __len__(self) -> int:
        return len(self._tenants)

    def __contains__(self, tenant_id: object) -> bool:
        return tenant_id in self._tenants

    def active(self, tenant_id: str) -> Tenant:
        """The tenant, if it may publish and take new subscribers now."""
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            raise ForbiddenTenant()
        if tenant.status != ACTIVE:
            raise TenantSuspended()
        return tenant

    async def apply(self, tenant_id: str, tenant: Tenant | None) -> None:
        """Make `tenant` (None: no tenant) the record of `tenant_id`; listeners hear of it
        when that is a change."""
        if self._tenants.get(tenant_id) == tenant:
            return
        if tenant is None:
            del self._tenants[tenant_id]
            listeners = reversed(self._listeners)
        else:
            self._tenants[tenant_id] = tenant
            listeners = iter(self._listeners)
        for listener in list(listeners):
            try:
                await listener(tenant_id, tenant)
            except Exception:
                log.exception("a listener of tenant %s failed", tenant_id)

    async def replace(self, tenants: Mapping[str, Tenant]) -> None:
        """Make `tenants` the whole snapshot (a full reload), in id order."""
        for tenant_id in [t for t in self._tenants if t not in tenants]:
            await self.apply(tenant_id, None)
        for tenant_id in sorted(tenants):
            await self.apply(tenant_id, tenants[tenant_id])


# -- the registry ----------------------------------------------------------------------------


class TenantRegistry:
    """Tenant administration over a `TenantBackend`, keeping `directory` in step with it.

    Every change to the directory, whether made here or heard from another process, is
    made under one lock after reading the backend: a reload that read the state before a
    local change can never be applied after it (which would delete, and purge, a tenant
    that had just been created).
    """

    def __init__(
        self,
        backend: TenantBackend,
        directory: TenantDirectory,
        *,
        bootstrap: Sequence[str] = (),
        watcher: TenantWatcher | None = None,
    ) -> None:
        self.backend = backend
        self.directory = directory
        self._bootstrap = tuple(bootstrap)
        self.watcher = watcher
        self._lock = asyncio.Lock()
        self._mark: Mark | None = None  # where the directory stands, once loaded

    async def open(self) -> None:
        """Ready for changes (the CLI): nothing is loaded into the directory."""
        await self.backend.open()

    async def start(self) -> None:
        """A serving node: open, create the bootstrap tenants, fill the directory, and
        follow the changes other processes make."""
        await self.backend.open()
        with contextlib.suppress(StoreUnavailable):  # Redis down: the watcher loads it later
            await self._reload_all()
        if self.watcher is not None:
            await self.watcher.start(self._reload, self._reload_all)

    async def close(self) -> None:
        if self.watcher is not None:
            await self.watcher.close()
        await self.backend.close()

    async def create(self, tenant_id: str, settings: TenantSettings | None = None) -> Tenant:
        """A new active tenant; `TenantExists` (409) when the id is taken."""
        tenant = Tenant(tenant_id, settings=settings or TenantSettings())
        await self._change(Edit((tenant.id,), lambda state: state.add(tenant)))
        return tenant

    async def update(
        self,
        tenant_id: str,
        *,
        status: str | None = None,
        settings: Mapping[str, int | None] | None = None,
        accept_operator_key: bool | None = None,
    ) -> Tenant:
        """Change the status, the named settings (None: back to the server's) and whether
        the operator key signs for the tenant (None: unchanged)."""
        changed = await self._change(
            Edit(
                (tenant_id,),
                lambda state: state.revise(tenant_id, status, settings, accept_operator_key),
            )
        )
        return changed.state.existing(tenant_id)

    async def add_key(self, tenant_id: str, key: SigningKey) -> Tenant:
        """A new signing key of the tenant, verifying on every node within a second."""
        changed = await self._change(Edit((tenant_id,), lambda s: s.add_key(tenant_id, key)))
        return changed.state.existing(tenant_id)

    async def revoke_key(self, tenant_id: str, kid: str) -> Tenant:
        """Refuse the key's tokens from now on; each node disconnects its sockets opened
        with it as it applies the change (a directory listener)."""
        changed = await self._change(Edit((tenant_id,), lambda s: s.revoke_key(tenant_id, kid)))
        return changed.state.existing(tenant_id)

    async def revoke_tokens(self, tenant_id: str, before: float) -> Tenant:
        """Void the tenant's tokens issued before `before` (UNIX time), as `revoke_key`."""
        changed = await self._change(Edit((tenant_id,), lambda s: s.cut_off(tenant_id, before)))
        return changed.state.existing(tenant_id)

    async def delete(self, tenant_id: str) -> None:
        """Remove the tenant; the listeners of each process purge its data (`Feed`) and
        disconnect its sockets. A deleted FEED_TENANTS id is not created again at start."""
        await self._change(Edit((tenant_id,), lambda state: state.remove(tenant_id)))

    async def get(self, tenant_id: str) -> Tenant:
        tenant = await self.backend.read_one(tenant_id)
        if tenant is None:
            raise no_such_tenant(tenant_id)
        return tenant

    async def list(self) -> list[Tenant]:
        return sorted((await self.backend.read()).tenants.values(), key=lambda t: t.id)

    async def _change(self, edit: Edit) -> Changed:
        async with self._lock:
            changed = await self.backend.change(edit)
            for tenant_id in changed.ids:
                await self.directory.apply(tenant_id, changed.state.tenants.get(tenant_id))
        return changed

    async def _reload(self, tenant_id: str) -> None:
        async with self._lock:
            await self.directory.apply(tenant_id, await self.backend.read_one(tenant_id))

    async def _reload_all(self) -> int:
        """Bring the directory up to date; the backend version it then reflects.

        When the backend names the ids changed since the last reload, those are read
        again: a watcher that checks the version after every change (its own, too) costs
        the changes, not the registry. Otherwise (the first time, or no log reaches back:
        trimmed, written by an older version, or gone with Redis's data) the whole state,
        and the bootstrap ids it lacks (idempotent: a Redis that lost its data gets
        FEED_TENANTS back; a start over a registry that has them changes nothing)."""
        async with self._lock:
            since = None if self._mark is None else await self.backend.changes_since(self._mark)
            if since is not None:
                for tenant_id in since.ids:
                    await self.directory.apply(tenant_id, await self.backend.read_one(tenant_id))
                self._mark = since.mark
                return since.mark.version
            state, self._mark = await self.backend.load()
            if missing := state.missing(self._bootstrap):
                created_at = utc_timestamp()
                await self.backend.change(
                    Edit(missing, lambda s: s.add_bootstrap(missing, created_at))
                )
                # Read again, for a mark that includes them: the first start (whose first
                # read was of an empty registry), new FEED_TENANTS ids, a Redis that lost
                # its data.
                state, self._mark = await self.backend.load()
            await self.directory.replace(state.tenants)
            return self._mark.version
