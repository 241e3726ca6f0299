"""A tenant's own signing keys through the admin API (`/api/admin/tenants/{id}/keys`,
`/revoke-tokens`, PATCH `policy`), used by REST callers and both real Socket.IO clients:
tenant isolation, uploaded public keys, rotation, and revocation of live sockets."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import jwt
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from feedserver.auth import mint_token
from feedserver.quotas import ConnectionCaps
from tests.clients import CLIENT_KINDS, open_client
from tests.conftest import ServerFactory
from tests.js_client import JsClient
from tests.minting import mint_elsewhere
from tests.socket_client import SocketClient

SECRET = "s" * 32
ADMIN = {"Authorization": f"Bearer {mint_token(SECRET, 'tenant_a', 3600, admin=True)}"}
REVOKED_WITHIN_S = 1.0
Client = JsClient | SocketClient


async def call(
    http: ClientSession, method: str, path: str, body: Any = None, **headers: str
) -> tuple[int, Any]:
    async with http.request(method, path, json=body, headers=headers) as resp:
        return resp.status, (await resp.json() if resp.content_length else None)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def signed(secret: str, kid: str, tenant: str, *, iat: int | None = None) -> str:
    """A token as a tenant's backend mints it with its HS256 secret (PyJWT, kid header)."""
    now = int(time.time())
    body = {"tenant": tenant, "iat": now if iat is None else iat, "exp": now + 600}
    return jwt.encode(body, secret, algorithm="HS256", headers={"kid": kid})


@pytest.fixture
async def server(start_server: ServerFactory) -> TestServer:
    return await start_server(auth="token", auth_secret=SECRET)


@pytest.fixture
async def http(server: TestServer) -> Any:
    async with ClientSession(str(server.make_url(""))) as session:
        yield session


async def new_tenant(http: ClientSession, tenant: str) -> None:
    assert (await call(http, "POST", "/api/admin/tenants", {"id": tenant}, **ADMIN))[0] == 201


async def add_key(http: ClientSession, tenant: str, body: dict[str, Any]) -> dict[str, Any]:
    status, key = await call(http, "POST", f"/api/admin/tenants/{tenant}/keys", body, **ADMIN)
    assert status == 201, key
    return dict(key)


async def hs256_key(http: ClientSession, tenant: str, kid: str) -> str:
    """A new HS256 key of `tenant`; its secret (shown this once)."""
    key = await add_key(http, tenant, {"alg": "HS256", "kid": kid})
    assert (key["kid"], key["alg"], key["status"]) == (kid, "HS256", "active")
    secret: str = key["secret"]
    return secret


async def publish(http: ClientSession, token: str, message: str = "x") -> tuple[int, Any]:
    return await call(http, "POST", "/api/events", {"message": message}, **bearer(token))


async def still_live(clients: list[Client], http: ClientSession, token: str, message: str) -> None:
    """Each socket is connected and delivered to: it gets an event published after."""
    status, event = await publish(http, token, message)
    assert status == 201, event
    for client in clients:
        assert (await client.expect_live_event())["message"] == message
        assert [line for line in client.unread() if line["type"] == "disconnect"] == []


async def expect_revoked(client: Client) -> None:
    """Told why, then disconnected by the server, within REVOKED_WITHIN_S."""
    [notice] = await client.expect_event("system_message", within=REVOKED_WITHIN_S)
    assert (notice["message"], notice["level"]) == ("credentials revoked", "warning")
    gone = await client.expect_type("disconnect", within=REVOKED_WITHIN_S)
    assert gone["reason"] in ("io server disconnect", "server disconnect")


