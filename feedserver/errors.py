"""One exception hierarchy for every refusal; transports map it to JSON or an ack."""

from __future__ import annotations

from typing import Any


class FeedError(Exception):
    """A refusal with a stable `code`, an HTTP `status` and optional per-field `details`."""

    code = "internal_error"
    status = 500
    default_message = "Internal server error"

    def __init__(self, message: str | None = None, details: dict[str, Any] | None = None) -> None:
        super().__init__(message or self.default_message)
        self.message = message or self.default_message
        self.details = details

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class ValidationFailed(FeedError):
    code, status, default_message = "validation_error", 400, "Invalid request"


class InvalidKey(ValidationFailed):
    """Signing-key material that is well-formed JSON but cannot be a key of ours (a private
    JWK, a curve or size we do not take): 422, where a malformed body is 400."""

    code, status, default_message = "invalid_key", 422, "Invalid signing key"


class Unauthorized(FeedError):
    code, status, default_message = "unauthorized", 401, "Missing or invalid credentials"


class ForbiddenTenant(FeedError):
    code, status, default_message = "forbidden_tenant", 403, "Unknown or forbidden tenant"


class TenantSuspended(FeedError):
    """The tenant exists but may not publish or take new subscribers; its data is kept."""

    code, status, default_message = "tenant_suspended", 403, "Tenant suspended"


class Forbidden(FeedError):
    code, status, default_message = "forbidden", 403, "Not allowed"


class NotFound(FeedError):
    code, status, default_message = "not_found", 404, "Not found"


class MethodNotAllowed(FeedError):
    code, status, default_message = "method_not_allowed", 405, "Method not allowed"


class TenantExists(FeedError):
    code, status, default_message = "tenant_exists", 409, "Tenant exists"


class KeyExists(FeedError):
    code, status, default_message = "key_exists", 409, "Key exists"


class PayloadTooLarge(FeedError):
    code, status, default_message = "payload_too_large", 413, "Request body too large"


class HeadersTooLarge(FeedError):
    """A first request whose head does not end within the listener's bound (`listener`)."""

    code, status, default_message = "headers_too_large", 431, "Request headers too large"


class UnsupportedMediaType(FeedError):
    code, status = "unsupported_media_type", 415
    default_message = "Content-Type must be application/json"


class RateLimited(FeedError):
    code, status, default_message = "rate_limited", 429, "Too many requests"

    def __init__(self, retry_after: int, message: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)


class TooManyConnections(FeedError):
    code, status, default_message = "too_many_connections", 429, "Too many connections"


class StoreUnavailable(FeedError):
    code, status, default_message = "store_unavailable", 503, "Event store unavailable"


class ShuttingDown(FeedError):
    code, status, default_message = "shutting_down", 503, "Server shutting down"


class InternalError(FeedError):
    pass
