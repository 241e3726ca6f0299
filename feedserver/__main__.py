"""Command line: `feedserver serve | check-config | token | tenants`, and `--version`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from . import __version__, lifecycle
from .auth import mint_token
from .cluster import open_tenants
from .config import MIN_SECRET_BYTES, ConfigError, Settings
from .errors import StoreUnavailable
from .logs import configure_logging
from .tenant_commands import add_tenant_commands, run_tenant_command
from .tenants import TenantRecordError

log = logging.getLogger("feedserver")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    environ = dict(os.environ)
    if args.command == "serve":
        # Flags win over the environment, and go through the same validation.
        environ.update(
            {k: v for k, v in (("HOST", args.host), ("PORT", args.port)) if v is not None}
        )
    try:
        settings = Settings.from_env(environ, config_file=args.config)
    except ConfigError as exc:
        print(f"feedserver: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        for key, value in settings.masked().items():
            print(f"{key} = {value}")
        return 0
    if args.command == "token":
        return print_token(settings, args.tenant, args.ttl, args.admin)
    if args.command == "tenants":
        return run_tenant_command(settings, args)
    return serve(settings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="feedserver", description=__doc__)
    parser.add_argument("--version", action="version", version=f"feedserver {__version__}")
    parser.add_argument("--config", help="KEY=VALUE file read before the environment")
    commands = parser.add_subparsers(dest="command")
    serve_cmd = commands.add_parser("serve", help="run the server")
    serve_cmd.add_argument("--host", help="address to bind (default: HOST or 127.0.0.1)")
    # A string, so that a bad port gets the one-line PORT error rather than argparse usage.
    serve_cmd.add_argument("--port", help="port to bind (default: PORT or 3000)")
    commands.add_parser("check-config", help="print the effective configuration and exit")
    token_cmd = commands.add_parser("token", help="print a token signed with FEED_AUTH_SECRET")
    token_cmd.add_argument("--tenant", required=True, help="the tenant the token acts for")
    token_cmd.add_argument("--ttl", type=int, default=3600, help="seconds valid (default 3600)")
    token_cmd.add_argument("--admin", action="store_true", help="also grant the admin role")
    add_tenant_commands(commands)
    return parser


def print_token(settings: Settings, tenant: str, ttl: int, admin: bool) -> int:
    if len(settings.auth_secret.encode()) < MIN_SECRET_BYTES:
        print(
            f"feedserver: invalid FEED_AUTH_SECRET: a secret of at least {MIN_SECRET_BYTES} "
            "bytes is needed to sign tokens",
            file=sys.stderr,
        )
        return 2
    try:
        known = asyncio.run(tenant_exists(settings, tenant))
    except (StoreUnavailable, TenantRecordError) as exc:
        print(f"feedserver: cannot read the tenant registry: {exc}", file=sys.stderr)
        return 1
    if not known:
        print(f"feedserver: invalid --tenant: {tenant!r} is not a tenant", file=sys.stderr)
        return 2
    if ttl < 1:
        print(f"feedserver: invalid --ttl: {ttl} (expected seconds >= 1)", file=sys.stderr)
        return 2
    print(mint_token(settings.auth_secret, tenant, ttl, admin=admin))
    return 0


async def tenant_exists(settings: Settings, tenant: str) -> bool:
    """Whether the server knows `tenant`, or creates it at its next start (FEED_TENANTS)."""
    registry = open_tenants(settings)
    try:
        state = await registry.read()
    finally:
        await registry.close()
    bootstrapped = tenant in settings.tenants and tenant not in state.deleted
    return tenant in state.tenants or bootstrapped


def serve(settings: Settings) -> int:
    configure_logging(settings.log_level, settings.log_format)
    if settings.auth == "none":
        log.warning(
            "FEED_AUTH=none: the tenant is taken from X-Tenant-ID / the handshake "
            "(development mode; use FEED_AUTH=token in production)"
        )
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        return asyncio.run(lifecycle.serve(settings))
    return uvloop.run(lifecycle.serve(settings))


if __name__ == "__main__":
    sys.exit(main())
