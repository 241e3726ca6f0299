"""Per-tenant signing keys, and the key ring that verifies tokens with them.

Who signs what:

- the operator key (`FEED_AUTH_SECRET`, HS256, no `kid` header or `kid: "operator"`) signs
  admin tokens, and tokens of the tenants whose policy accepts it (the tenants of
  `FEED_TENANTS`: `BOOTSTRAP_POLICY`);
- a tenant's own keys sign that tenant's tokens and nothing else: HS256 secrets the server
  generated, or ES256 / RS256 public JWKs the tenant uploaded (its private key never leaves it).

The unverified header and payload are read for one thing only, to pick the key: `kid` is
looked up among the keys of the tenant the `tenant` claim names. So a key of tenant A is only
ever found among A's keys, and a token it verifies is one whose `tenant` claim is A: it cannot
vouch for tenant B, whatever the token says. The algorithm comes from the key's record, never
from the header. Nothing here does I/O: the tenant registry hands in the keys and policies.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, get_args

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from .errors import ForbiddenTenant, InvalidKey, Unauthorized, ValidationFailed

Algorithm = Literal["HS256", "ES256", "RS256"]
KeyStatus = Literal["active", "revoked"]
ALGORITHMS: tuple[Algorithm, ...] = get_args(Algorithm)
KEY_STATUSES: tuple[KeyStatus, ...] = get_args(KeyStatus)
OPERATOR_KID = "operator"
OPERATOR_ALGORITHM: Algorithm = "HS256"
ADMIN_ROLE = "admin"
SECRET_BYTES = 32
MIN_RSA_BITS = 2048
# How far ahead of this server's clock a minting host's clock may run: a token's `iat` up to
# this far ahead is taken (then a cut-off made now does not void it), later it is refused;
# otherwise a key's holder could mint tokens with an `iat` no cut-off ever reaches.
MAX_CLOCK_AHEAD_S = 60
KID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]+$")
# The members a public JWK of each algorithm has; anything else uploaded is dropped.
_PUBLIC_MEMBERS: dict[str, tuple[str, ...]] = {
    "ES256": ("kty", "crv", "x", "y"),
    "RS256": ("kty", "n", "e"),
}
# Members only a private JWK has (RFC 7518 6.2.2, 6.3.2): whoever uploads one has sent us
# a secret they must now consider leaked, so it is refused rather than quietly trimmed.
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth")


def _invalid(field_name: str, reason: str) -> InvalidKey:
    return InvalidKey("Invalid signing key", {field_name: reason})


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One key of one tenant: an HS256 secret, or the public JWK of an ES256 / RS256 key.

    Construction validates it (also from a stored record), and prepares the key object
    the signature is checked with, once.
    """

    kid: str
    alg: Algorithm
    created_at: float
    status: KeyStatus = "active"
    # HS256: base64url text of >= 32 random bytes; the HMAC key is that text's UTF-8, as
    # any JWT library given the string will use it.
    secret: str | None = field(default=None, repr=False)  # kept out of logs and tracebacks
    public_jwk: Mapping[str, str] | None = None  # ES256 / RS256: the public members only
    verifier: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.kid, str) or not KID_RE.match(self.kid):
            raise _invalid("kid", "1 to 64 characters of A-Z a-z 0-9 _ -")
        if self.kid == OPERATOR_KID:
            raise _invalid("kid", f"{OPERATOR_KID!r} names the operator key")
        if self.alg not in ALGORITHMS:
            raise _invalid("alg", "one of " + ", ".join(ALGORITHMS))
        if self.status not in KEY_STATUSES:
            raise _invalid("status", "active or revoked")
        if self.alg == "HS256":
            verifier: object = _hmac_key(self.secret, self.public_jwk)
        else:
            verifier = _public_key(self.alg, self.public_jwk, self.secret)
        object.__setattr__(self, "verifier", verifier)

    @property
    def active(self) -> bool:
        return self.status == "active"

    def revoked(self) -> SigningKey:
        return replace(self, status="revoked")

    def to_record(self) -> dict[str, Any]:
        """The record the registry stores, secret included (never an API answer but the
        one that creates the key)."""
        out = self.to_json()
        if self.secret is not None:
            out["secret"] = self.secret
        return out

    def to_json(self) -> dict[str, Any]:
        """What the API shows (as `Tenant.to_json`): everything but the HS256 secret."""
        out: dict[str, Any] = {
            "kid": self.kid,
            "alg": self.alg,
            "createdAt": self.created_at,
            "status": self.status,
        }
        if self.public_jwk is not None:
            out["jwk"] = dict(self.public_jwk)
        return out

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> SigningKey:
        created_at = data.get("createdAt")
        if isinstance(created_at, bool) or not isinstance(created_at, int | float):
            raise _invalid("createdAt", "a UNIX time")
        jwk = data.get("jwk")
        if jwk is not None and not isinstance(jwk, Mapping):
            raise _invalid("jwk", "a JSON object")
        return cls(
            kid=data.get("kid"),  # type: ignore[arg-type]  # checked in __post_init__
            alg=data.get("alg"),  # type: ignore[arg-type]
            created_at=float(created_at),
            status=data.get("status", "active"),
            secret=data.get("secret"),
            public_jwk=dict(jwk) if jwk is not None else None,
        )


