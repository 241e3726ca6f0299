"""Who acts for which tenant: the tenant the caller names (`none`) or a signed token."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import jwt

from .errors import ForbiddenTenant, Unauthorized, ValidationFailed
from .keys import (
    ADMIN_ROLE,
    BOOTSTRAP_POLICY,
    KeyRing,
    KeysOf,
    PolicyOf,
    SigningKey,
    TenantPolicy,
    no_keys,
)
from .tenants import TenantDirectory


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: a tenant (None when the caller named none) and whether it is an admin."""

    tenant: str | None
    admin: bool = False
    expires_at: float | None = None  # UNIX time when the credential stops being valid
    # The key that signed the token (keys.OPERATOR_KID or a tenant key's kid): revoking a
    # key ends exactly the sessions it opened. None without tokens.
    kid: str | None = None
    issued_at: float | None = None  # the token's `iat`, for a tenant's cut-off

    def require_tenant(self) -> str:
        if self.tenant is None:
            raise ValidationFailed(
                "A tenant is required", {"tenant": "X-Tenant-ID header is required"}
            )
        return self.tenant


class Authenticator(Protocol):
    def from_headers(self, headers: Mapping[str, str]) -> Principal: ...

    def from_handshake(self, auth: Mapping[str, Any], query: Mapping[str, str]) -> Principal: ...

    def stands(self, principal: Principal) -> bool:
        """Whether a principal authenticated earlier still stands (its key not revoked
        since, not cut off): asked of live sockets when their tenant's keys change."""
        ...


class TenantCatalogue:
    """The tenants that exist now (the directory); any other id is refused the same way,
    never existed or deleted."""

    def __init__(self, directory: TenantDirectory) -> None:
        # Only well-formed ids are in the directory (`Tenant` checks), so a lookup alone
        # decides (no regex per call); the view follows every change.
        self.known: Mapping[str, object] = directory.view

    @property
    def tenants(self) -> tuple[str, ...]:
        """The ids that exist now."""
        return tuple(self.known)

    def knows(self, tenant: str) -> bool:
        return tenant in self.known

    def check(self, tenant: object) -> str:
        if not isinstance(tenant, str) or tenant not in self.known:
            raise ForbiddenTenant("Unknown or forbidden tenant")
        return tenant


class HeaderAuthenticator:
    """Development mode (as the original): the tenant comes from the request itself."""

    def __init__(self, catalogue: TenantCatalogue) -> None:
        self.catalogue = catalogue
        # Principals are immutable: one per tenant, made at its first request rather than
        # on every request; a cached one is used only while its tenant exists.
        self._principals: dict[str, Principal] = {}
        self._nobody = Principal(None)

    def from_headers(self, headers: Mapping[str, str]) -> Principal:
        # Absent means "no tenant"; present but empty is a malformed id like any other.
        tenant = headers.get("X-Tenant-ID")
        if tenant is None:
            return self._nobody
        principal = self._principals.get(tenant)
        if principal is None or tenant not in self.catalogue.known:
            principal = self._principals[tenant] = Principal(self.catalogue.check(tenant))
        return principal

    def from_handshake(self, auth: Mapping[str, Any], query: Mapping[str, str]) -> Principal:
        tenant = auth.get("tenant") or query.get("tenant")
        if not tenant:  # forbidden_tenant, as the Node original answers a socket without one
            raise ForbiddenTenant("Unknown or missing tenant", {"tenant": "tenant is required"})
        return Principal(self.catalogue.check(tenant))

    def stands(self, principal: Principal) -> bool:
        return True  # no credentials to revoke


class TokenAuthenticator:
    """`FEED_AUTH=token`: the tenant comes from a JWT (keys.KeyRing); a named tenant must agree.

    `keys_of` and `policy_of` are the tenant registry's; without one, no tenant has keys of
    its own and every tenant of the catalogue accepts the operator key (`secret`).
    """

    def __init__(
        self,
        catalogue: TenantCatalogue,
        secret: str,
        *,
        keys_of: KeysOf = no_keys,
        policy_of: PolicyOf | None = None,
    ) -> None:
        self.catalogue = catalogue
        self._keyring = KeyRing(keys_of, policy_of or self._bootstrap_policy, secret)

    def _bootstrap_policy(self, tenant: str) -> TenantPolicy | None:
        return BOOTSTRAP_POLICY if self.catalogue.knows(tenant) else None

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

    def stands(self, principal: Principal) -> bool:
        return principal.tenant is not None and self._keyring.stands(principal, principal.tenant)

    def _principal(self, token: str, named_tenant: object) -> Principal:
        claims = self._keyring.verify(token)
        if named_tenant is not None and named_tenant != claims.tenant:
            raise ForbiddenTenant("The tenant named does not match the token")
        return Principal(
            claims.tenant, claims.admin, claims.expires_at, claims.kid, claims.issued_at
        )


def mint_token(
    secret: str | None,
    tenant: str,
    ttl: int,
    *,
    admin: bool = False,
    kid: str | None = None,
    key: SigningKey | None = None,
) -> str:
    """A token for `tenant` valid `ttl` seconds (what `feedserver token` prints).

    Signed with `secret` (the operator key, or an HS256 secret whose `kid` is given), or
    with `key`, a tenant's active HS256 key (its kid goes in the header).
    """
    if key is not None:
        if secret is not None or kid is not None:
            raise ValueError("sign with a secret (and kid) or with a key, not both")
        if key.alg != "HS256" or key.secret is None or not key.active:
            raise ValueError(f"key {key.kid!r} is not an active HS256 key of this server")
        if admin:
            raise ValueError("only the operator key grants the admin role")
        secret, kid = key.secret, key.kid
    if secret is None:
        raise ValueError("a secret or a key is needed")
    now = int(time.time())
    # `iat` always: a tenant given a cut-off (`tokens_valid_after`) needs it on its tokens.
    claims: dict[str, Any] = {"tenant": tenant, "iat": now, "exp": now + ttl}
    if admin:
        claims["role"] = ADMIN_ROLE
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims, secret, algorithm="HS256", headers=headers)
