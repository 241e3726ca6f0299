"""The OpenAPI 3 document of the REST API, generated from the marshmallow schemas."""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from . import __version__
from .config import TENANT_RE, Settings
from .messages import CONTROL_CHARACTERS
from .schemas import (
    IDEMPOTENCY_KEY_HEADER,
    ClientConfigSchema,
    ErrorSchema,
    EventSchema,
    HealthSchema,
    HistoryQuerySchema,
    HistorySchema,
    PublishSchema,
    ReadySchema,
    StatsSchema,
    SystemMessageSchema,
    SystemNoticeSchema,
)

_ERRORS = {
    400: "Invalid request (`validation_error`, `details` per field)",
    401: "Missing, invalid or expired token (`unauthorized`, FEED_AUTH=token)",
    403: "Unknown tenant, a tenant that disagrees with the token, or no admin rights",
    413: "Body over FEED_MAX_BODY_BYTES (`payload_too_large`)",
    415: "Content-Type is not application/json; charset=utf-8 (`unsupported_media_type`)",
    429: "Rate limited (`rate_limited`); see Retry-After",
    500: "Internal error (`internal_error`, no stack trace)",
    503: "The event store (or the Redis holding the rate limits) is unreachable",
}
# Present on every /api/ answer, except while the rate-limit storage (Redis) is unreachable:
# then requests are served uncounted rather than refused.
_RATE_HEADERS = {
    name: {"description": text, "required": False, "schema": {"type": "integer", "minimum": 0}}
    for name, text in (
        ("RateLimit-Limit", "requests allowed per window for this client address"),
        ("RateLimit-Remaining", "requests left in the current window"),
        ("RateLimit-Reset", "seconds until the window starts again"),
    )
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}


_IDEMPOTENCY_KEY = {
    "in": "header",
    "name": IDEMPOTENCY_KEY_HEADER,
    "required": False,
    "schema": {"type": "string", "pattern": r"^[\x21-\x7e]{1,128}$"},
}


def openapi_document(settings: Settings) -> dict[str, Any]:
    spec = APISpec(
        title="feedserver",
        version=__version__,
        openapi_version="3.0.3",
        info={"description": "Multi-tenant real-time event feed (PROTOCOL.md, version 1)."},
        plugins=[MarshmallowPlugin()],
    )
    for schema in (
        ErrorSchema,
        EventSchema,
        PublishSchema,
        HistorySchema,
        StatsSchema,
        HealthSchema,
        ReadySchema,
        ClientConfigSchema,
        SystemMessageSchema,
        SystemNoticeSchema,
    ):
        spec.components.schema(schema.__name__.removesuffix("Schema"), schema=schema)
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    token_mode = settings.auth == "token"
    # The document needs no credentials: with tokens it names no tenant (as /api/config).
    tenant_schema = _tenant_id_rule() if token_mode else _tenant_list(settings.tenants)
    tenant = _tenant_header(tenant_schema, required=False)
    # In `none` mode the header is the credential; with tokens it may only repeat the tenant.
    tenant_required = _tenant_header(tenant_schema, required=not token_mode)
    security: list[dict[str, list[str]]] = [{"bearer": []}] if token_mode else []

    spec.path(
        path="/api/events",
        operations={
            "post": _operation(
                "Publish an event for the caller's tenant",
                [tenant_required, _IDEMPOTENCY_KEY],
                security,
                {
                    201: ("The event", "Event"),
                    200: ("Idempotent replay: the event the key created first", "Event"),
                },
                (400, 401, 403, 413, 415, 429, 500, 503),
                body="Publish",
            ),
            "get": _operation(
                "History of the caller's tenant, oldest first",
                [tenant_required, {"in": "query", "schema": HistoryQuerySchema}],
                security,
                {200: ("Events", "History")},
                (400, 401, 403, 429, 500, 503),
            ),
        },
    )
    spec.path(
        path="/api/events/stats",
        operations={
            "get": _operation(
                "Per-tenant counters: one tenant, or all (admin, or `none` mode without tenant)",
                [tenant],
                security,
                {200: ("Counters", "Stats")},
                (401, 403, 429, 500, 503),
            )
        },
    )
    spec.path(
        path="/api/system-messages",
        operations={
            "post": _operation(
                "Admin: send `system_message` to every tenant (in `none` mode: loopback only)",
                [],
                security,
                {202: ("The notice as sent", "SystemNotice")},
                (400, 401, 403, 413, 415, 429, 500),
                body="SystemMessage",
            )
        },
    )
    spec.path(
        path="/api/health",
        operations={
            "get": _operation(
                "Liveness and store reachability",
                [],
                [],
                {200: ("Healthy", "Health"), 503: ("Store unreachable", "Health")},
                (429, 500),
            )
        },
    )
    spec.path(
        path="/api/ready",
        operations={
            "get": _operation(
                "Readiness: 503 while the store is unreachable or the server shuts down",
                [],
                [],
                {200: ("Ready", "Ready"), 503: ("Not ready", "Ready")},
                (429, 500),
            )
        },
    )
    spec.path(
        path="/api/config",
        operations={
            "get": _operation(
                "What the web page needs to draw itself",
                [],
                [],
                {200: ("Client configuration", "ClientConfig")},
                (429, 500),
            )
        },
    )
    spec.path(
        path="/api/openapi.json",
        operations={
            "get": {
                "summary": "This document",
                "responses": {
                    "200": _response("OpenAPI 3 document", {"type": "object"}),
                    **{str(code): _error(code) for code in (429, 500)},
                },
            }
        },
    )
    document: dict[str, Any] = spec.to_dict()
    for parameter in document["paths"]["/api/events"]["get"]["parameters"]:
        _absent_not_null(parameter["schema"])
    for field in document["components"]["schemas"]["Publish"]["properties"].values():
        _ecma_pattern(field)
    for name in ("Publish", "SystemMessage"):
        document["components"]["schemas"][name]["properties"]["message"] = _message_text(
            settings.max_message_length
        )
    return document


