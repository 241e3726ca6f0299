"""The tenant registry of a single node (`FEED_STORE=memory`): a JSON file in
`FEED_DATA_DIR` (`TenantFile`), or without it this process's memory (`HeldTenants`).

`FEED_DATA_DIR/tenants.json`:

    {"schemaVersion": 2, "tenants": [<Tenant.to_record()>, ...], "deleted": ["id", ...]}

It holds the tenants' HS256 secrets: it is created 0600, in a directory only the server's
user should read. A version 1 file (tenants without keys) is read as well, and written as
version 2 at the next change.

Written atomically: a temporary file in the same directory, fsync, `os.replace`, fsync of
the directory; a crash leaves the old file or the new one, never part of one. Whoever
changes it (a serving node for its whole life, `feedserver tenants add|set|rm` for one
command) holds an exclusive `flock` on `FEED_DATA_DIR/tenants.lock`, so a second writer is
refused instead of overwriting what the first one wrote. Reading needs no lock.

The writer keeps the state it read at `open()` and each one it wrote since, with each
tenant's stored form: that is the file, since nobody else writes it. A change edits the
tenants it names in that state and writes the whole file once, building the stored form of
the tenants it changed only and decoding nothing.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import tempfile
from collections.abc import Mapping, Set
from pathlib import Path
from typing import Any

import orjson

from ..config import TENANT_RE
from ..tenants import (
    SCHEMA_VERSION,
    Changed,
    Edit,
    Loaded,
    Mark,
    Since,
    Tenant,
    TenantRecordError,
    TenantState,
    check_schema_version,
)

log = logging.getLogger(__name__)

TENANTS_FILE = "tenants.json"
LOCK_FILE = "tenants.lock"


class DataDirLocked(RuntimeError):
    """Another process (a running server, another CLI command) writes this FEED_DATA_DIR."""


class TenantFile:
    """The registry in `FEED_DATA_DIR/tenants.json`, for one writing process at a time."""

    def __init__(self, data_dir: str | Path) -> None:
        self.directory = Path(data_dir)
        self.path = self.directory / TENANTS_FILE
        self._lock_fd: int | None = None
        self._held: TenantState | None = None  # the file, while this process holds the lock
        self._records: dict[str, dict[str, Any]] = {}  # id -> its `to_record()`, as written
        self._writing = asyncio.Lock()  # one change at a time: each edits the last written

    async def open(self) -> None:
        """Take the directory's lock and check that the file can be read (a corrupt file
        fails here, at start, rather than at the first change)."""
        await asyncio.to_thread(self._lock)

    async def read(self) -> TenantState:
        if self._held is not None:
            return self._held.copy()
        return await asyncio.to_thread(self._read)

    async def read_one(self, tenant_id: str) -> Tenant | None:
        if self._held is not None:
            return self._held.tenants.get(tenant_id)
        return (await self.read()).tenants.get(tenant_id)

    async def change(self, edit: Edit) -> Changed:
        async with self._writing:
            if self._held is None:
                raise RuntimeError("TenantFile.change before open()")
            before = self._held.part(edit.ids)
            changed = before.edited(edit)
            if not changed.ids and changed.state.deleted == before.deleted:
                return changed
            after = self._held.copy()
            after.put(changed.state, edit.ids)
            records = dict(self._records)
            for tenant_id in changed.ids:
                if (tenant := after.tenants.get(tenant_id)) is None:
                    del records[tenant_id]
                else:
                    records[tenant_id] = tenant.to_record()
            await asyncio.to_thread(self._write, records, after.deleted)
            self._held, self._records = after, records
            return changed

    async def version(self) -> int:
        return 0

    async def load(self) -> Loaded:
        return Loaded(await self.read(), Mark(0))

    async def changes_since(self, mark: Mark) -> Since | None:
        return None  # no log: nobody else writes it, a reload reads it all

    async def close(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        self._held, self._records = None, {}
        if fd is not None:
            os.close(fd)  # releases the flock

    def _lock(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirLocked(
                f"FEED_DATA_DIR {self.directory} is in use by another feedserver process "
                f"({LOCK_FILE} is locked)"
            ) from None
        try:
            self._held = self._read()
        except BaseException:
            os.close(fd)
            raise
        self._records = {t.id: t.to_record() for t in self._held.tenants.values()}
        self._lock_fd = fd

    def _read(self) -> TenantState:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return TenantState()
        try:
            return parse_tenant_file(data)
        except TenantRecordError as exc:
            raise TenantRecordError(
                f"{self.path} is not a tenant registry this feedserver can read ({exc}); "
                "repair or move it"
            ) from None

    def _write(self, records: Mapping[str, dict[str, Any]], deleted: Set[str]) -> None:
        body = orjson.dumps(
            {
                "schemaVersion": SCHEMA_VERSION,
                "tenants": [records[t] for t in sorted(records)],
                "deleted": sorted(deleted),
            },
            option=orjson.OPT_INDENT_2,
        )
        fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=".tenants.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(body)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        # The rename itself is durable only once the directory is flushed too.
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def parse_tenant_file(data: bytes) -> TenantState:
    """The state in a `tenants.json`; TenantRecordError for anything else."""
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise TenantRecordError(f"not JSON: {exc}") from None
    if not isinstance(body, dict) or body.keys() != {"schemaVersion", "tenants", "deleted"}:
        raise TenantRecordError("expected an object with schemaVersion, tenants and deleted")
    version = check_schema_version(body["schemaVersion"])
    if not isinstance(body["tenants"], list) or not isinstance(body["deleted"], list):
        raise TenantRecordError("tenants and deleted must be lists")
    state = TenantState()
    for record in body["tenants"]:
        tenant = Tenant.from_record(record, version)
        if tenant.id in state.tenants:
            raise TenantRecordError(f"tenant {tenant.id!r} is listed twice")
        state.tenants[tenant.id] = tenant
    for tenant_id in body["deleted"]:
        if not isinstance(tenant_id, str) or not TENANT_RE.match(tenant_id):
            raise TenantRecordError(f"deleted id {tenant_id!r} is not a tenant id")
        state.deleted.add(tenant_id)
    return state


class HeldTenants:
    """Without `FEED_DATA_DIR`: the registry lives, and ends, with this process."""

    def __init__(self) -> None:
        self._state = TenantState()

    async def open(self) -> None:
        log.info(
            "FEED_DATA_DIR is not set: tenants created at runtime are kept in memory and "
            "lost on restart (FEED_TENANTS are created again)"
        )

    async def read(self) -> TenantState:
        return self._state.copy()

    async def read_one(self, tenant_id: str) -> Tenant | None:
        return self._state.tenants.get(tenant_id)

    async def change(self, edit: Edit) -> Changed:
        changed = self._state.part(edit.ids).edited(edit)
        self._state.put(changed.state, edit.ids)
        return changed

    async def version(self) -> int:
        return 0

    async def load(self) -> Loaded:
        return Loaded(await self.read(), Mark(0))

    async def changes_since(self, mark: Mark) -> Since | None:
        return None  # no log: nobody else writes it, a reload reads it all

    async def close(self) -> None:
        pass
