"""`feedserver tenants list|show|add|set|rm`, `tenants keys list|add|rm` and
`tenants revoke-tokens`: the tenant registry, and the tenants' signing keys, for operators
on the box.

The commands act on the registry itself, where the server keeps it: `FEED_DATA_DIR/tenants.json`
with the memory store, the Redis of `FEED_STORE` otherwise (every running node applies a
change within a second). A memory-mode server holds its data directory for its whole life:
while it runs, the commands that change something are refused (use the admin API,
`/api/admin/tenants`), so that neither overwrites what the other wrote; `list`, `show` and
`keys list` only read. On Redis, a key removed or a cut-off set here disconnects the
sockets it voids on every running node, as the admin API does.

`keys add ID --alg HS256` prints the new secret: the only time it is shown.

Exit codes: 0 done, 1 refused (no such tenant, it exists, the registry is busy or
unreachable), 2 a bad argument or setting.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from .cluster import open_tenants
from .config import Settings
from .errors import FeedError, ValidationFailed
from .events import utc_timestamp
from .keys import ALGORITHMS, SigningKey
from .schemas import parse_key_create, parse_revoke_tokens
from .store.redis import RedisStore
from .store.tenant_file import DataDirLocked
from .tenants import (
    SETTING_RULES,
    STATUSES,
    Tenant,
    TenantDirectory,
    TenantRecordError,
    TenantRegistry,
    TenantSettings,
)

DEFAULT = "default"  # `set --NAME default`: back to the server's setting
YES_NO = {"yes": True, "no": False}
CHANGES = ("add", "set", "rm", "keys add", "keys rm", "revoke-tokens")


def add_tenant_commands(commands: Any) -> None:
    """The `tenants` command and its subcommands, on the CLI's subparsers."""
    tenants = commands.add_parser("tenants", help="list, show, add, change or remove tenants")
    actions = tenants.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="every tenant, one per line")
    actions.add_parser("show", help="one tenant, as JSON").add_argument("id")
    add = actions.add_parser("add", help="create an active tenant")
    add.add_argument("id")
    set_ = actions.add_parser("set", help="change a tenant's status or settings")
    set_.add_argument("id")
    set_.add_argument("--status", choices=STATUSES)
    for parser in (add, set_):
        for rule in SETTING_RULES.values():
            parser.add_argument(
                f"--{_option(rule.json_name)}",
                dest=rule.json_name,
                metavar="N",
                help=f"{rule.lo}..{rule.hi}, or {DEFAULT} (the server's setting)",
            )
    set_.add_argument(
        "--accept-operator-key",
        choices=YES_NO,
        help="whether tokens signed with FEED_AUTH_SECRET act for this tenant",
    )
    actions.add_parser("rm", help="delete a tenant, its events and its sockets").add_argument("id")
    keys = actions.add_parser("keys", help="list, add or revoke a tenant's signing keys")
    key_actions = keys.add_subparsers(dest="key_action", required=True)
    key_actions.add_parser("list", help="the tenant's keys, one per line").add_argument("id")
    add_key = key_actions.add_parser(
        "add", help="a new key: HS256 (prints its secret, once) or a public JWK"
    )
    add_key.add_argument("id")
    add_key.add_argument("--alg", choices=ALGORITHMS, default="HS256")
    add_key.add_argument("--kid", help="the key's id (default: the JWK's kid, or a new one)")
    add_key.add_argument(
        "--jwk", metavar="FILE", help="ES256 / RS256: the public JWK, as JSON ('-': stdin)"
    )
    rm_key = key_actions.add_parser(
        "rm", help="revoke a key: its tokens are refused, its sockets disconnected"
    )
    rm_key.add_argument("id")
    rm_key.add_argument("kid")
    revoke = actions.add_parser(
        "revoke-tokens", help="void the tenant's tokens issued before a time (default now)"
    )
    revoke.add_argument("id")
    revoke.add_argument("--before", type=float, metavar="UNIX_TIME")


