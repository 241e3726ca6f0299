"""`create_app(settings)`: wires the store, the feed and both transports. Nothing else."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp_cors
from aiohttp import hdrs, web

from .access import AccessLog, access_middleware, stamp_request_id
from .addresses import ClientAddresses
from .api import RestApi, error_middleware, rate_limit_middleware
from .auth import (
    Authenticator,
    HeaderAuthenticator,
    TenantCatalogue,
    TokenAuthenticator,
)
from .client_bundle import ClientBundle
from .cluster import open_backend
from .config import Settings
from .core import (
    TENANT_DELETED,
    Feed,
    LocalConnections,
    RetentionSweep,
    system_notice,
)
from .engineio import EngineStats
from .metrics import METRICS_PATH, FeedMetrics, metrics_view
from .quotas import (
    ConnectionCaps,
    FixedWindow,
    RequestLimiter,
    TenantPublishLimiter,
    open_window_counters,
    window_seconds,
)
from .realtime import MAX_PACKET_BYTES, SOCKETIO_PATH, RealtimeGateway, refuse_new_sessions
from .security import ResponseStamp, page_headers, polling_body_limit, security_stamp
from .tasks import stop
from .tenants import Tenant, TenantDirectory, TenantRegistry
from .upgrades import DirectUpgrades

log = logging.getLogger(__name__)

WEB_ROOT = Path(__file__).resolve().parent.parent / "web"
SOCKETIO_CLIENT = Path("node_modules") / "socket.io-client"

GATEWAY = web.AppKey("gateway", RealtimeGateway)
FEED = web.AppKey("feed", Feed)
METRICS = web.AppKey("metrics", FeedMetrics)
TENANTS = web.AppKey("tenants", TenantRegistry)
# Set on SIGTERM: /api/ready answers 503 and new socket.io sessions are refused from then on.
SHUTTING_DOWN = web.AppKey("shutting_down", asyncio.Event)
# The listener's shortcut for new sessions' WebSocket handshakes.
DIRECT_UPGRADES = web.AppKey("direct_upgrades", DirectUpgrades)
ResponseHook = Callable[[web.Request, web.StreamResponse], Awaitable[object]]


def open_authenticator(
    settings: Settings, catalogue: TenantCatalogue, directory: TenantDirectory
) -> Authenticator:
    if settings.auth == "token":
        # The directory's snapshot: a token's key and policy are one dict lookup away, and
        # a key added or revoked on any node counts here once the registry applied it.
        return TokenAuthenticator(
            catalogue,
            settings.auth_secret,
            keys_of=directory.keys_of,
            policy_of=directory.policy_of,
        )
    return HeaderAuthenticator(catalogue)


def create_app(settings: Settings, web_root: Path = WEB_ROOT) -> web.Application:
    # Filled by the registry at start; everything that knows tenants follows it.
    directory = TenantDirectory()
    backend = open_backend(settings, directory)
    registry = TenantRegistry(
        backend.tenants,
        directory,
        bootstrap=settings.tenants,
        watcher=backend.tenant_changes,
    )
    engine_stats = EngineStats()
    # Before anything else listens to the directory: see FeedMetrics.tenant_changed.
    limit_counters = open_window_counters(settings.redis_url or "memory://")
    metrics = FeedMetrics(
        directory,
        max_tenants=settings.metrics_max_tenants,
        failing=(backend.store, limit_counters),
        engine=engine_stats,
    )
    shutting_down = asyncio.Event()
    requests = RequestLimiter(
        FixedWindow(
            limit_counters,
            "ip",
            settings.rate_limit_max_requests,
            window_seconds(settings.rate_limit_window_ms),
        )
    )
    addresses = ClientAddresses(settings.trust_proxy)
    access = AccessLog(metrics)
    app = web.Application(
        middlewares=[
            access_middleware(access),
            rate_limit_middleware(requests, addresses),
            error_middleware(
                guards=(
                    refuse_new_sessions(shutting_down),
                    polling_body_limit(f"/{SOCKETIO_PATH}/", MAX_PACKET_BYTES),
                )
            ),
        ],
        client_max_size=settings.max_body_bytes,
    )
    catalogue = TenantCatalogue(directory)
    authenticator = open_authenticator(settings, catalogue, directory)
    feed = Feed(
        backend.store,
        directory,
        history_size=settings.history_size,
        retention_seconds=settings.retention_seconds,
        initial_events=settings.initial_events,
        max_message_length=settings.max_message_length,
        connections=backend.connections,
        bus=backend.bus,
        idempotency_ttl=settings.idempotency_ttl,
        limiter=TenantPublishLimiter(
            FixedWindow(limit_counters, "tenant", settings.tenant_max_events_per_sec, 1),
            tenant_limit=directory.max_events_per_sec,
        ),
        observer=metrics,
    )
    caps = ConnectionCaps(
        feed.connections,
        LocalConnections(),
        per_tenant=settings.max_connections_per_tenant,
        per_address=settings.max_connections_per_ip,
        tenant_cap=directory.max_connections,
    )
    gateway = RealtimeGateway(
        settings,
        feed,
        authenticator,
        requests,
        addresses,
        caps,
        metrics,
        engine_stats,
        eager_packets=backend.in_process,
    )
    directory.on_change(_disconnect_deleted(gateway))
    if settings.auth == "token":
        directory.on_change(_disconnect_revoked(gateway))
    app[FEED] = feed
    app[GATEWAY] = gateway
    app[METRICS] = metrics
    app[TENANTS] = registry
    app[SHUTTING_DOWN] = shutting_down
    app[DIRECT_UPGRADES] = DirectUpgrades(
        gateway.engine, access, page_headers(settings.production), shutting_down
    )

    rest = RestApi(settings, feed, authenticator, catalogue, registry, addresses, shutting_down)
    api_routes = app.router.add_routes(rest.routes())
    # Before the gateway's routes: /socket.io/ is Engine.IO's, these few file names are not.
    bundle = ClientBundle.read(web_root / SOCKETIO_CLIENT)
    bundle_routes = app.router.add_routes(bundle.routes(f"/{SOCKETIO_PATH}")) if bundle else []
    if settings.metrics_port is None:
        admins_only = authenticator if settings.auth == "token" else None
        app.router.add_get(METRICS_PATH, metrics_view(metrics, admins_only), allow_head=False)
    cors_hooks = _allow_cors(app, settings, [*api_routes, *bundle_routes])
    _stamp_responses(app, (security_stamp(settings.production), stamp_request_id), cors_hooks)
    gateway.attach(app)
    _serve_page(app, web_root)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await limit_counters.start()
        await registry.start()
        await backend.start()
        sweep = asyncio.create_task(RetentionSweep(feed).run())
        yield
        await stop(sweep)
        await registry.close()  # first: no change is applied to a closed backend
        await backend.close()

    async def say_goodbye(app: web.Application) -> None:
        await gateway.close()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(say_goodbye)
    return app


def _disconnect_deleted(
    gateway: RealtimeGateway,
) -> Callable[[str, Tenant | None], Awaitable[None]]:
    """A directory listener: a deleted tenant's sockets on this node are told, then go."""

    async def disconnect(tenant_id: str, tenant: Tenant | None) -> None:
        if tenant is None:
            await gateway.disconnect_tenant(tenant_id, system_notice(TENANT_DELETED, "warning"))

    return disconnect


