"""Response headers that helmet sets by default, on every response (API, static, errors)."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web, web_response
from multidict import CIMultiDict

from .errors import PayloadTooLarge

# Sets headers on a response about to be sent (called from `on_response_prepare`).
ResponseStamp = Callable[[web.Request, web.StreamResponse], None]

SERVER_NAME = "feedserver"
RESOURCE_POLICY = "Cross-Origin-Resource-Policy"
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self' ws: wss:",
        "img-src 'self' data:",
        "font-src 'self'",
        "object-src 'none'",
        "frame-ancestors 'none'",
        "base-uri 'self'",
        "form-action 'self'",
    ]
)

BASE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    RESOURCE_POLICY: "same-origin",
    "X-DNS-Prefetch-Control": "off",
    "X-Permitted-Cross-Domain-Policies": "none",
    # aiohttp would otherwise announce its name and version.
    "Server": SERVER_NAME,
}
HSTS = "max-age=31536000; includeSubDomains"


def security_headers(production: bool) -> dict[str, str]:
    headers = dict(BASE_HEADERS)
    if production:
        headers["Strict-Transport-Security"] = HSTS
    return headers


def page_headers(production: bool) -> dict[str, str]:
    """The headers of an answer outside `/api/` that sets no `Cache-Control` of its own
    (the page, its files, WebSocket upgrades)."""
    # The page's files may be kept, but are revalidated so an upgrade shows at the next load.
    return {**security_headers(production), "Cache-Control": "no-cache"}


def security_stamp(production: bool) -> ResponseStamp:
    """Adds the headers to a response about to be sent (API, static, errors, upgrades).

    The app calls it from `on_response_prepare`, which also covers WebSocket upgrades.
    """
    # As multidicts: update() takes another multidict in about half the time of a dict.
    headers = CIMultiDict(security_headers(production))
    # API answers carry tenant data: never kept by a browser or a proxy.
    api_headers = CIMultiDict(headers, **{"Cache-Control": "no-store"})
    others = CIMultiDict(page_headers(production))
    hide_server_version()

    def stamp(request: web.Request, response: web.StreamResponse) -> None:
        # A response meant for other origins (the socket.io client bundle) says so itself.
        own_policy = response.headers.get(RESOURCE_POLICY)
        if "Cache-Control" in response.headers:
            response.headers.update(headers)
        elif request.path.startswith("/api/"):
            response.headers.update(api_headers)
        else:
            response.headers.update(others)
        if own_policy is not None:
            response.headers[RESOURCE_POLICY] = own_policy

    return stamp


def hide_server_version() -> None:
    """No `Server: Python/3.x aiohttp/3.y` on the answers that bypass the application.

    aiohttp answers a request it cannot parse (a bad header, a bad method) itself, without
    `on_response_prepare`, and stamps it with its module-level `SERVER_SOFTWARE`; that
    name is only read when a response is prepared, so replacing it covers those answers too.
    """
    web_response.SERVER_SOFTWARE = SERVER_NAME  # type: ignore[attr-defined]


def polling_body_limit(path: str, max_bytes: int) -> Callable[[web.Request], None]:
    """A guard (see `api.error_middleware`): refuse an oversized Engine.IO long-polling
    POST before engine.io sees it.

    engine.io would refuse it too, but by closing the session and then waiting for a poll
    that never comes, so the request (and its connection) hangs.
    """

    def limit(request: web.Request) -> None:
        length = request.content_length
        if length is not None and length > max_bytes and request.path.startswith(path):
            raise PayloadTooLarge()

    return limit