async def test_an_hs256_key_is_shown_once_and_its_tokens_act_for_its_tenant(
    http: ClientSession, server: TestServer
) -> None:
    await new_tenant(http, "acme")
    secret = await hs256_key(http, "acme", "k1")
    status, shown = await call(http, "GET", "/api/admin/tenants/acme", **ADMIN)
    assert status == 200
    assert shown["keys"] == [
        {
            "kid": "k1",
            "alg": "HS256",
            "createdAt": shown["keys"][0]["createdAt"],
            "status": "active",
        }
    ]
    assert shown["policy"] == {"acceptOperatorKey": False, "tokensValidAfter": None}
    _, listed = await call(http, "GET", "/api/admin/tenants", **ADMIN)
    assert secret not in str(listed)
    token = signed(secret, "k1", "acme")
    status, event = await publish(http, token, "own key")
    assert (status, event["tenantId"]) == (201, "acme")
    async with open_client("js", server.make_url(""), auth={"token": token}) as client:
        info, initial = await client.expect_established()
        assert info["tenantId"] == "acme" and [e["message"] for e in initial] == ["own key"]
    # A server-generated kid when none is asked for.
    generated = await add_key(http, "acme", {"alg": "HS256"})
    assert generated["kid"] and generated["secret"] != secret


@pytest.mark.parametrize("kind", CLIENT_KINDS)
async def test_a_key_of_one_tenant_never_authenticates_another_whatever_the_claims_say(
    http: ClientSession, server: TestServer, kind: str
) -> None:
    await new_tenant(http, "acme")
    secret = await hs256_key(http, "acme", "acme-key")
    forged = signed(secret, "acme-key", "tenant_b")
    for method, path in (("POST", "/api/events"), ("GET", "/api/events")):
        status, error = await call(http, method, path, {"message": "x"}, **bearer(forged))
        assert (status, error["error"]["code"]) == (401, "unauthorized"), path
    status, error = await call(http, "GET", "/api/events/stats", **bearer(forged))
    assert status == 401
    url = server.make_url("")
    async with open_client(kind, url, auth={"token": forged}) as refused:
        error = await refused.expect_type("connect_error")
        assert error["data"]["code"] == "unauthorized"
    # Nor on a socket of its own tenant, as a refreshed token.
    async with open_client(kind, url, auth={"token": signed(secret, "acme-key", "acme")}) as own:
        await own.expect_established()
        ack = await own.emit("refresh_token", {"token": forged})
        assert (ack["ok"], ack["error"]["code"]) == (False, "unauthorized")
    status, history = await call(
        http, "GET", "/api/events", **bearer(mint_token(SECRET, "tenant_b", 60))
    )
    assert (status, history["events"]) == (200, [])


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
async def test_an_uploaded_public_key_verifies_tokens_its_tenants_backend_minted(
    http: ClientSession, server: TestServer, alg: str
) -> None:
    await new_tenant(http, "acme")
    minted = await asyncio.to_thread(mint_elsewhere, alg, "backend-1", ["acme", "tenant_b"])
    key = await add_key(http, "acme", {"alg": alg, "jwk": minted.jwk, "kid": "backend-1"})
    assert (key["kid"], key["alg"], "secret" in key) == ("backend-1", alg, False)
    assert key["jwk"] == {m: minted.jwk[m] for m in key["jwk"]}  # public members, as uploaded
    status, event = await publish(http, minted.tokens["acme"], "from the backend")
    assert (status, event["tenantId"]) == (201, "acme")
    async with open_client(
        "js", server.make_url(""), auth={"token": minted.tokens["acme"]}
    ) as client:
        info, _ = await client.expect_established()
        assert info["tenantId"] == "acme"
    status, error = await publish(http, minted.tokens["tenant_b"])
    assert (status, error["error"]["code"]) == (401, "unauthorized")


