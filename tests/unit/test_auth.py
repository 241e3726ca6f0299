"""Token authentication: who may act for which tenant with which token."""

from __future__ import annotations

import time

import jwt
import pytest

from feedserver.auth import HeaderAuthenticator, TenantCatalogue, TokenAuthenticator, mint_token
from feedserver.errors import ForbiddenTenant, Unauthorized, ValidationFailed
from feedserver.tenants import Tenant, TenantDirectory

SECRET = "s" * 64
OTHER_SECRET = "o" * 64


@pytest.fixture
def tokens() -> TokenAuthenticator:
    return TokenAuthenticator(catalogue_of("tenant_a", "tenant_b"), SECRET)


def catalogue_of(*tenants: str) -> TenantCatalogue:
    return TenantCatalogue(TenantDirectory(Tenant(t) for t in tenants))


def bearer(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


def test_a_minted_token_acts_for_its_tenant_until_it_expires(tokens: TokenAuthenticator) -> None:
    principal = tokens.from_headers(bearer(mint_token(SECRET, "tenant_a", 60)))
    assert principal.tenant == "tenant_a" and not principal.admin
    assert principal.expires_at is not None
    assert time.time() + 55 < principal.expires_at <= time.time() + 60


def test_an_admin_token_carries_the_admin_role(tokens: TokenAuthenticator) -> None:
    principal = tokens.from_headers(bearer(mint_token(SECRET, "tenant_b", 60, admin=True)))
    assert principal.tenant == "tenant_b" and principal.admin


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer   "},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer not.a.jwt"},
        {"X-Tenant-ID": "tenant_a"},
    ],
)
def test_missing_or_malformed_credentials_are_unauthorized(
    tokens: TokenAuthenticator, headers: dict[str, str]
) -> None:
    with pytest.raises(Unauthorized):
        tokens.from_headers(headers)


def test_an_expired_token_is_unauthorized(tokens: TokenAuthenticator) -> None:
    expired = jwt.encode({"tenant": "tenant_a", "exp": int(time.time()) - 1}, SECRET, "HS256")
    with pytest.raises(Unauthorized, match="expired"):
        tokens.from_headers(bearer(expired))


@pytest.mark.parametrize(
    "token",
    [
        mint_token(OTHER_SECRET, "tenant_a", 60),
        jwt.encode({"tenant": "tenant_a"}, SECRET, "HS256"),  # no exp: would never expire
        jwt.encode({"exp": int(time.time()) + 60}, SECRET, "HS256"),  # no tenant
        jwt.encode({"tenant": "tenant_a", "exp": int(time.time()) + 60}, SECRET, "HS512"),
        # alg=none: an unsigned token must never be believed
        jwt.encode({"tenant": "tenant_a", "exp": int(time.time()) + 60}, None, "none"),  # type: ignore[arg-type]
    ],
    ids=["wrong-secret", "no-exp", "no-tenant", "other-algorithm", "alg-none"],
)
def test_tokens_not_signed_as_required_are_unauthorized(
    tokens: TokenAuthenticator, token: str
) -> None:
    with pytest.raises(Unauthorized):
        tokens.from_headers(bearer(token))
    with pytest.raises(Unauthorized):
        tokens.from_handshake({"token": token}, {})


def test_a_token_for_an_unknown_tenant_is_forbidden(tokens: TokenAuthenticator) -> None:
    with pytest.raises(ForbiddenTenant):
        tokens.from_headers(bearer(mint_token(SECRET, "tenant_z", 60)))


def test_a_named_tenant_that_disagrees_with_the_token_is_forbidden(
    tokens: TokenAuthenticator,
) -> None:
    token = mint_token(SECRET, "tenant_a", 60)
    with pytest.raises(ForbiddenTenant):
        tokens.from_headers(bearer(token, **{"X-Tenant-ID": "tenant_b"}))
    with pytest.raises(ForbiddenTenant):
        tokens.from_handshake({"token": token, "tenant": "tenant_b"}, {})
    with pytest.raises(ForbiddenTenant):
        tokens.from_handshake({}, {"token": token, "tenant": "tenant_b"})
    assert tokens.from_headers(bearer(token, **{"X-Tenant-ID": "tenant_a"})).tenant == "tenant_a"


def test_the_handshake_takes_the_token_from_auth_or_the_query(
    tokens: TokenAuthenticator,
) -> None:
    token = mint_token(SECRET, "tenant_b", 60)
    assert tokens.from_handshake({"token": token}, {}).tenant == "tenant_b"
    assert tokens.from_handshake({}, {"token": token}).tenant == "tenant_b"
    with pytest.raises(Unauthorized):
        tokens.from_handshake({"tenant": "tenant_b"}, {})
    with pytest.raises(Unauthorized):
        tokens.from_handshake({"token": 42}, {})


def test_an_empty_tenant_header_is_a_malformed_tenant_not_an_absent_one(
    tokens: TokenAuthenticator,
) -> None:
    with pytest.raises(ForbiddenTenant):
        tokens.from_headers(bearer(mint_token(SECRET, "tenant_a", 60), **{"X-Tenant-ID": ""}))
    with pytest.raises(ForbiddenTenant):
        HeaderAuthenticator(catalogue_of("tenant_a")).from_headers({"X-Tenant-ID": ""})
    assert HeaderAuthenticator(catalogue_of("tenant_a")).from_headers({}).tenant is None


def test_the_named_tenant_must_be_a_well_formed_existing_one() -> None:
    auth = HeaderAuthenticator(catalogue_of("tenant_a"))
    assert auth.from_headers({"X-Tenant-ID": "tenant_a"}).tenant == "tenant_a"
    for refused in ("tenant_b", "Bad Id", "TENANT_A", "tenant_a "):
        with pytest.raises(ForbiddenTenant):
            auth.from_headers({"X-Tenant-ID": refused})
    # Only well-formed ids can be in the directory: a lookup alone decides.
    with pytest.raises(ValidationFailed):
        Tenant("Bad Id")


async def test_a_deleted_tenant_is_refused_also_after_requests_made_its_principal() -> None:
    directory = TenantDirectory([Tenant("tenant_a"), Tenant("tenant_b")])
    auth = HeaderAuthenticator(TenantCatalogue(directory))
    assert auth.from_headers({"X-Tenant-ID": "tenant_a"}).tenant == "tenant_a"
    await directory.apply("tenant_a", None)
    with pytest.raises(ForbiddenTenant):
        auth.from_headers({"X-Tenant-ID": "tenant_a"})
    with pytest.raises(ForbiddenTenant):
        auth.from_handshake({"tenant": "tenant_a"}, {})
    await directory.apply("tenant_c", Tenant("tenant_c"))
    assert auth.from_headers({"X-Tenant-ID": "tenant_c"}).tenant == "tenant_c"
    assert TenantCatalogue(directory).tenants == ("tenant_b", "tenant_c")
