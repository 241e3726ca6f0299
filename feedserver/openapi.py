"""The OpenAPI 3 document of the REST API, generated from the marshmallow schemas."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from . import __version__
from .config import TENANT_RE, Settings
from .keys import KID_RE
from .messages import CONTROL_CHARACTERS
from .schemas import (
    IDEMPOTENCY_KEY_HEADER,
    ClientConfigSchema,
    ErrorSchema,
    EventSchema,
    HealthSchema,
    HistoryQuerySchema,
    HistorySchema,
    KeyCreatedSchema,
    KeySchema,
    PolicySchema,
    PolicyUpdateSchema,
    PublishSchema,
    ReadySchema,
    RevokeTokensSchema,
    StatsSchema,
    SystemMessageSchema,
    SystemNoticeSchema,
    TenantCreateSchema,
    TenantListSchema,
    TenantSchema,
    TenantSettingsSchema,
    TenantUpdateSchema,
)

_ERRORS = {
    400: "Invalid request (`validation_error`, `details` per field)",
    401: "Missing, invalid or expired token (`unauthorized`, FEED_AUTH=token)",
    403: (
        "Unknown or deleted tenant (`forbidden_tenant`), a suspended one when publishing or "
        "subscribing (`tenant_suspended`), a tenant that disagrees with the token, or no "
        "admin rights (`forbidden`)"
    ),
    404: "No such tenant, or no such key of it (`not_found`)",
    409: (
        "A tenant with this id exists (`tenant_exists`), or a key with this kid, or the "
        "tenant has as many active keys as it may (`key_exists`)"
    ),
    413: "Body over FEED_MAX_BODY_BYTES (`payload_too_large`)",
    415: "Content-Type is not application/json; charset=utf-8 (`unsupported_media_type`)",
    422: (
        "Key material that cannot be a key of this server (`invalid_key`, `details` per "
        "field): a private JWK, another curve, an RSA key under 2048 bits, a jwk with HS256"
    ),
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


# Existing tenants the header's description gives as examples (`none` mode).
MAX_TENANT_EXAMPLES = 5


def openapi_document(settings: Settings, tenants: Sequence[str] = ()) -> dict[str, Any]:
    """The document; in `none` mode `tenants` (those that exist now) are examples of the
    tenant header: with tokens the document names no tenant."""
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
        TenantSettingsSchema,
        KeySchema,  # the nested before those they are in: apispec names each once
        KeyCreatedSchema,
        PolicySchema,
        TenantSchema,
        TenantListSchema,
        TenantCreateSchema,
        PolicyUpdateSchema,
        TenantUpdateSchema,
        RevokeTokensSchema,
    ):
        spec.components.schema(schema.__name__.removesuffix("Schema"), schema=schema)
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    token_mode = settings.auth == "token"
    # Tenants come and go at runtime, so the header is described by the id rule; the
    # document needs no credentials, so with tokens it names no tenant (as /api/config).
    examples = () if token_mode else tuple(tenants[:MAX_TENANT_EXAMPLES])
    tenant = _tenant_header(examples, required=False)
    # In `none` mode the header is the credential; with tokens it may only repeat the tenant.
    tenant_required = _tenant_header(examples, required=not token_mode)
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
    _admin_tenant_paths(spec, security)
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
    _link_keys(document["paths"])
    document["components"]["schemas"]["KeyCreate"] = _key_create()
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


def _admin_tenant_paths(spec: APISpec, security: list[dict[str, list[str]]]) -> None:
    admin = "Admin (an admin token; in `none` mode a loopback client)"
    body_errors = (400, 401, 403, 413, 415, 429, 500, 503)
    spec.path(
        path="/api/admin/tenants",
        operations={
            "get": _operation(
                f"{admin}: every tenant, by id",
                [],
                security,
                {200: ("The tenants", "TenantList")},
                (401, 403, 429, 500, 503),
            ),
            "post": _operation(
                f"{admin}: create an active tenant (every node follows within a second)",
                [],
                security,
                {201: ("The tenant", "Tenant")},
                (*body_errors, 409),
                body="TenantCreate",
            ),
        },
    )
    tenant_id = {"in": "path", "name": "tenant_id", "required": True, "schema": _tenant_id_rule()}
    spec.path(
        path="/api/admin/tenants/{tenant_id}",
        operations={
            "get": _operation(
                f"{admin}: one tenant",
                [tenant_id],
                security,
                {200: ("The tenant", "Tenant")},
                (401, 403, 404, 429, 500, 503),
            ),
            "patch": _operation(
                f"{admin}: change the status and the settings named (null: the server's)",
                [tenant_id],
                security,
                {200: ("The tenant as changed", "Tenant")},
                (*body_errors, 404),
                body="TenantUpdate",
            ),
            "delete": _operation(
                f"{admin}: delete the tenant, its events and its sockets",
                [tenant_id],
                security,
                {204: ("Deleted", None)},
                (401, 403, 404, 429, 500, 503),
            ),
        },
    )
    spec.path(
        path="/api/admin/tenants/{tenant_id}/keys",
        operations={
            "post": _operation(
                f"{admin}: a signing key of the tenant: `HS256` (the server makes the "
                "secret, in this answer only) or an uploaded `ES256` / `RS256` public JWK",
                [tenant_id],
                security,
                {201: ("The key; `secret` for HS256, shown this once", "KeyCreated")},
                (*body_errors, 404, 409, 422),
                body="KeyCreate",
            )
        },
    )
    kid = {"in": "path", "name": "kid", "required": True, "schema": {"type": "string"}}
    spec.path(
        path="/api/admin/tenants/{tenant_id}/keys/{kid}",
        operations={
            "delete": _operation(
                f"{admin}: revoke the key: its tokens are refused and the sockets it opened "
                "disconnected on every node within a second; it stays listed as revoked",
                [tenant_id, kid],
                security,
                {204: ("Revoked", None)},
                (401, 403, 404, 429, 500, 503),
            )
        },
    )
    spec.path(
        path="/api/admin/tenants/{tenant_id}/revoke-tokens",
        operations={
            "post": _operation(
                f"{admin}: void the tenant's tokens issued (`iat`) before `before` (default "
                "now), and disconnect the sockets they opened; the cut-off only moves forward",
                [tenant_id],
                security,
                {200: ("The tenant as changed", "Tenant")},
                (*body_errors, 404),
                body="RevokeTokens",
                body_required=False,
            )
        },
    )


def _key_create() -> dict[str, Any]:
    """The two bodies `KeyCreateSchema` takes, each on its own: what a generic schema of
    it would not say is that HS256 takes no JWK and ES256 / RS256 need a public one."""
    kid = {"type": "string", "pattern": KID_RE.pattern}
    public_jwk = {
        "type": "object",
        "description": "A public JWK: EC P-256 (kty, crv, x, y) or RSA >= 2048 bits (kty, n, "
        "e); a JWK with private members (d, p, q, ...) is refused (422)",
        "required": ["kty"],
        "properties": {"kty": {"type": "string", "enum": ["EC", "RSA"]}},
    }
    return {
        "oneOf": [
            {
                "type": "object",
                "description": "A secret the server generates (in the 201 answer only)",
                "required": ["alg"],
                "properties": {"alg": {"type": "string", "enum": ["HS256"]}, "kid": kid},
                "additionalProperties": False,
            },
            {
                "type": "object",
                "description": "An uploaded public key; its private key stays with the tenant",
                "required": ["alg", "jwk"],
                "properties": {
                    "alg": {"type": "string", "enum": ["ES256", "RS256"]},
                    "kid": kid,
                    "jwk": public_jwk,
                },
                "additionalProperties": False,
            },
        ]
    }


def _link_keys(paths: dict[str, Any]) -> None:
    """Links (OpenAPI 3 `links`): the tenant a create answers is the one keys are added to,
    the kid a key creation answers is the one a revocation names."""
    tenants, keys = "/api/admin/tenants", "/api/admin/tenants/{tenant_id}/keys"
    paths[tenants]["post"]["responses"]["201"]["links"] = {
        "AddKey": {
            "operationRef": _operation_ref(keys, "post"),
            "parameters": {"tenant_id": "$response.body#/id"},
        }
    }
    paths[keys]["post"]["responses"]["201"]["links"] = {
        "RevokeKey": {
            "operationRef": _operation_ref(keys + "/{kid}", "delete"),
            "parameters": {"tenant_id": "$request.path.tenant_id", "kid": "$response.body#/kid"},
        }
    }


def _operation_ref(path: str, method: str) -> str:
    """A JSON pointer to an operation of this document (`/` in a path is `~1`)."""
    return "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method


def _tenant_id_rule() -> dict[str, Any]:
    """What any tenant id looks like, without saying which exist."""
    return {"type": "string", "pattern": TENANT_RE.pattern}


def _tenant_header(examples: Sequence[str], *, required: bool) -> dict[str, Any]:
    header = {"in": "header", "name": "X-Tenant-ID", "required": required}
    header["schema"] = _tenant_id_rule()
    if examples:
        header["examples"] = {tenant: {"value": tenant} for tenant in examples}
    return header


def _operation(
    summary: str,
    parameters: list[dict[str, Any]],
    security: list[dict[str, list[str]]],
    successes: dict[int, tuple[str, str | None]],  # status -> (text, schema; None: no body)
    errors: tuple[int, ...],
    body: str | None = None,
    body_required: bool = True,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": parameters,
        "security": security,
        "responses": {
            **{
                str(code): _response(text, None if name is None else _ref(name))
                for code, (text, name) in successes.items()
            },
            **{str(code): _error(code) for code in errors},
        },
    }
    if body is not None:
        operation["requestBody"] = {
            "required": body_required,
            "content": {"application/json": {"schema": _ref(body)}},
        }
    return operation


def _response(description: str, schema: dict[str, Any] | None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "headers": _RATE_HEADERS}
    if schema is not None:
        response["content"] = {"application/json": {"schema": schema}}
    return response


def _error(code: int) -> dict[str, Any]:
    response = _response(_ERRORS[code], _ref("Error"))
    if code == 429:
        response["headers"] = {**_RATE_HEADERS, **_RETRY_AFTER}
    return response


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}
