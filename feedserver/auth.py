"""Who acts for which tenant: `FEED_AUTH=none` takes the tenant the caller names."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .config import TENANT_RE
from .errors import ForbiddenTenant, ValidationFailed


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: a tenant (None when the caller named none) and whether it is an admin."""

    tenant: str | None
    admin: bool = False

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
        self._known = frozenset(tenants)

    def check(self, tenant: object) -> str:
        if not isinstance(tenant, str) or not TENANT_RE.match(tenant) or tenant not in self._known:
            raise ForbiddenTenant("Unknown or forbidden tenant")
        return tenant


class HeaderAuthenticator:
    """Development mode (as the original): the tenant comes from the request itself."""

    def __init__(self, catalogue: TenantCatalogue) -> None:
        self.catalogue = catalogue

    def from_headers(self, headers: Mapping[str, str]) -> Principal:
        tenant = headers.get("X-Tenant-ID")
        return Principal(None if not tenant else self.catalogue.check(tenant))

    def from_handshake(self, auth: Mapping[str, Any], query: Mapping[str, str]) -> Principal:
        tenant = auth.get("tenant") or query.get("tenant")
        if not tenant:
            raise ValidationFailed("A tenant is required", {"tenant": "tenant is required"})
        return Principal(self.catalogue.check(tenant))