async def test_rotation_two_keys_active_drops_nothing_and_revoking_one_ends_exactly_its_sockets(
    http: ClientSession, server: TestServer
) -> None:
    await new_tenant(http, "acme")
    old = signed(await hs256_key(http, "acme", "old"), "old", "acme")
    url = server.make_url("")
    async with (
        open_client("js", url, auth={"token": old}) as js_old,
        open_client("python", url, auth={"token": old}) as py_old,
    ):
        for client in (js_old, py_old):
            await client.expect_established()
        new = signed(await hs256_key(http, "acme", "new"), "new", "acme")  # both active now
        async with (
            open_client("js", url, auth={"token": new}) as js_new,
            open_client("python", url, auth={"token": new}) as py_new,
            open_client("js", url, auth={"token": mint_token(SECRET, "tenant_a", 60)}) as other,
        ):
            for client in (js_new, py_new, other):
                await client.expect_established()
            both = [js_old, py_old, js_new, py_new]
            await still_live(both, http, old, "with the old key")
            await still_live(both, http, new, "with the new key")
            revoked = time.monotonic()
            assert await call(http, "DELETE", "/api/admin/tenants/acme/keys/old", **ADMIN) == (
                204,
                None,
            )
            for client in (js_old, py_old):
                await expect_revoked(client)
            assert time.monotonic() - revoked < REVOKED_WITHIN_S
            await still_live([js_new, py_new], http, new, "after the rotation")
            assert [line for line in other.unread() if line["type"] == "disconnect"] == []
    status, error = await publish(http, old)
    assert (status, error["error"]["code"]) == (401, "unauthorized")
    _, shown = await call(http, "GET", "/api/admin/tenants/acme", **ADMIN)
    assert [(k["kid"], k["status"]) for k in shown["keys"]] == [
        ("old", "revoked"),
        ("new", "active"),
    ]
    # Revoking again changes nothing; a revoked kid is not given to a new key.
    assert (await call(http, "DELETE", "/api/admin/tenants/acme/keys/old", **ADMIN))[0] == 204
    status, error = await call(
        http, "POST", "/api/admin/tenants/acme/keys", {"alg": "HS256", "kid": "old"}, **ADMIN
    )
    assert (status, error["error"]["code"]) == (409, "key_exists")


async def test_a_socket_refreshed_onto_the_new_key_outlives_the_old_keys_revocation(
    http: ClientSession, server: TestServer
) -> None:
    await new_tenant(http, "acme")
    old = signed(await hs256_key(http, "acme", "old"), "old", "acme")
    new = signed(await hs256_key(http, "acme", "new"), "new", "acme")
    async with open_client("js", server.make_url(""), auth={"token": old}) as client:
        await client.expect_established()
        assert (await client.emit("refresh_token", {"token": new}))["ok"] is True
        await call(http, "DELETE", "/api/admin/tenants/acme/keys/old", **ADMIN)
        await still_live([client], http, new, "refreshed")


async def test_revoke_tokens_voids_those_issued_before_the_cut_off_and_their_sockets(
    http: ClientSession, server: TestServer
) -> None:
    await new_tenant(http, "acme")
    secret = await hs256_key(http, "acme", "k1")
    now = int(time.time())
    early, late = signed(secret, "k1", "acme", iat=now - 100), signed(secret, "k1", "acme")
    url = server.make_url("")
    async with (
        open_client("js", url, auth={"token": early}) as leaked,
        open_client("python", url, auth={"token": late}) as fresh,
    ):
        for client in (leaked, fresh):
            await client.expect_established()
        status, tenant = await call(
            http, "POST", "/api/admin/tenants/acme/revoke-tokens", {"before": now - 50}, **ADMIN
        )
        assert (status, tenant["policy"]["tokensValidAfter"]) == (200, now - 50)
        await expect_revoked(leaked)
        await still_live([fresh], http, late, "issued after")
        status, error = await publish(http, early)
        assert (status, error["error"]["code"]) == (401, "unauthorized")
        # Without a body: now. The socket whose token was issued before goes too.
        status, tenant = await call(http, "POST", "/api/admin/tenants/acme/revoke-tokens", **ADMIN)
        assert status == 200 and tenant["policy"]["tokensValidAfter"] >= now
        await expect_revoked(fresh)
    # An earlier cut-off later brings nothing back.
    status, tenant = await call(
        http, "POST", "/api/admin/tenants/acme/revoke-tokens", {"before": now - 500}, **ADMIN
    )
    assert tenant["policy"]["tokensValidAfter"] >= now
    # Issued at the cut-off (not a guess at the clock: the test may run slowly).
    fresher = signed(secret, "k1", "acme", iat=math.ceil(tenant["policy"]["tokensValidAfter"]))
    assert (await publish(http, fresher))[0] == 201