def _hmac_key(secret: object, jwk: object) -> bytes:
    if jwk is not None:
        raise _invalid("jwk", "an HS256 key has a secret, not a JWK")
    if not isinstance(secret, str) or not _SECRET_RE.match(secret):
        raise _invalid("secret", "base64url text")
    try:
        raw = base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
    except (binascii.Error, ValueError):
        raise _invalid("secret", "base64url text") from None
    if len(raw) < SECRET_BYTES:
        raise _invalid("secret", f"at least {SECRET_BYTES} random bytes")
    return secret.encode()


def _public_key(alg: str, jwk: object, secret: object) -> object:
    """The cryptography public key of an ES256 (P-256) or RS256 (>= 2048 bits) JWK."""
    if secret is not None:
        raise _invalid("secret", f"an {alg} key is a public JWK; only HS256 keys have secrets")
    if not isinstance(jwk, Mapping):
        raise _invalid("jwk", f"an {alg} key needs a public JWK")
    members = _PUBLIC_MEMBERS[alg]
    if set(jwk) != set(members) or not all(isinstance(jwk[m], str) for m in members):
        raise _invalid("jwk", "the string members " + ", ".join(members) + " and no others")
    if alg == "ES256":
        if jwk["kty"] != "EC" or jwk["crv"] != "P-256":
            raise _invalid("jwk", 'ES256 takes an EC key on curve P-256 (kty "EC", crv "P-256")')
        try:
            key = ECAlgorithm.from_jwk(dict(jwk))
        except (jwt.InvalidKeyError, ValueError):  # a point off the curve, bad base64
            raise _invalid("jwk", "not a valid P-256 public key") from None
        assert isinstance(key, ec.EllipticCurvePublicKey)  # no "d": cannot be private
        return key
    if jwk["kty"] != "RSA":
        raise _invalid("jwk", 'RS256 takes an RSA key (kty "RSA")')
    try:
        rsa_key = RSAAlgorithm.from_jwk(dict(jwk))
    except (jwt.InvalidKeyError, ValueError):
        raise _invalid("jwk", "not a valid RSA public key") from None
    assert isinstance(rsa_key, rsa.RSAPublicKey)
    if rsa_key.key_size < MIN_RSA_BITS:
        raise _invalid("jwk", f"RSA keys need at least {MIN_RSA_BITS} bits")
    return rsa_key


def new_kid() -> str:
    """A random url-safe kid (64 bits: unique per tenant without asking the registry)."""
    return "k" + secrets.token_urlsafe(8)


def generate_hs256_key(kid: str | None = None, *, created_at: float | None = None) -> SigningKey:
    """A new HS256 key with a server-generated secret (shown to its tenant once)."""
    secret = base64.urlsafe_b64encode(secrets.token_bytes(SECRET_BYTES)).rstrip(b"=").decode()
    return SigningKey(
        kid or new_kid(), "HS256", time.time() if created_at is None else created_at, secret=secret
    )