def _message_text(max_length: int) -> dict[str, Any]:
    """The rules of `messages.normalise_message` that a schema can say: length, no control
    characters but tab and newline, and something other than whitespace."""
    allowed = f"[^{CONTROL_CHARACTERS}]"
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": max_length,
        "pattern": f"^{allowed}*[^\\s{CONTROL_CHARACTERS}]{allowed}*$",
    }


def _absent_not_null(schema: dict[str, Any]) -> None:
    """A query value cannot be null: there `load_default=None` only means "may be absent"."""
    if schema.get("default", 0) is None:
        del schema["default"]
        schema.pop("nullable", None)


def _ecma_pattern(schema: dict[str, Any]) -> None:
    """JSON Schema patterns are ECMA 262, which has no `\\Z`: the end is `$`."""
    if schema.get("pattern", "").endswith("\\Z"):
        schema["pattern"] = schema["pattern"].removesuffix("\\Z") + "$"


def _tenant_list(tenants: tuple[str, ...]) -> dict[str, Any]:
    return {"type": "string", "enum": list(tenants)}


def _tenant_id_rule() -> dict[str, Any]:
    """What any tenant id looks like (FEED_TENANTS' rule), without saying which exist."""
    return {"type": "string", "pattern": TENANT_RE.pattern}


def _tenant_header(schema: dict[str, Any], *, required: bool) -> dict[str, Any]:
    return {"in": "header", "name": "X-Tenant-ID", "required": required, "schema": schema}


def _operation(
    summary: str,
    parameters: list[dict[str, Any]],
    security: list[dict[str, list[str]]],
    successes: dict[int, tuple[str, str]],
    errors: tuple[int, ...],
    body: str | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": parameters,
        "security": security,
        "responses": {
            **{str(code): _response(text, _ref(name)) for code, (text, name) in successes.items()},
            **{str(code): _error(code) for code in errors},
        },
    }
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(body)}},
        }
    return operation


def _response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": description,
        "headers": _RATE_HEADERS,
        "content": {"application/json": {"schema": schema}},
    }


def _error(code: int) -> dict[str, Any]:
    response = _response(_ERRORS[code], _ref("Error"))
    if code == 429:
        response["headers"] = {**_RATE_HEADERS, **_RETRY_AFTER}
    return response


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}