def _disconnect_revoked(
    gateway: RealtimeGateway,
) -> Callable[[str, Tenant | None], Awaitable[None]]:
    """A directory listener: when a tenant's keys or policy change, this node's sockets of
    it whose credentials no longer stand go. Every node runs it as it applies the change,
    so a revocation made on one node reaches the sockets of all of them."""

    async def disconnect(tenant_id: str, tenant: Tenant | None) -> None:
        if tenant is not None:  # deleted: `_disconnect_deleted` has them all go
            await gateway.disconnect_revoked(tenant_id)

    return disconnect


def _allow_cors(
    app: web.Application, settings: Settings, routes: list[web.AbstractRoute]
) -> list[ResponseHook]:
    """CORS on `routes` (REST, client bundle); returns the hooks aiohttp_cors would have added."""
    options = aiohttp_cors.ResourceOptions(  # type: ignore[no-untyped-call]
        allow_credentials=False,
        allow_headers=(
            "Content-Type",
            "X-Tenant-ID",
            "Authorization",
            "Idempotency-Key",
            "X-Request-ID",
        ),
        expose_headers=(
            "Retry-After",
            "RateLimit-Limit",
            "RateLimit-Remaining",
            "RateLimit-Reset",
            "Idempotent-Replayed",
            "X-Request-ID",
        ),
        allow_methods=("GET", "POST"),
        max_age=600,
    )
    hooks_before = len(app.on_response_prepare)
    cors = aiohttp_cors.setup(app, defaults={origin: options for origin in settings.cors_origins})
    for route in routes:
        cors.add(route)
    hooks = list(app.on_response_prepare[hooks_before:])
    del app.on_response_prepare[hooks_before:]
    return hooks


def _stamp_responses(
    app: web.Application, stamps: tuple[ResponseStamp, ...], cors_hooks: list[ResponseHook]
) -> None:
    """One `on_response_prepare` hook: `stamps` in order, then CORS.

    One hook rather than one each: every hook is a coroutine per response. aiohttp_cors'
    hook looks up the route's CORS config and then does nothing when there is no Origin
    header (CORS 6.1.1): ask that first.
    """

    async def prepare(request: web.Request, response: web.StreamResponse) -> None:
        for stamp in stamps:
            stamp(request, response)
        if hdrs.ORIGIN in request.headers:
            for hook in cors_hooks:
                await hook(request, response)

    app.on_response_prepare.append(prepare)


def _serve_page(app: web.Application, web_root: Path) -> None:
    """`/` is the page, `/admin` the operator page; their folders are static; the
    socket.io client comes from npm."""
    for paths, name in ((("/",), "index.html"), (("/admin", "/admin/"), "admin.html")):
        file = web_root / name
        if file.is_file():
            for path in paths:
                app.router.add_get(path, _file_view(file))
    for folder in sorted(p for p in web_root.iterdir() if p.is_dir()) if web_root.is_dir() else []:
        if folder.name not in ("node_modules",) and not folder.name.startswith("."):
            app.router.add_static(f"/{folder.name}", folder)
    client = web_root / SOCKETIO_CLIENT / "dist"
    if client.is_dir():
        app.router.add_static("/vendor", client)


def _file_view(file: Path) -> Callable[[web.Request], Awaitable[web.FileResponse]]:
    async def serve(request: web.Request) -> web.FileResponse:
        return web.FileResponse(file)

    return serve