def parse_public_jwk(
    jwk: object, alg: str, *, kid: str | None = None, created_at: float | None = None
) -> SigningKey:
    """An uploaded public JWK as a key of `alg` (ES256 or RS256); private JWKs are refused.

    The kid is `kid`, else the JWK's own `kid`, else a new one. Only the public members are
    kept; a JWK `alg` or `use` member that contradicts `alg` is refused.
    """
    if alg not in _PUBLIC_MEMBERS:
        raise _invalid("alg", "ES256 or RS256 (HS256 keys are generated by the server)")
    if not isinstance(jwk, Mapping):
        raise _invalid("jwk", "a JSON object")
    private = [m for m in _PRIVATE_MEMBERS if m in jwk]
    if private:
        raise _invalid(
            "jwk",
            f"this is a private key (it has {', '.join(repr(m) for m in private)}): upload "
            "the public key only, and treat this private key as leaked",
        )
    if jwk.get("alg", alg) != alg:
        raise _invalid("jwk", f"the JWK says alg {jwk['alg']!r}, the key is {alg}")
    if jwk.get("use", "sig") != "sig":
        raise _invalid("jwk", 'the JWK is not for signatures (use must be "sig")')
    missing = [m for m in _PUBLIC_MEMBERS[alg] if m not in jwk]
    if missing:
        raise _invalid("jwk", "missing " + ", ".join(missing))
    public = {m: jwk[m] for m in _PUBLIC_MEMBERS[alg]}
    return SigningKey(
        kid or jwk.get("kid") or new_kid(),
        alg,  # type: ignore[arg-type]  # one of _PUBLIC_MEMBERS' keys
        time.time() if created_at is None else created_at,
        public_jwk=public,
    )


@dataclass(frozen=True, slots=True)
class TenantPolicy:
    """Which tokens of a tenant count. The default is a tenant created at runtime's: its own
    keys only, no cut-off."""

    accept_operator_key: bool = False
    # Tokens issued (`iat`) before this UNIX time are void; tokens must then carry `iat`.
    tokens_valid_after: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "acceptOperatorKey": self.accept_operator_key,
            "tokensValidAfter": self.tokens_valid_after,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TenantPolicy:
        accept = data.get("acceptOperatorKey", False)
        after = data.get("tokensValidAfter")
        if not isinstance(accept, bool):
            raise ValidationFailed("Invalid policy", {"acceptOperatorKey": "true or false"})
        if after is not None and (isinstance(after, bool) or not isinstance(after, int | float)):
            raise ValidationFailed("Invalid policy", {"tokensValidAfter": "a UNIX time or null"})
        return cls(accept, None if after is None else float(after))


# The tenants of FEED_TENANTS: tokens signed with FEED_AUTH_SECRET keep working.
BOOTSTRAP_POLICY = TenantPolicy(accept_operator_key=True)

KeysOf = Callable[[str], Sequence[SigningKey]]
PolicyOf = Callable[[str], TenantPolicy | None]  # None: no such tenant


def no_keys(tenant: str) -> Sequence[SigningKey]:
    """The key lookup of a server without a tenant registry: no tenant has keys of its own."""
    return ()


