"""Per-tenant signing keys: records, JWK uploads, the key ring's checks, revocation, minting."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from feedserver.auth import Principal, TenantCatalogue, TokenAuthenticator, mint_token
from feedserver.errors import ForbiddenTenant, Unauthorized, ValidationFailed
from feedserver.keys import (
    BOOTSTRAP_POLICY,
    MAX_CLOCK_AHEAD_S,
    OPERATOR_KID,
    Claims,
    KeyRing,
    SigningKey,
    TenantPolicy,
    generate_hs256_key,
    parse_public_jwk,
    still_valid,
)
from feedserver.tenants import Tenant, TenantDirectory
from tests.minting import mint_elsewhere

OPERATOR_SECRET = "o" * 48


class Registry:
    """The seam the tenant registry fills: keys and policy per tenant, changed in place."""

    def __init__(self) -> None:
        self.keys: dict[str, list[SigningKey]] = {}
        self.policies: dict[str, TenantPolicy] = {}

    def keys_of(self, tenant: str) -> Sequence[SigningKey]:
        return self.keys.get(tenant, [])

    def policy_of(self, tenant: str) -> TenantPolicy | None:
        return self.policies.get(tenant)

    def ring(self) -> KeyRing:
        return KeyRing(self.keys_of, self.policy_of, OPERATOR_SECRET)

    def add(self, tenant: str, key: SigningKey) -> SigningKey:
        self.keys.setdefault(tenant, []).append(key)
        return key

    def revoke(self, tenant: str, kid: str) -> None:
        self.keys[tenant] = [k.revoked() if k.kid == kid else k for k in self.keys[tenant]]


@pytest.fixture(scope="module")
def ec_private() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def rsa_private() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ec_jwk(private: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    return ECAlgorithm.to_jwk(private.public_key(), as_dict=True)


def rsa_jwk(private: rsa.RSAPrivateKey) -> dict[str, Any]:
    return RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)


def pem(private: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture
def registry(ec_private: ec.EllipticCurvePrivateKey, rsa_private: rsa.RSAPrivateKey) -> Registry:
    """tenant_a and tenant_b were created at runtime (own keys only); boot is from
    FEED_TENANTS (accepts the operator key). Both runtime tenants have a key named "shared"."""
    reg = Registry()
    reg.policies = {
        "tenant_a": TenantPolicy(),
        "tenant_b": TenantPolicy(),
        "boot": BOOTSTRAP_POLICY,
    }
    reg.add("tenant_a", generate_hs256_key("a-hs"))
    reg.add("tenant_a", parse_public_jwk(ec_jwk(ec_private), "ES256", kid="a-ec"))
    reg.add("tenant_a", parse_public_jwk(rsa_jwk(rsa_private), "RS256", kid="a-rsa"))
    reg.add("tenant_a", generate_hs256_key("shared"))
    reg.add("tenant_a", generate_hs256_key("a-old").revoked())
    reg.add("tenant_b", generate_hs256_key("b-hs"))
    reg.add("tenant_b", generate_hs256_key("shared"))
    return reg


def key(reg: Registry, tenant: str, kid: str) -> SigningKey:
    return next(k for k in reg.keys_of(tenant) if k.kid == kid)


def secret(reg: Registry, tenant: str, kid: str) -> str:
    found = key(reg, tenant, kid).secret
    assert found is not None
    return found


def claims(tenant: str, ttl: int = 60, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"tenant": tenant, "iat": now, "exp": now + ttl, **extra}


def signed(body: dict[str, Any], signer: Any, alg: str, kid: str | None) -> str:
    return jwt.encode(body, signer, algorithm=alg, headers={"kid": kid} if kid else None)


def forged_hs256(header: dict[str, Any], body: Any, hmac_key: bytes) -> str:
    """An HS256 token made by hand: PyJWT itself will not use a PEM as an HMAC secret."""

    def part(obj: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    signing_input = f"{part(header)}.{part(body)}"
    mac = hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], body: dict[str, Any]) -> str:
    return forged_hs256({**header, "alg": "none"}, body, b"").rsplit(".", 1)[0] + "."


# -- key records ------------------------------------------------------------------------


def test_a_generated_hs256_key_has_a_fresh_url_safe_secret_of_32_bytes() -> None:
    one, two = generate_hs256_key(), generate_hs256_key()
    assert one.alg == "HS256" and one.active and one.public_jwk is None
    assert one.secret is not None and two.secret is not None and one.secret != two.secret
    assert len(base64.urlsafe_b64decode(one.secret + "=")) == 32
    assert one.kid != two.kid and one.kid.replace("-", "").replace("_", "").isalnum()
    assert abs(one.created_at - time.time()) < 5


def test_a_key_round_trips_through_json_and_only_the_stored_form_has_the_secret(
    registry: Registry,
) -> None:
    for record in registry.keys_of("tenant_a"):
        assert SigningKey.from_record(json.loads(json.dumps(record.to_record()))) == record
        assert "secret" not in record.to_json()
    hs = key(registry, "tenant_a", "a-hs")
    assert hs.to_record()["secret"] == hs.secret
    assert hs.secret is not None and hs.secret not in repr(hs)
    assert key(registry, "tenant_a", "a-old").to_json()["status"] == "revoked"


def test_an_uploaded_jwk_keeps_only_its_public_members(
    ec_private: ec.EllipticCurvePrivateKey,
) -> None:
    jwk = {**ec_jwk(ec_private), "kid": "from-jwk", "alg": "ES256", "use": "sig", "x5u": "u"}
    record = parse_public_jwk(jwk, "ES256")
    assert record.kid == "from-jwk" and record.alg == "ES256" and record.secret is None
    assert record.public_jwk == {m: jwk[m] for m in ("kty", "crv", "x", "y")}
    assert parse_public_jwk(jwk, "ES256", kid="mine").kid == "mine"


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
def test_a_private_jwk_is_refused_with_a_clear_error(
    alg: str, ec_private: ec.EllipticCurvePrivateKey, rsa_private: rsa.RSAPrivateKey
) -> None:
    if alg == "ES256":
        jwk = ECAlgorithm.to_jwk(ec_private, as_dict=True)
    else:
        jwk = RSAAlgorithm.to_jwk(rsa_private, as_dict=True)
    assert "d" in jwk
    with pytest.raises(ValidationFailed) as refused:
        parse_public_jwk(jwk, alg)
    assert refused.value.details is not None
    assert "private key" in refused.value.details["jwk"] and "'d'" in refused.value.details["jwk"]


def small_rsa_jwk() -> dict[str, Any]:
    return rsa_jwk(rsa.generate_private_key(public_exponent=65537, key_size=1024))


def p384_jwk() -> dict[str, Any]:
    return ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP384R1()).public_key(), as_dict=True)


def off_curve(jwk: dict[str, Any]) -> dict[str, Any]:
    y = base64.urlsafe_b64decode(jwk["y"] + "==")
    bad = bytes([y[0] ^ 1]) + y[1:]
    return {**jwk, "y": base64.urlsafe_b64encode(bad).rstrip(b"=").decode()}


@pytest.mark.parametrize(
    ("make_jwk", "alg", "field_name"),
    [
        (lambda e, r: p384_jwk(), "ES256", "jwk"),
        (lambda e, r: rsa_jwk(r), "ES256", "jwk"),
        (lambda e, r: ec_jwk(e), "RS256", "jwk"),
        (lambda e, r: small_rsa_jwk(), "RS256", "jwk"),
        (lambda e, r: ec_jwk(e), "HS256", "alg"),
        (lambda e, r: ec_jwk(e), "none", "alg"),
        (lambda e, r: json.dumps(ec_jwk(e)), "ES256", "jwk"),
        (lambda e, r: {k: v for k, v in ec_jwk(e).items() if k != "y"}, "ES256", "jwk"),
        (lambda e, r: {**ec_jwk(e), "x": 7}, "ES256", "jwk"),
        (lambda e, r: {**ec_jwk(e), "alg": "ES384"}, "ES256", "jwk"),
        (lambda e, r: {**ec_jwk(e), "use": "enc"}, "ES256", "jwk"),
        (lambda e, r: off_curve(ec_jwk(e)), "ES256", "jwk"),
        (lambda e, r: {**ec_jwk(e), "kid": "a/b"}, "ES256", "kid"),
        (lambda e, r: {**ec_jwk(e), "kid": OPERATOR_KID}, "ES256", "kid"),
        (lambda e, r: {"kty": "oct", "k": "c2VjcmV0"}, "ES256", "jwk"),
    ],
    ids=[
        "P-384-for-ES256",
        "RSA-for-ES256",
        "EC-for-RS256",
        "RSA-1024",
        "HS256-upload",
        "alg-none",
        "not-an-object",
        "missing-y",
        "non-string-member",
        "jwk-alg-disagrees",
        "use-enc",
        "point-off-the-curve",
        "kid-not-url-safe",
        "kid-operator",
        "symmetric-jwk",
    ],
)
def test_an_unusable_jwk_is_refused_naming_the_field(
    make_jwk: Any,
    alg: str,
    field_name: str,
    ec_private: ec.EllipticCurvePrivateKey,
    rsa_private: rsa.RSAPrivateKey,
) -> None:
    with pytest.raises(ValidationFailed) as refused:
        parse_public_jwk(make_jwk(ec_private, rsa_private), alg)
    assert refused.value.details is not None and field_name in refused.value.details


@pytest.mark.parametrize(
    "change",
    [
        {"status": "suspended"},
        {"alg": "HS512"},
        {"kid": ""},
        {"createdAt": "yesterday"},
        {"secret": None},
        {"secret": "c2hvcnQ"},  # 5 bytes
        {"secret": "not base64url!" * 4},
        {"jwk": {"kty": "EC"}},  # an HS256 record with a JWK
    ],
)
def test_a_stored_record_is_validated_as_an_upload_is(change: dict[str, Any]) -> None:
    data = {**generate_hs256_key("k1").to_record(), **change}
    with pytest.raises(ValidationFailed):
        SigningKey.from_record(data)


def test_a_stored_asymmetric_record_holds_exactly_a_public_key(
    ec_private: ec.EllipticCurvePrivateKey,
) -> None:
    stored = parse_public_jwk(ec_jwk(ec_private), "ES256", kid="k1").to_record()
    for bad in (
        {**stored, "secret": generate_hs256_key().secret},
        {**stored, "jwk": ECAlgorithm.to_jwk(ec_private, as_dict=True)},  # the private key
        {k: v for k, v in stored.items() if k != "jwk"},
    ):
        with pytest.raises(ValidationFailed):
            SigningKey.from_record(bad)


def test_a_policy_round_trips_and_runtime_tenants_accept_only_their_own_keys() -> None:
    assert TenantPolicy() == TenantPolicy(accept_operator_key=False, tokens_valid_after=None)
    for policy in (TenantPolicy(), BOOTSTRAP_POLICY, TenantPolicy(True, 1700000000.5)):
        assert TenantPolicy.from_json(json.loads(json.dumps(policy.to_json()))) == policy
    for bad in ({"acceptOperatorKey": "yes"}, {"tokensValidAfter": "now"}):
        with pytest.raises(ValidationFailed):
            TenantPolicy.from_json(bad)


# -- the key ring -----------------------------------------------------------------------


def test_each_algorithm_verifies_with_the_tenants_own_key(
    registry: Registry, ec_private: ec.EllipticCurvePrivateKey, rsa_private: rsa.RSAPrivateKey
) -> None:
    ring = registry.ring()
    body = claims("tenant_a")
    for signer, alg, kid in (
        (secret(registry, "tenant_a", "a-hs"), "HS256", "a-hs"),
        (ec_private, "ES256", "a-ec"),
        (rsa_private, "RS256", "a-rsa"),
    ):
        verified = ring.verify(signed(body, signer, alg, kid))
        assert verified == Claims("tenant_a", kid, False, body["exp"], body["iat"])


def a_key_for_another_tenant(reg: Registry, ec_private: Any) -> dict[str, str]:
    a_hs, a_shared = secret(reg, "tenant_a", "a-hs"), secret(reg, "tenant_a", "shared")
    b_hs = secret(reg, "tenant_b", "b-hs")
    attacker = ec.generate_private_key(ec.SECP256R1())
    return {
        # A's key, B's claim: looked up among B's keys, where there is no "a-hs".
        "a-key-b-claim": signed(claims("tenant_b"), a_hs, "HS256", "a-hs"),
        # Both tenants have a key "shared": B's is used, and A's signature fails on it.
        "a-key-b-claim-kid-both-have": signed(claims("tenant_b"), a_shared, "HS256", "shared"),
        "a-ec-key-b-claim": signed(claims("tenant_b"), ec_private, "ES256", "a-ec"),
        "a-key-b-claim-no-kid": signed(claims("tenant_b"), a_hs, "HS256", None),
        # A's kid, someone else's signature.
        "a-kid-b-signature": signed(claims("tenant_a"), b_hs, "HS256", "a-hs"),
        "a-kid-b-shared-signature": signed(
            claims("tenant_a"), secret(reg, "tenant_b", "shared"), "HS256", "shared"
        ),
        "a-ec-kid-foreign-signature": signed(claims("tenant_a"), attacker, "ES256", "a-ec"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "a-key-b-claim",
        "a-key-b-claim-kid-both-have",
        "a-ec-key-b-claim",
        "a-key-b-claim-no-kid",
        "a-kid-b-signature",
        "a-kid-b-shared-signature",
        "a-ec-kid-foreign-signature",
    ],
)
def test_a_key_of_one_tenant_never_authenticates_another(
    registry: Registry, ec_private: ec.EllipticCurvePrivateKey, case: str
) -> None:
    token = a_key_for_another_tenant(registry, ec_private)[case]
    with pytest.raises(Unauthorized, match="Invalid token"):
        registry.ring().verify(token)


def alg_confusion(
    reg: Registry, ec_private: ec.EllipticCurvePrivateKey, rsa_private: rsa.RSAPrivateKey
) -> dict[str, str]:
    body = claims("tenant_a")
    stored_ec_jwk = json.dumps(key(reg, "tenant_a", "a-ec").to_json()["jwk"])
    stored_rsa_jwk = json.dumps(key(reg, "tenant_a", "a-rsa").to_json()["jwk"])
    hs = {"alg": "HS256", "typ": "JWT"}
    return {
        # The public key is public: an HS256 token keyed with it must not verify.
        "hs256-with-ec-pem": forged_hs256({**hs, "kid": "a-ec"}, body, pem(ec_private)),
        "hs256-with-ec-jwk": forged_hs256({**hs, "kid": "a-ec"}, body, stored_ec_jwk.encode()),
        "hs256-with-rsa-pem": forged_hs256({**hs, "kid": "a-rsa"}, body, pem(rsa_private)),
        "hs256-with-rsa-jwk": forged_hs256({**hs, "kid": "a-rsa"}, body, stored_rsa_jwk.encode()),
        # A real key of A, used under the kid of another of A's keys with another algorithm.
        "es256-under-rs256-kid": signed(body, ec_private, "ES256", "a-rsa"),
        "rs256-under-hs256-kid": signed(body, rsa_private, "RS256", "a-hs"),
        "hs512-under-hs256-kid": signed(body, secret(reg, "tenant_a", "a-hs"), "HS512", "a-hs"),
        "none-with-kid": unsigned({"kid": "a-hs"}, body),
        "none-without-kid": unsigned({}, claims("boot")),
        "none-operator-kid": unsigned({"kid": OPERATOR_KID}, claims("boot")),
    }


@pytest.mark.filterwarnings("ignore::jwt.InsecureKeyLengthWarning")  # the HS512 forgery
@pytest.mark.parametrize(
    "case",
    [
        "hs256-with-ec-pem",
        "hs256-with-ec-jwk",
        "hs256-with-rsa-pem",
        "hs256-with-rsa-jwk",
        "es256-under-rs256-kid",
        "rs256-under-hs256-kid",
        "hs512-under-hs256-kid",
        "none-with-kid",
        "none-without-kid",
        "none-operator-kid",
    ],
)
def test_the_algorithm_is_the_keys_never_the_tokens(
    registry: Registry,
    ec_private: ec.EllipticCurvePrivateKey,
    rsa_private: rsa.RSAPrivateKey,
    case: str,
) -> None:
    token = alg_confusion(registry, ec_private, rsa_private)[case]
    with pytest.raises(Unauthorized, match="Invalid token"):
        registry.ring().verify(token)


def test_a_revoked_key_is_refused_and_says_so_only_to_its_holder(registry: Registry) -> None:
    ring = registry.ring()
    real = signed(claims("tenant_a"), secret(registry, "tenant_a", "a-old"), "HS256", "a-old")
    with pytest.raises(Unauthorized, match="revoked"):
        ring.verify(real)
    forged = signed(claims("tenant_a"), secret(registry, "tenant_a", "a-hs"), "HS256", "a-old")
    with pytest.raises(Unauthorized, match="Invalid token"):
        ring.verify(forged)


def test_an_unknown_kid_is_refused(registry: Registry) -> None:
    a_hs = secret(registry, "tenant_a", "a-hs")
    for kid in ("a-nope", "A-HS", "a-hs "):
        with pytest.raises(Unauthorized, match="Invalid token"):
            registry.ring().verify(signed(claims("tenant_a"), a_hs, "HS256", kid))


def test_two_keys_under_one_kid_trust_neither(registry: Registry) -> None:
    twin = generate_hs256_key("a-hs")
    registry.add("tenant_a", twin)
    assert twin.secret is not None
    for signer in (twin.secret, secret(registry, "tenant_a", "a-hs")):
        with pytest.raises(Unauthorized, match="Invalid token"):
            registry.ring().verify(signed(claims("tenant_a"), signer, "HS256", "a-hs"))


@pytest.mark.parametrize("kid", [None, OPERATOR_KID])
def test_the_operator_key_is_refused_by_a_tenant_that_does_not_accept_it(
    registry: Registry, kid: str | None
) -> None:
    ring = registry.ring()
    with pytest.raises(Unauthorized, match="operator key"):
        ring.verify(signed(claims("tenant_a"), OPERATOR_SECRET, "HS256", kid))
    accepted = ring.verify(signed(claims("boot"), OPERATOR_SECRET, "HS256", kid))
    assert accepted.tenant == "boot" and accepted.kid == OPERATOR_KID


def test_a_token_without_a_kid_is_checked_with_the_operator_key_only(registry: Registry) -> None:
    # Signed by tenant A's own key but without its kid: not A's key that is tried.
    token = signed(claims("tenant_a"), secret(registry, "tenant_a", "a-hs"), "HS256", None)
    with pytest.raises(Unauthorized, match="Invalid token"):
        registry.ring().verify(token)


def test_only_the_operator_key_grants_the_admin_role(registry: Registry) -> None:
    ring = registry.ring()
    tenant_admin = signed(
        claims("tenant_a", role="admin"), secret(registry, "tenant_a", "a-hs"), "HS256", "a-hs"
    )
    with pytest.raises(Unauthorized, match="admin"):
        ring.verify(tenant_admin)
    assert ring.verify(signed(claims("boot", role="admin"), OPERATOR_SECRET, "HS256", None)).admin
    # The operator's admin token acts for a tenant only while it accepts the operator key;
    # an admin it stays (or no admin API would be left once every tenant refused that key).
    refusing = ring.verify(signed(claims("tenant_a", role="admin"), OPERATOR_SECRET, "HS256", None))
    assert (refusing.admin, refusing.tenant) == (True, None)
    registry.policies["boot"] = TenantPolicy(True, time.time() + 30)  # a cut-off after iat
    cut_off = ring.verify(signed(claims("boot", role="admin"), OPERATOR_SECRET, "HS256", None))
    assert (cut_off.admin, cut_off.tenant) == (True, None)
    gone = ring.verify(signed(claims("nobody", role="admin"), OPERATOR_SECRET, "HS256", None))
    assert (gone.admin, gone.tenant) == (True, None)


def test_a_tenant_keys_token_must_expire(registry: Registry) -> None:
    a_hs = secret(registry, "tenant_a", "a-hs")
    forever = {"tenant": "tenant_a", "iat": int(time.time())}
    with pytest.raises(Unauthorized, match="Invalid token"):
        registry.ring().verify(signed(forever, a_hs, "HS256", "a-hs"))
    with pytest.raises(Unauthorized, match="expired"):
        registry.ring().verify(signed(claims("tenant_a", ttl=-1), a_hs, "HS256", "a-hs"))


def test_a_cut_off_voids_tokens_issued_before_it(registry: Registry) -> None:
    cutoff = float(int(time.time()) - 100)
    a_hs = secret(registry, "tenant_a", "a-hs")
    registry.policies["tenant_a"] = TenantPolicy(tokens_valid_after=cutoff)
    registry.policies["boot"] = TenantPolicy(True, cutoff)
    ring = registry.ring()
    for tenant, signer, kid in (("tenant_a", a_hs, "a-hs"), ("boot", OPERATOR_SECRET, None)):
        before = {**claims(tenant), "iat": int(cutoff) - 1}
        with pytest.raises(Unauthorized, match="cut-off"):
            ring.verify(signed(before, signer, "HS256", kid))
        without_iat = {k: v for k, v in claims(tenant).items() if k != "iat"}
        with pytest.raises(Unauthorized, match="cut-off"):
            ring.verify(signed(without_iat, signer, "HS256", kid))
        at = {**claims(tenant), "iat": int(cutoff)}
        assert ring.verify(signed(at, signer, "HS256", kid)).issued_at == cutoff


def test_an_iat_ahead_of_the_servers_clock_is_accepted_but_not_a_non_numeric_one(
    registry: Registry,
) -> None:
    a_hs = secret(registry, "tenant_a", "a-hs")
    ahead = {**claims("tenant_a"), "iat": int(time.time()) + 30}
    assert registry.ring().verify(signed(ahead, a_hs, "HS256", "a-hs")).issued_at == ahead["iat"]
    for iat in ("today", True, None, [1]):
        with pytest.raises(Unauthorized, match="Invalid token"):
            registry.ring().verify(
                signed({**claims("tenant_a"), "iat": iat}, a_hs, "HS256", "a-hs")
            )


def test_an_unknown_tenant_is_forbidden_only_when_the_operator_key_really_signed(
    registry: Registry,
) -> None:
    ring = registry.ring()
    with pytest.raises(ForbiddenTenant):
        ring.verify(signed(claims("tenant_z"), OPERATOR_SECRET, "HS256", None))
    with pytest.raises(ForbiddenTenant):
        ring.verify(signed({**claims("x"), "tenant": 42}, OPERATOR_SECRET, "HS256", None))
    with pytest.raises(Unauthorized):
        ring.verify(signed(claims("tenant_z"), "w" * 48, "HS256", None))
    with pytest.raises(Unauthorized):
        ring.verify(
            signed(claims("tenant_z"), secret(registry, "tenant_a", "a-hs"), "HS256", "a-hs")
        )


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "a.b.c",
        forged_hs256({"alg": "HS256", "kid": 7}, claims("tenant_a"), OPERATOR_SECRET.encode()),
        jwt.encode({"exp": int(time.time()) + 60}, OPERATOR_SECRET, algorithm="HS256"),
        forged_hs256({"alg": "HS256"}, ["not", "an", "object"], OPERATOR_SECRET.encode()),
    ],
    ids=["empty", "garbage", "three-parts", "kid-not-a-string", "no-tenant", "payload-a-list"],
)
def test_a_malformed_token_is_unauthorized(registry: Registry, token: str) -> None:
    with pytest.raises(Unauthorized, match="Invalid token"):
        registry.ring().verify(token)


def test_rotation_two_active_keys_then_one_revoked(
    registry: Registry, ec_private: ec.EllipticCurvePrivateKey
) -> None:
    new = registry.add("tenant_a", generate_hs256_key("a-new"))
    assert new.secret is not None
    ring = registry.ring()
    old_token = signed(claims("tenant_a"), ec_private, "ES256", "a-ec")
    new_token = signed(claims("tenant_a"), new.secret, "HS256", "a-new")
    assert ring.verify(old_token).kid == "a-ec" and ring.verify(new_token).kid == "a-new"
    registry.revoke("tenant_a", "a-ec")
    with pytest.raises(Unauthorized, match="revoked"):
        ring.verify(old_token)
    assert ring.verify(new_token).tenant == "tenant_a"


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
def test_a_token_minted_elsewhere_verifies_with_only_the_public_jwk(
    registry: Registry, alg: str
) -> None:
    minted = mint_elsewhere(alg, "tenant-held", ["tenant_a", "tenant_b"])
    assert "d" not in minted.jwk  # the private key stayed in the child
    registry.add("tenant_a", parse_public_jwk(minted.jwk, alg, kid="tenant-held"))
    verified = registry.ring().verify(minted.tokens["tenant_a"])
    assert (verified.tenant, verified.kid, verified.admin) == ("tenant_a", "tenant-held", False)
    with pytest.raises(Unauthorized):
        registry.ring().verify(minted.tokens["tenant_b"])


# -- revocation of what is already connected ----------------------------------------------


def authenticator(registry: Registry) -> TokenAuthenticator:
    catalogue = TenantCatalogue(TenantDirectory(Tenant(t) for t in registry.policies))
    return TokenAuthenticator(
        catalogue, OPERATOR_SECRET, keys_of=registry.keys_of, policy_of=registry.policy_of
    )


def test_a_principal_carries_the_kid_and_iat_that_authenticated_it(registry: Registry) -> None:
    auth = authenticator(registry)
    body = claims("tenant_a")
    token = signed(body, secret(registry, "tenant_a", "a-hs"), "HS256", "a-hs")
    principal = auth.from_headers({"Authorization": f"Bearer {token}"})
    assert (principal.tenant, principal.kid, principal.issued_at) == (
        "tenant_a",
        "a-hs",
        body["iat"],
    )
    operator = auth.from_handshake({"token": mint_token(OPERATOR_SECRET, "boot", 60)}, {})
    assert operator.kid == OPERATOR_KID and operator.issued_at is not None
    with pytest.raises(Unauthorized, match="operator key"):
        auth.from_handshake({"token": mint_token(OPERATOR_SECRET, "tenant_a", 60)}, {})


def test_a_principal_stops_standing_when_its_key_is_revoked_or_a_cut_off_passes_it(
    registry: Registry,
) -> None:
    auth = authenticator(registry)
    token = signed(claims("tenant_a"), secret(registry, "tenant_a", "a-hs"), "HS256", "a-hs")
    principal = auth.from_handshake({"token": token}, {})

    def stands() -> bool:
        tenant = principal.require_tenant()
        return still_valid(principal, registry.keys_of(tenant), registry.policy_of(tenant))

    assert stands()
    registry.revoke("tenant_a", "a-ec")  # another key of the same tenant
    assert stands()
    registry.policies["tenant_a"] = TenantPolicy(tokens_valid_after=principal.issued_at)
    assert stands()  # issued at the cut-off, not before it
    assert principal.issued_at is not None
    registry.policies["tenant_a"] = TenantPolicy(tokens_valid_after=principal.issued_at + 1)
    assert not stands()
    registry.policies["tenant_a"] = TenantPolicy()
    registry.revoke("tenant_a", "a-hs")
    assert not stands()
    del registry.policies["tenant_a"]  # the tenant was deleted
    assert not stands()


def test_an_operator_principal_stands_while_its_tenant_accepts_the_operator_key(
    registry: Registry,
) -> None:
    principal = authenticator(registry).from_headers(
        {"Authorization": f"Bearer {mint_token(OPERATOR_SECRET, 'boot', 60)}"}
    )
    assert still_valid(principal, [], BOOTSTRAP_POLICY)
    assert not still_valid(principal, [], TenantPolicy())
    assert not still_valid(principal, [], TenantPolicy(True, time.time() + 10))


def test_a_principal_without_a_kid_never_stands(registry: Registry) -> None:
    assert not still_valid(Principal("tenant_a"), registry.keys_of("tenant_a"), TenantPolicy())


def test_under_a_cut_off_a_principal_without_iat_does_not_stand(registry: Registry) -> None:
    principal = Principal("tenant_a", kid="a-hs", issued_at=None)
    assert still_valid(principal, registry.keys_of("tenant_a"), TenantPolicy())
    cutoff = TenantPolicy(tokens_valid_after=0.0)
    assert not still_valid(principal, registry.keys_of("tenant_a"), cutoff)


# -- minting ------------------------------------------------------------------------------


def test_a_token_minted_with_a_tenant_key_verifies_under_its_kid(registry: Registry) -> None:
    a_hs = key(registry, "tenant_a", "a-hs")
    verified = registry.ring().verify(mint_token(None, "tenant_a", 60, key=a_hs))
    assert (verified.tenant, verified.kid) == ("tenant_a", "a-hs")
    assert a_hs.secret is not None
    by_kid = mint_token(a_hs.secret, "tenant_a", 60, kid="a-hs")
    assert registry.ring().verify(by_kid).kid == "a-hs"
    assert jwt.get_unverified_header(mint_token(OPERATOR_SECRET, "boot", 60)).get("kid") is None


def test_a_minted_token_carries_iat_and_exp(registry: Registry) -> None:
    before = int(time.time())
    verified = registry.ring().verify(mint_token(OPERATOR_SECRET, "boot", 90))
    assert verified.issued_at is not None and before <= verified.issued_at <= time.time()
    assert verified.expires_at == verified.issued_at + 90


@pytest.mark.parametrize(
    ("secret_given", "kid", "kid_of_key", "admin"),
    [
        (OPERATOR_SECRET, None, "a-hs", False),  # two things to sign with
        (None, "a-hs", "a-hs", False),
        (None, None, "a-hs", True),  # a tenant key cannot grant admin
        (None, None, "a-old", False),  # revoked
        (None, None, "a-ec", False),  # no secret: the tenant holds the private key
        (None, None, None, False),  # nothing to sign with
    ],
)
def test_minting_refuses_what_it_cannot_sign_with(
    registry: Registry,
    secret_given: str | None,
    kid: str | None,
    kid_of_key: str | None,
    admin: bool,
) -> None:
    signing_key = key(registry, "tenant_a", kid_of_key) if kid_of_key else None
    with pytest.raises(ValueError):
        mint_token(secret_given, "tenant_a", 60, admin=admin, kid=kid, key=signing_key)


def test_a_token_issued_further_in_the_future_than_clocks_drift_is_refused(
    registry: Registry,
) -> None:
    """Else whoever held a key once could mint tokens that outlive every cut-off."""
    a_hs = secret(registry, "tenant_a", "a-hs")
    far = int(time.time()) + MAX_CLOCK_AHEAD_S + 5
    registry.policies["tenant_a"] = TenantPolicy(tokens_valid_after=time.time())
    for tenant, signer, kid in (("tenant_a", a_hs, "a-hs"), ("boot", OPERATOR_SECRET, None)):
        future = {**claims(tenant, ttl=10 * 365 * 86_400), "iat": far}
        with pytest.raises(Unauthorized, match="issued in the future"):
            registry.ring().verify(signed(future, signer, "HS256", kid))