def run_tenant_command(settings: Settings, args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(settings, args))
    except ValidationFailed as exc:
        return _fail(exc.message, exc.details, code=2)
    except FeedError as exc:
        return _fail(exc.message, exc.details, code=1)
    except (DataDirLocked, TenantRecordError) as exc:
        return _fail(str(exc), None, code=1)


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    if settings.redis_url is None and settings.data_dir is None:
        return _fail(
            "FEED_DATA_DIR is not set: a memory-mode server keeps its tenants in its own "
            "memory; set FEED_DATA_DIR, or use the admin API (/api/admin/tenants)",
            None,
            code=2,
        )
    registry = TenantRegistry(open_tenants(settings), TenantDirectory())
    try:
        if " ".join(filter(None, (args.action, getattr(args, "key_action", None)))) in CHANGES:
            await registry.open()
        if args.action == "keys":
            return await _keys(registry, args)
        return await _act(settings, registry, args)
    finally:
        await registry.close()


async def _act(settings: Settings, registry: TenantRegistry, args: argparse.Namespace) -> int:
    if args.action == "list":
        for tenant in await registry.list():
            print(_line(tenant))
    elif args.action == "show":
        print(_json(await registry.get(args.id)))
    elif args.action == "add":
        print(_json(await registry.create(args.id, TenantSettings(**_settings(args)))))
    elif args.action == "set":
        accept = None if args.accept_operator_key is None else YES_NO[args.accept_operator_key]
        changed = await registry.update(
            args.id, status=args.status, settings=_settings(args), accept_operator_key=accept
        )
        print(_json(changed))
    elif args.action == "revoke-tokens":
        body = {} if args.before is None else {"before": args.before}
        print(_json(await registry.revoke_tokens(args.id, parse_revoke_tokens(body))))
    else:
        await registry.delete(args.id)
        await _purge(settings, args.id)
        print(f"deleted {args.id}")
    return 0


async def _keys(registry: TenantRegistry, args: argparse.Namespace) -> int:
    if args.key_action == "list":
        for key in (await registry.get(args.id)).keys:
            print(_key_line(key))
    elif args.key_action == "add":
        body: dict[str, Any] = {"alg": args.alg}
        if args.kid is not None:
            body["kid"] = args.kid
        if args.jwk is not None:
            body["jwk"] = _read_jwk(args.jwk)
        key = parse_key_create(body)
        await registry.add_key(args.id, key)
        print(orjson.dumps(key.to_record(), option=orjson.OPT_INDENT_2).decode())
    else:
        await registry.revoke_key(args.id, args.kid)
        print(f"revoked {args.kid} of {args.id}")
    return 0


def _read_jwk(source: str) -> Any:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
        return orjson.loads(text)
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ValidationFailed(f"invalid --jwk: {exc}") from None


def _key_line(key: SigningKey) -> str:
    created = utc_timestamp(datetime.fromtimestamp(key.created_at, UTC))
    return "\t".join([key.kid, key.alg, key.status, created])


async def _purge(settings: Settings, tenant_id: str) -> None:
    """Redis: the events go now, also when no node runs (each running node purges too).
    A memory-mode server is not running while this runs: its events went with it."""
    if settings.redis_url is None:
        return
    store = RedisStore(settings.redis_url, settings.history_size)
    try:
        await store.purge(tenant_id)
    finally:
        await store.close()


def _settings(args: argparse.Namespace) -> dict[str, int | None]:
    """The settings named on the command line, by field name (None: `default`)."""
    named: dict[str, int | None] = {}
    for name, rule in SETTING_RULES.items():
        raw = getattr(args, rule.json_name)
        if raw is None:
            continue
        if raw == DEFAULT:
            named[name] = None
        elif raw.isdigit():
            named[name] = int(raw)
        else:
            raise ValidationFailed(
                f"invalid --{_option(rule.json_name)}: {raw!r} (expected N or {DEFAULT})"
            )
    return named


def _option(json_name: str) -> str:
    """maxEventsPerSec -> max-events-per-sec"""
    return "".join(f"-{c.lower()}" if c.isupper() else c for c in json_name)


def _line(tenant: Tenant) -> str:
    overrides = [f"{k}={v}" for k, v in tenant.settings.to_json().items() if v is not None]
    columns = [tenant.id, tenant.status, tenant.created_at]
    if tenant.bootstrap:
        columns.append("bootstrap")
    if overrides:
        columns.append(",".join(overrides))
    return "\t".join(columns)


def _json(tenant: Tenant) -> str:
    return orjson.dumps(tenant.to_json(), option=orjson.OPT_INDENT_2).decode()


def _fail(message: str, details: dict[str, Any] | None, *, code: int) -> int:
    extra = "; ".join(f"{field} {text}" for field, text in (details or {}).items())
    print(f"feedserver: {message}" + (f" ({extra})" if extra else ""), file=sys.stderr)
    return code
