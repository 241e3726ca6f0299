"""A tenant's backend in another process: it makes an ES256 / RS256 key pair, keeps the
private key, and prints the public JWK and tokens it signed (python + PyJWT only).

    minted = mint_elsewhere("ES256", "backend-1", ["acme", "tenant_b"])
    minted.jwk                 # public members only: upload it
    minted.tokens["acme"]      # a token for acme, kid "backend-1" in its header
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any, NamedTuple

_CHILD = """
import json, sys, time
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

alg, kid, *tenants = sys.argv[1:]
if alg == "ES256":
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
else:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
now = int(time.time())
def mint(tenant):
    body = {"tenant": tenant, "iat": now, "exp": now + 60}
    return jwt.encode(body, private, algorithm=alg, headers={"kid": kid})
print(json.dumps({"jwk": jwk, "tokens": {tenant: mint(tenant) for tenant in tenants}}))
"""


class Minted(NamedTuple):
    jwk: dict[str, Any]
    tokens: dict[str, str]


def mint_elsewhere(alg: str, kid: str, tenants: list[str]) -> Minted:
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, alg, kid, *tenants],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    printed = json.loads(child.stdout)
    return Minted(printed["jwk"], printed["tokens"])