async def test_the_operator_key_is_turned_off_per_tenant_and_on_for_a_runtime_one(
    http: ClientSession, server: TestServer
) -> None:
    operator = mint_token(SECRET, "tenant_a", 600)
    own = signed(await hs256_key(http, "tenant_a", "own"), "own", "tenant_a")
    url = server.make_url("")
    async with (
        open_client("js", url, auth={"token": operator}) as by_operator,
        open_client("python", url, auth={"token": own}) as by_own,
    ):
        for client in (by_operator, by_own):
            await client.expect_established()
        status, tenant = await call(
            http,
            "PATCH",
            "/api/admin/tenants/tenant_a",
            {"policy": {"acceptOperatorKey": False}},
            **ADMIN,
        )
        assert (status, tenant["policy"]["acceptOperatorKey"]) == (200, False)
        await expect_revoked(by_operator)
        await still_live([by_own], http, own, "own key")
    status, error = await publish(http, operator)
    assert (status, error["error"]["code"]) == (401, "unauthorized")
    # The admin token naming tenant_a is still the operator's, for the admin API.
    assert (await call(http, "GET", "/api/admin/tenants", **ADMIN))[0] == 200
    await new_tenant(http, "acme")
    assert (await publish(http, mint_token(SECRET, "acme", 60)))[0] == 401
    await call(
        http, "PATCH", "/api/admin/tenants/acme", {"policy": {"acceptOperatorKey": True}}, **ADMIN
    )
    assert (await publish(http, mint_token(SECRET, "acme", 60)))[0] == 201


PRIVATE_EC_JWK = {  # RFC 7515 A.3, with its private member
    "kty": "EC",
    "crv": "P-256",
    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
    "d": "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI",
}


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code", "field"),
    [
        ("POST", "acme/keys", {"alg": "ES256", "jwk": PRIVATE_EC_JWK}, 422, "invalid_key", "jwk"),
        ("POST", "acme/keys", {"alg": "HS256", "jwk": {"kty": "oct"}}, 422, "invalid_key", "jwk"),
        (
            "POST",
            "acme/keys",
            {"alg": "RS256", "jwk": {k: v for k, v in PRIVATE_EC_JWK.items() if k != "d"}},
            422,
            "invalid_key",
            "jwk",
        ),
        ("POST", "acme/keys", {"alg": "HS256", "kid": "operator"}, 422, "invalid_key", "kid"),
        ("POST", "acme/keys", {"alg": "ES256"}, 400, "validation_error", "jwk"),
        ("POST", "acme/keys", {"alg": "none"}, 400, "validation_error", "alg"),
        ("POST", "acme/keys", {"alg": "HS256", "kid": "a b"}, 400, "validation_error", "kid"),
        ("POST", "acme/keys", {"alg": "HS256", "secret": "x"}, 400, "validation_error", "secret"),
        ("POST", "acme/keys", {"alg": "HS256", "kid": "taken"}, 409, "key_exists", "kid"),
        ("POST", "nobody/keys", {"alg": "HS256"}, 404, "not_found", "id"),
        ("DELETE", "acme/keys/nothing", None, 404, "not_found", "kid"),
        ("DELETE", "nobody/keys/taken", None, 404, "not_found", "id"),
        ("POST", "acme/revoke-tokens", {"before": "now"}, 400, "validation_error", "before"),
        ("POST", "acme/revoke-tokens", {"before": 4e9}, 400, "validation_error", "before"),
        ("POST", "acme/revoke-tokens", {"after": 1}, 400, "validation_error", "after"),
        ("POST", "nobody/revoke-tokens", {}, 404, "not_found", "id"),
        (
            "PATCH",
            "acme",
            {"policy": {"acceptOperatorKey": 1}},
            400,
            "validation_error",
            "policy.acceptOperatorKey",
        ),
        (
            "PATCH",
            "acme",
            {"policy": {"tokensValidAfter": 1}},
            400,
            "validation_error",
            "policy.tokensValidAfter",
        ),
    ],
)
async def test_refused_key_calls_answer_the_json_error_shape_and_change_nothing(
    http: ClientSession,
    method: str,
    path: str,
    body: Any,
    status: int,
    code: str,
    field: str,
) -> None:
    await new_tenant(http, "acme")
    await hs256_key(http, "acme", "taken")
    _, before = await call(http, "GET", "/api/admin/tenants/acme", **ADMIN)
    answered, error = await call(http, method, f"/api/admin/tenants/{path}", body, **ADMIN)
    assert (answered, error["error"]["code"]) == (status, code), error
    assert field in error["error"]["details"]
    assert await call(http, "GET", "/api/admin/tenants/acme", **ADMIN) == (200, before)


