"""REST transport: parse -> core -> JSON. Errors become JSON in one middleware."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware
from multidict import CIMultiDict, CIMultiDictProxy

from . import __version__
from .addresses import ClientAddresses, is_loopback
from .auth import Authenticator, TenantCatalogue
from .config import Settings
from .core import Feed
from .errors import (
    FeedError,
    Forbidden,
    InternalError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    StoreUnavailable,
    UnsupportedMediaType,
    ValidationFailed,
)
from .events import utc_timestamp
from .openapi import openapi_document
from .quotas import RequestLimiter
from .schemas import (
    IDEMPOTENCY_KEY_HEADER,
    parse_history_query,
    parse_idempotency_key,
    parse_key_create,
    parse_revoke_tokens,
    parse_system_message,
    parse_tenant_create,
    parse_tenant_update,
)
from .tenants import TenantRegistry

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# A check before the handler that refuses by raising a `FeedError`.
RequestGuard = Callable[[web.Request], None]
# Deeper JSON than any request of ours needs; refused before validation walks it.
MAX_JSON_DEPTH = 32
_CONTAINERS = (dict, list)
# Content-Type values that need no parsing to be known as JSON in UTF-8.
_PLAIN_JSON_TYPES = frozenset({"application/json", "application/json; charset=utf-8"})
JSON_CONTENT_TYPE = CIMultiDictProxy(
    CIMultiDict({"Content-Type": "application/json; charset=utf-8"})
)
TENANT_ID = "tenant_id"  # the path parameter of /api/admin/tenants/{tenant_id}
KID = "kid"  # and of /api/admin/tenants/{tenant_id}/keys/{kid}
TENANT_PATH = f"/api/admin/tenants/{{{TENANT_ID}}}"
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """`data` as JSON; `headers` come before the Content-Type."""
    # A ready header set is cheaper for aiohttp than content_type= and charset=.
    all_headers = JSON_CONTENT_TYPE if headers is None else {**headers, **JSON_CONTENT_TYPE}
    return web.Response(body=orjson.dumps(data), status=status, headers=all_headers)


def error_response(exc: FeedError) -> web.Response:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else None
    return json_response({"error": exc.to_json()}, exc.status, headers)


def error_middleware(guards: Sequence[RequestGuard] = ()) -> Middleware:
    """Every refusal, ours or aiohttp's, leaves as the documented JSON error.

    `guards` run first, in order: checks that refuse by raising a `FeedError` (cheaper
    than one middleware each, on every request).
    """

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            for guard in guards:
                guard(request)
            return await handler(request)
        except FeedError as exc:
            return error_response(exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _from_http_exception(exc)
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            return error_response(InternalError())

    return errors


def rate_limit_middleware(limiter: RequestLimiter, addresses: ClientAddresses) -> Middleware:
    """Per client address on every `/api/` call; every answer says where the caller stands.

    It runs outside `error_middleware`, so errors get the `RateLimit-*` headers too.
    """

    @web.middleware
    async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/api/") or request.method == "OPTIONS":
            return await handler(request)
        try:
            quota = await limiter.hit(client_key(addresses, request))
        except StoreUnavailable:
            # The limiter's Redis is down: serve the request uncounted. Whatever needs the
            # store answers 503 by itself, and /api/health can still say what is wrong.
            return await handler(request)
        except Exception:
            log.exception("rate limit storage failed")
            return error_response(InternalError())
        if quota.allowed:
            response = await handler(request)
        else:
            response = error_response(RateLimited(quota.reset_after))
        headers = response.headers
        for name, value in quota.headers():  # item by item: update() with a dict costs more
            headers[name] = value
        return response

    return limit


def client_key(addresses: ClientAddresses, request: web.Request) -> str:
    """What the per-IP limits count this request's client under (an IPv6 client's /64)."""
    return addresses.resolve(request.remote, _forwarded_for(request))


def client_address(addresses: ClientAddresses, request: web.Request) -> str:
    return addresses.client(request.remote, _forwarded_for(request))


def _forwarded_for(request: web.Request) -> str | None:
    forwarded = request.headers.getall("X-Forwarded-For", None)
    return ",".join(forwarded) if forwarded else None


def _from_http_exception(exc: web.HTTPException) -> web.Response:
    if isinstance(exc, web.HTTPNotFound):
        return error_response(NotFound())
    if isinstance(exc, web.HTTPMethodNotAllowed):
        response = error_response(MethodNotAllowed())
        response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
        return response
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return error_response(PayloadTooLarge())
    error = FeedError(exc.reason)
    error.code, error.status = "http_error", exc.status
    return error_response(error)


async def read_json(request: web.Request, max_bytes: int) -> Any:
    """The JSON body of a request, refusing other media types and oversize bodies."""
    if request.headers.get(hdrs.CONTENT_TYPE) not in _PLAIN_JSON_TYPES and (
        request.content_type != "application/json"
        or (request.charset or "utf-8").lower() not in ("utf-8", "utf8")
    ):
        raise UnsupportedMediaType()
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge()
    content = request.content
    if content.is_eof():
        # The whole body came in with the headers (a small POST): take it as it is, without
        # read()'s loop of awaits; read() applies the size limit, so it is applied here too.
        body = content.read_nowait()
        if len(body) > max_bytes:
            raise PayloadTooLarge()
    else:
        body = await request.read()
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ValidationFailed("Malformed JSON", {"body": "invalid JSON"}) from None
    if nested_deeper_than(data, MAX_JSON_DEPTH):
        raise ValidationFailed(
            "JSON nested too deeply", {"body": f"must not nest deeper than {MAX_JSON_DEPTH}"}
        )
    return data


def nested_deeper_than(value: Any, limit: int) -> bool:
    """True when `value` has more than `limit` levels of objects and arrays."""
    # Level by level: a flat object (the usual body) is one pass over its values.
    level = [value] if isinstance(value, _CONTAINERS) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        deeper = []
        for item in level:
            for child in item.values() if isinstance(item, dict) else item:
                if isinstance(child, _CONTAINERS):
                    deeper.append(child)
        level = deeper
    return False


class RestApi:
    """The `/api/` handlers, bound to the objects they need."""

    def __init__(
        self,
        settings: Settings,
        feed: Feed,
        authenticator: Authenticator,
        catalogue: TenantCatalogue,
        registry: TenantRegistry,
        addresses: ClientAddresses,
        shutting_down: asyncio.Event,
    ) -> None:
        self.settings = settings
        self.feed = feed
        self.authenticator = authenticator
        self.catalogue = catalogue
        self.registry = registry
        self.addresses = addresses
        self.shutting_down = shutting_down
        self.started = time.monotonic()
        # Rendered again when the tenants change (`none` mode names them as examples).
        self._openapi = b""
        self._openapi_tenants: tuple[str, ...] | None = None

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/api/events", self.create_event),
            web.get("/api/events", self.list_events, allow_head=False),
            web.get("/api/events/stats", self.stats, allow_head=False),
            web.get("/api/health", self.health, allow_head=False),
            web.get("/api/ready", self.ready, allow_head=False),
            web.get("/api/config", self.config, allow_head=False),
            web.post("/api/system-messages", self.system_message),
            web.get("/api/admin/tenants", self.list_tenants, allow_head=False),
            web.post("/api/admin/tenants", self.create_tenant),
            web.get(TENANT_PATH, self.show_tenant, allow_head=False),
            web.patch(TENANT_PATH, self.update_tenant),
            web.delete(TENANT_PATH, self.delete_tenant),
            web.post(f"{TENANT_PATH}/keys", self.add_key),
            web.delete(f"{TENANT_PATH}/keys/{{{KID}}}", self.revoke_key),
            web.post(f"{TENANT_PATH}/revoke-tokens", self.revoke_tokens),
            web.get("/api/openapi.json", self.openapi, allow_head=False),
        ]

    async def create_event(self, request: web.Request) -> web.Response:
        tenant = self.authenticator.from_headers(request.headers).require_tenant()
        raw_key = request.headers.get(IDEMPOTENCY_KEY_HEADER)
        key = None if raw_key is None else parse_idempotency_key(raw_key)
        payload = await read_json(request, self.settings.max_body_bytes)
        published = await self.feed.publish(tenant, payload, idempotency_key=key)
        if published.replayed:
            return json_response(published.event.to_json(), 200, {"Idempotent-Replayed": "true"})
        return json_response(published.event.to_json(), 201)

    async def list_events(self, request: web.Request) -> web.Response:
        tenant = self.authenticator.from_headers(request.headers).require_tenant()
        query = parse_history_query(dict(request.query))
        history = await self.feed.history(tenant, **query)
        return json_response(
            {
                "tenantId": tenant,
                "events": [e.to_json() for e in history.events],
                "count": len(history.events),
                "latestSeq": history.latest_seq,
            }
        )

    async def stats(self, request: web.Request) -> web.Response:
        """One tenant's row; all tenants for an admin token, or in `none` mode with no tenant."""
        principal = self.authenticator.from_headers(request.headers)
        everyone = principal.admin or principal.tenant is None
        rows = await self.feed.stats(
            self.catalogue.tenants if everyone else (principal.require_tenant(),)
        )
        return json_response(
            {
                "totalEvents": sum(row.events for row in rows.values()),
                "tenantStats": {tenant: row.to_json() for tenant, row in rows.items()},
            }
        )

    async def health(self, request: web.Request) -> web.Response:
        ok = await self.feed.store.ping()
        body = {
            "status": "healthy" if ok else "unhealthy",
            "timestamp": utc_timestamp(),
            "version": __version__,
            "uptime": round(time.monotonic() - self.started, 3),
            "memory": {"rss": resident_set_bytes()},
            "store": {"backend": self.feed.store.backend, "ok": ok},
        }
        return json_response(body, 200 if ok else 503)

    async def system_message(self, request: web.Request) -> web.Response:
        """Admin: send `system_message` to every socket of every tenant."""
        self._require_admin(request)
        message, level = parse_system_message(
            await read_json(request, self.settings.max_body_bytes)
        )
        return json_response(await self.feed.post_system_message(message, level), 202)

    async def list_tenants(self, request: web.Request) -> web.Response:
        """Admin: every tenant, by id."""
        self._require_admin(request)
        tenants = await self.registry.list()
        return json_response({"tenants": [tenant.to_json() for tenant in tenants]})

    async def create_tenant(self, request: web.Request) -> web.Response:
        """Admin: a new active tenant, on every node within a second."""
        self._require_admin(request)
        tenant_id, settings = parse_tenant_create(
            await read_json(request, self.settings.max_body_bytes)
        )
        tenant = await self.registry.create(tenant_id, settings)
        return json_response(tenant.to_json(), 201, {"Location": f"/api/admin/tenants/{tenant.id}"})

    async def show_tenant(self, request: web.Request) -> web.Response:
        self._require_admin(request)
        tenant = await self.registry.get(request.match_info[TENANT_ID])
        return json_response(tenant.to_json())

    async def update_tenant(self, request: web.Request) -> web.Response:
        """Admin: the status, the settings named in the body (null: the server's) and
        whether the operator key signs for the tenant."""
        self._require_admin(request)
        update = parse_tenant_update(await read_json(request, self.settings.max_body_bytes))
        tenant = await self.registry.update(
            request.match_info[TENANT_ID],
            status=update.status,
            settings=update.settings,
            accept_operator_key=update.accept_operator_key,
        )
        return json_response(tenant.to_json())

    async def add_key(self, request: web.Request) -> web.Response:
        """Admin: a new signing key of the tenant; an HS256 secret is in this answer only."""
        self._require_admin(request)
        key = parse_key_create(await read_json(request, self.settings.max_body_bytes))
        await self.registry.add_key(request.match_info[TENANT_ID], key)
        return json_response(key.to_record(), 201)

    async def revoke_key(self, request: web.Request) -> web.Response:
        """Admin: the key's tokens are refused from now on and its sockets disconnected; the
        key stays listed, revoked (its kid is not given to another key)."""
        self._require_admin(request)
        await self.registry.revoke_key(request.match_info[TENANT_ID], request.match_info[KID])
        return web.Response(status=204)

    async def revoke_tokens(self, request: web.Request) -> web.Response:
        """Admin: the tenant's tokens issued before `before` (default now) are void, and the
        sockets they opened disconnected."""
        self._require_admin(request)
        body = await read_json(request, self.settings.max_body_bytes) if request.body_exists else {}
        before = parse_revoke_tokens(body)
        tenant = await self.registry.revoke_tokens(request.match_info[TENANT_ID], before)
        return json_response(tenant.to_json())

    async def delete_tenant(self, request: web.Request) -> web.Response:
        """Admin: the tenant, its events and its sockets go; its id is refused from then on."""
        self._require_admin(request)
        await self.registry.delete(request.match_info[TENANT_ID])
        return web.Response(status=204)

    def _require_admin(self, request: web.Request) -> None:
        """An admin token; in `none` mode (no credentials exist) a client on this host."""
        if self.settings.auth == "none":
            if not is_loopback(client_address(self.addresses, request)):
                raise Forbidden("Admin calls need FEED_AUTH=token, or a loopback client")
        elif not self.authenticator.from_headers(request.headers).admin:
            raise Forbidden("An admin token is required")

    async def openapi(self, request: web.Request) -> web.Response:
        tenants = self.catalogue.tenants
        if tenants != self._openapi_tenants:
            self._openapi = orjson.dumps(openapi_document(self.settings, tenants))
            self._openapi_tenants = tenants
        return web.Response(body=self._openapi, content_type="application/json", charset="utf-8")

    async def ready(self, request: web.Request) -> web.Response:
        """Readiness, unlike liveness: 503 while the store is unreachable or we shut down."""
        store_ok = await self.feed.store.ping()
        shutting_down = self.shutting_down.is_set()
        ready = store_ok and not shutting_down
        body = {
            "status": "ready" if ready else "unavailable",
            "timestamp": utc_timestamp(),
            "store": {"ok": store_ok},
            "shuttingDown": shutting_down,
        }
        return json_response(body, 200 if ready else 503)

    async def config(self, request: web.Request) -> web.Response:
        """What the web page needs to draw itself; no tenant list in token mode."""
        token_mode = self.settings.auth == "token"
        return json_response(
            {
                "tenants": [] if token_mode else list(self.catalogue.tenants),
                "auth": self.settings.auth,
                "maxMessageLength": self.settings.max_message_length,
                "version": __version__,
            }
        )


def resident_set_bytes() -> int:
    """Current RSS (not the peak that `resource` reports), from /proc where it exists."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
