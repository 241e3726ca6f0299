"""Who acts for which tenant: the tenant the caller names (`none`) or a signed token."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import jwt

from .config import TENANT_RE
from .errors import ForbiddenTenant, Unauthorized, ValidationFailed

TOKEN_ALGORITHM = "HS256"
ADMIN_ROLE = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: a tenant (None when the caller named none) and whether it is an admin."""

    tenant: str | None
    admin: bool = False
    expires_at: float | None = None  # UNIX time when the credential stops being valid

    def require_tenant(self) -> str:
        if self.tenant is None:
            raise ValidationFailed(
                "A tenant is required", {"tenant": "X-Tenant-ID header is required"}
            )
        return self.tenant


class Authenticator(Protocol):
    def from_headers(self, headers: Mapping[str, str]) -> Principal: ...

    def from_handshake(self, auth: Mapping[str, Any], query: Mapping[str, str]) -> Principal: ...


class TenantCatalogue:
    """The configured tenants; any other id is refused the same way, known or not."""

    def __init__(self, tenants: tuple[str, ...]) -> None:
        self.tenants = tenants
        # Only well-formed ids can be known, so a lookup alone decides (no regex per call).
        self._known = frozenset(t for t in tenants if TENANT_RE.match(t))

    def check(self, tenant: object) -> str:
        if not isinstance(tenant, str) or tenant not in self._known:
            raise ForbiddenTenant("Unknown or forbidden tenant")
        return tenant


class HeaderAuthenticator:
    """Development mode (as the original): the tenant comes from the request itself."""

    def __init__(self, catalogue: TenantCatalogue) -> None:
        self.catalogue = catalogue
        # Principals are immutable: one per tenant, made once rather than on every request.
        self._principals = {t: Principal(t) for t in catalogue.tenants if TENANT_RE.match(t)}
        self._nobody = Principal(None)

    def from_headers(self, headers: Mapping[str, str]) -> Principal:
        # Absent means "no tenant"; present but empty is a malformed id like any other.
        tenant = headers.get("X-Tenant-ID")
        if tenant is None:
            return self._nobody
        return self._principals.get(tenant) or Principal(self.catalogue.check(tenant))

    def from_handshake(self, auth: Mapping[str, Any], query: Mapping[str, str]) -> Principal:
        tenant = auth.get("tenant") or query.get("tenant")
        if not tenant:  # forbidden_tenant, as the Node original answers a socket without one
            raise ForbiddenTenant("Unknown or missing tenant", {"tenant": "tenant is required"})
        return Principal(self.catalogue.check(tenant))


class TokenAuthenticator:
    """`FEED_AUTH=token`: the tenant comes from an HS256 JWT; a named tenant must agree."""

    def __init__(self, catalogue: TenantCatalogue, secret: str) -> None:
        self.catalogue = catalogue
        self._secret = secret

    def from_headers(self, headers: Mapping[str, str]) -> Principal:
        scheme, _, token = headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("A bearer token is required")
        return self._principal(token.strip(), headers.get("X-Tenant-ID"))

    def from_handshake(self, auth: Mapping[str, Any], query: Mapping[str, str]) -> Principal:
        token = auth.get("token") or query.get("token")
        if not isinstance(token, str) or not token:
            raise Unauthorized("A token is required")
        return self._principal(token, auth.get("tenant") or query.get("tenant") or None)

    def _principal(self, token: str, named_tenant: object) -> Principal:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[TOKEN_ALGORITHM],
                options={"require": ["exp", "tenant"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("Token expired") from None
        except jwt.InvalidTokenError:
            raise Unauthorized("Invalid token") from None
        tenant = self.catalogue.check(claims["tenant"])
        if named_tenant is not None and named_tenant != tenant:
            raise ForbiddenTenant("The tenant named does not match the token")
        return Principal(tenant, claims.get("role") == ADMIN_ROLE, float(claims["exp"]))


def mint_token(secret: str, tenant: str, ttl: int, *, admin: bool = False) -> str:
    """A token for `tenant` valid `ttl` seconds (what `feedserver token` prints)."""
    claims: dict[str, Any] = {"tenant": tenant, "exp": int(time.time()) + ttl}
    if admin:
        claims["role"] = ADMIN_ROLE
    return jwt.encode(claims, secret, algorithm=TOKEN_ALGORITHM)