async def test_a_private_jwk_is_refused_saying_to_treat_it_as_leaked(http: ClientSession) -> None:
    await new_tenant(http, "acme")
    status, error = await call(
        http,
        "POST",
        "/api/admin/tenants/acme/keys",
        {"alg": "ES256", "jwk": PRIVATE_EC_JWK},
        **ADMIN,
    )
    assert status == 422
    assert "private key" in error["error"]["details"]["jwk"]
    assert "leaked" in error["error"]["details"]["jwk"]


async def test_key_calls_are_for_admins_only(http: ClientSession) -> None:
    await new_tenant(http, "acme")
    own = signed(await hs256_key(http, "acme", "k1"), "k1", "acme")
    for headers in ({}, bearer(own), bearer(mint_token(SECRET, "tenant_a", 60))):
        for method, path, body in (
            ("POST", "/api/admin/tenants/acme/keys", {"alg": "HS256"}),
            ("DELETE", "/api/admin/tenants/acme/keys/k1", None),
            ("POST", "/api/admin/tenants/acme/revoke-tokens", {}),
            ("PATCH", "/api/admin/tenants/acme", {"policy": {"acceptOperatorKey": True}}),
        ):
            status, error = await call(http, method, path, body, **headers)
            assert status in (401, 403) and error["error"]["code"] in ("unauthorized", "forbidden")
    _, shown = await call(http, "GET", "/api/admin/tenants/acme", **ADMIN)
    assert [(k["kid"], k["status"]) for k in shown["keys"]] == [("k1", "active")]
    assert shown["policy"] == {"acceptOperatorKey": False, "tokensValidAfter": None}


async def test_a_key_revoked_while_its_socket_is_being_admitted_refuses_that_socket(
    http: ClientSession, server: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection cap's count awaits Redis on a cluster of nodes: a revocation applied
    meanwhile finds no session to disconnect yet, so the connect itself must see it."""
    await new_tenant(http, "acme")
    token = signed(await hs256_key(http, "acme", "k1"), "k1", "acme")
    admitting, revoked = asyncio.Event(), asyncio.Event()
    admit = ConnectionCaps.admit

    async def slow_admit(caps: ConnectionCaps, tenant: str, address: str) -> None:
        admitting.set()
        await revoked.wait()  # as a Redis round trip during which the revocation lands
        await admit(caps, tenant, address)

    monkeypatch.setattr(ConnectionCaps, "admit", slow_admit)
    # The JS client: it connects in its own process (python-socketio's would wait in this
    # loop for the CONNECT reply, which waits for the test).
    async with open_client("js", server.make_url(""), auth={"token": token}) as client:
        await admitting.wait()
        assert (await call(http, "DELETE", "/api/admin/tenants/acme/keys/k1", **ADMIN))[0] == 204
        revoked.set()
        error = await client.expect_type("connect_error")
        assert error["data"]["code"] == "unauthorized"