class Credential(Protocol):
    """What revocation looks at in a verified token (`Claims`) or a `Principal`."""

    @property
    def kid(self) -> str | None: ...

    @property
    def issued_at(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class Claims:
    """A verified token: the tenant whose key (or the operator key) signed it. None: an
    admin token whose tenant no longer takes the operator's tokens (it is an admin's still,
    acting for no tenant)."""

    tenant: str | None
    kid: str  # OPERATOR_KID, or the kid of one of the tenant's keys
    admin: bool
    expires_at: float
    issued_at: float | None


def still_valid(
    credential: Credential, keys: Sequence[SigningKey], policy: TenantPolicy | None
) -> bool:
    """Whether a token-authenticated principal still stands, given its tenant's current keys
    and policy: its key not revoked, the operator key still accepted, issued after the cut-off.

    Expiry is not looked at (the caller knows the time). A credential without a kid was not
    authenticated by a key, and never stands.
    """
    return _refusal(credential, keys, policy) is None


def _refusal(
    credential: Credential, keys: Sequence[SigningKey], policy: TenantPolicy | None
) -> str | None:
    if policy is None:
        return "Unknown or forbidden tenant"
    if credential.kid == OPERATOR_KID:
        if not policy.accept_operator_key:
            return "This tenant does not accept the operator key"
    elif not any(k.kid == credential.kid and k.active for k in keys):
        return "Token key revoked"
    cutoff = policy.tokens_valid_after
    if cutoff is not None and (credential.issued_at is None or credential.issued_at < cutoff):
        return "Token issued before the tenant's cut-off (or without iat)"
    return None


class KeyRing:
    """Verifies a token with the one key its `kid` and `tenant` name, and that key's algorithm."""

    def __init__(self, keys_of: KeysOf, policy_of: PolicyOf, operator_secret: str) -> None:
        self._keys_of = keys_of
        self._policy_of = policy_of
        self._operator_secret = operator_secret.encode()

    def stands(self, credential: Credential, tenant: str) -> bool:
        """Whether a credential of `tenant` verified earlier still stands now (`still_valid`
        with the tenant's current keys and policy)."""
        return still_valid(credential, self._keys_of(tenant), self._policy_of(tenant))

    def verify(self, token: str) -> Claims:
        """The token's claims, or `Unauthorized` (`ForbiddenTenant`: a tenant token validly
        signed by the operator key for a tenant that does not exist). An admin token acts
        for its tenant while that tenant takes the operator's tokens, else for none."""
        kid = _unverified_kid(token)
        keys: Sequence[SigningKey] = ()
        if kid is None or kid == OPERATOR_KID:
            kid = OPERATOR_KID
            payload = _decode(token, self._operator_secret, OPERATOR_ALGORITHM)
        else:
            keys = self._keys_of(tenant) if (tenant := _unverified_tenant(token)) else ()
            key = _only(keys, kid)
            # Verified with the key of the tenant the payload names: the signature covers
            # that payload, so the tenant claim below is the key's tenant.
            payload = _decode(token, key.verifier, key.alg)
        tenant = payload["tenant"]
        if not isinstance(tenant, str):
            raise ForbiddenTenant("Unknown or forbidden tenant")
        admin = payload.get("role") == ADMIN_ROLE
        if admin and kid != OPERATOR_KID:
            raise Unauthorized("Only the operator key grants the admin role")
        claims = Claims(tenant, kid, admin, float(payload["exp"]), _issued_at(payload))
        policy = self._policy_of(tenant)
        refusal = _refusal(claims, keys, policy)
        if refusal is None:
            return claims
        if admin:
            # The admin role is the operator's, not the tenant's: a tenant that is gone,
            # stopped taking the operator key or cut its tokens off no longer lets the token
            # act for it, but the operator keeps the admin API (else deleting the tenant an
            # admin token names, or turning the operator key off for every tenant, would
            # lock the operator out of it).
            return replace(claims, tenant=None)
        if policy is None:
            raise ForbiddenTenant("Unknown or forbidden tenant")
        raise Unauthorized(refusal)


def _unverified_kid(token: str) -> str | None:
    """The `kid` header, read before the signature is checked: only ever used to pick a key."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise Unauthorized("Invalid token") from None
    kid: str | None = header.get("kid")  # PyJWT refuses a kid that is not a string
    return kid


def _unverified_tenant(token: str) -> str | None:
    """The `tenant` claim, read before the signature is checked: whose keys to look in."""
    try:
        payload = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        raise Unauthorized("Invalid token") from None
    tenant = payload.get("tenant")
    return tenant if isinstance(tenant, str) else None


def _only(keys: Sequence[SigningKey], kid: str) -> SigningKey:
    # Two keys under one kid is a registry fault; neither is trusted rather than guessing.
    found = [k for k in keys if k.kid == kid]
    if len(found) != 1:
        raise Unauthorized("Invalid token")
    return found[0]


def _decode(token: str, verifier: Any, alg: Algorithm) -> Any:
    try:
        return jwt.decode(
            token,
            verifier,
            algorithms=[alg],
            # An `iat` a little in the future is a minting host's clock ahead of ours, not
            # an attack; PyJWT would refuse it. `_issued_at` bounds how far ahead.
            options={"require": ["exp", "tenant"], "verify_iat": False},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("Token expired") from None
    except jwt.InvalidTokenError:
        raise Unauthorized("Invalid token") from None


def _issued_at(payload: Mapping[str, Any]) -> float | None:
    if "iat" not in payload:
        return None
    iat = payload["iat"]
    if isinstance(iat, bool) or not isinstance(iat, int | float):
        raise Unauthorized("Invalid token")
    if iat > time.time() + MAX_CLOCK_AHEAD_S:
        raise Unauthorized("Token issued in the future")
    return float(iat)
