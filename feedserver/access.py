"""One middleware per HTTP request: its `X-Request-ID`, its access log line, its metrics."""

from __future__ import annotations

import asyncio
import logging
import re
import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from . import logs
from .metrics import FeedMetrics
from .randomness import RandomBytes

log = logging.getLogger("feedserver.access")

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID = web.RequestKey("request_id", str)
# A caller's id is kept when it cannot break a log line or a header; otherwise we make one.
SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._~:/+=@-]{1,128}")
UNMATCHED_ROUTE = "unmatched"
# nginx's code for "the client closed the connection before the response was sent".
CLIENT_CLOSED_REQUEST = 499


# New ids are cut from one batch of random bytes: one system call per this many ids.
IDS_PER_BATCH = 64
_ID_BYTES = 16


class RequestIds:
    """The caller's `X-Request-ID` when it is 1..128 safe characters, else a new one: 32
    random hex digits (as `secrets.token_hex(16)`); one draw of random bytes serves
    `IDS_PER_BATCH` requests."""

    __slots__ = ("_random",)

    def __init__(self) -> None:
        self._random = RandomBytes(IDS_PER_BATCH * _ID_BYTES)

    def for_header(self, header: str | None) -> str:
        if header is not None and SAFE_REQUEST_ID.fullmatch(header):
            return header
        return self.new()

    def new(self) -> str:
        return self._random.hex(_ID_BYTES)


def route_template(request: web.Request) -> str:
    """`/api/events`, `/css`, `/socket.io/` ...: bounded, unlike the raw path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED_ROUTE


class AccessLog:
    """Each answered request's access log line and metrics: the middleware's, and those of
    the WebSocket handshakes answered before aiohttp (`upgrades.DirectUpgrades`)."""

    __slots__ = ("_metrics",)

    def __init__(self, metrics: FeedMetrics) -> None:
        self._metrics = metrics

    def record(self, method: str, route: str, status: int, seconds: float) -> None:
        """`route` must be a route template, never a raw path."""
        self._metrics.http_request(method, route, status, seconds)
        if log.isEnabledFor(logging.INFO):  # the line's fields are not free to build
            log.info(
                "%s %s %d %.1fms",
                method,
                route,
                status,
                seconds * 1000,
                extra={
                    "method": method,
                    "route": route,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 3),
                },
            )


def access_middleware(access: AccessLog) -> Middleware:
    request_ids = RequestIds()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        rid = request_ids.for_header(request.headers.get(REQUEST_ID_HEADER))
        request[REQUEST_ID] = rid
        rid_token, tenant_token = logs.request_id.set(rid), logs.tenant.set(None)
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = CLIENT_CLOSED_REQUEST
            raise
        finally:
            seconds = time.perf_counter() - started
            access.record(request.method, route_template(request), status, seconds)
            logs.tenant.reset(tenant_token)
            logs.request_id.reset(rid_token)

    return middleware


def stamp_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """Echo the request id on a response about to be sent (`on_response_prepare`, so
    WebSocket upgrades and errors get it too)."""
    rid = request.get(REQUEST_ID)
    if rid is not None:
        response.headers[REQUEST_ID_HEADER] = rid
