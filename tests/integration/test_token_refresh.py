"""`refresh_token`: a later token on a live socket moves its expiry (no disconnect, no
reconnect); a refused one changes nothing. Both real clients: socket.io-client@4 in node and
python-socketio."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestServer

from feedserver.app import GATEWAY
from tests.clients import CLIENT_KINDS, open_client
from tests.conftest import ServerFactory
from tests.socket_client import socket_client

SECRET = "k" * 32
# A first token's lifetime: long enough for node to start on a busy machine and the test to
# refresh, short enough to wait for. The exp is whole seconds, so 3..4 s are left.
SHORT_TTL = 4
# Both clients report the server's own disconnect, which they do not retry by themselves.
SERVER_DISCONNECT = {"js": "io server disconnect", "python": "server disconnect"}


def make_token(tenant: str, exp: float, *, admin: bool = False, secret: str = SECRET) -> str:
    claims: dict[str, Any] = {"tenant": tenant, "exp": exp}
    if admin:
        claims["role"] = "admin"
    return jwt.encode(claims, secret, algorithm="HS256")


def later() -> int:
    return int(time.time()) + 600


@pytest.fixture
async def token_server(start_server: ServerFactory) -> TestServer:
    return await start_server(auth="token", auth_secret=SECRET)


@pytest.mark.parametrize("kind", CLIENT_KINDS)
async def test_a_refreshed_socket_stays_connected_past_its_first_tokens_expiry(
    token_server: TestServer, kind: str
) -> None:
    url = token_server.make_url("")
    first_exp = int(time.time()) + SHORT_TTL
    first = make_token("tenant_a", first_exp)
    async with (
        open_client(kind, url, auth={"token": first}) as refreshed,
        open_client(kind, url, auth={"token": first}) as control,
    ):
        await refreshed.expect_established()
        await control.expect_established()
        second_exp = later()
        ack = await refreshed.emit("refresh_token", {"token": make_token("tenant_a", second_exp)})
        assert ack == {"ok": True, "expiresAt": second_exp * 1000}
        # The control socket, on the same first token, is disconnected at its exp: the
        # server's timer of the refreshed one (had it kept it) fired by then too.
        gone = await control.expect_type("disconnect", within=SHORT_TTL + 5)
        assert gone["reason"] == SERVER_DISCONNECT[kind]
        assert time.time() >= first_exp - 0.1
        posted = await refreshed.emit("create_event", {"message": "after the first exp"})
        assert posted["ok"] is True
        assert await refreshed.expect_live_event() == posted["event"]
        changes = [line["type"] for line in refreshed.lines if "connect" in line["type"]]
        assert changes == ["connect"]  # one connection all along


@pytest.mark.parametrize("kind", CLIENT_KINDS)
async def test_a_refused_refresh_leaves_the_socket_to_go_at_its_first_expiry(
    token_server: TestServer, kind: str
) -> None:
    first_exp = int(time.time()) + SHORT_TTL
    auth = {"token": make_token("tenant_a", first_exp)}
    async with open_client(kind, token_server.make_url(""), auth=auth) as client:
        await client.expect_established()
        other_tenant = await client.emit(
            "refresh_token", {"token": make_token("tenant_b", later())}
        )
        assert other_tenant["ok"] is False
        assert other_tenant["error"]["code"] == "forbidden_tenant"
        assert other_tenant["error"]["message"]
        # Not a way to become an admin either.
        admin = await client.emit(
            "refresh_token", {"token": make_token("tenant_a", later(), admin=True)}
        )
        assert admin["ok"] is False and admin["error"]["code"] == "forbidden"
        gone = await client.expect_type("disconnect", within=SHORT_TTL + 5)
        assert gone["reason"] == SERVER_DISCONNECT[kind]
        assert time.time() >= first_exp - 0.1


@pytest.mark.parametrize("kind", CLIENT_KINDS)
# Payloads made when the test runs: a token minted at collection could expire before a
# long run reaches the test (`later()` is 10 minutes), and be refused for that instead.
@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (lambda: {"token": "garbage"}, "unauthorized"),
        (lambda: {"token": ""}, "unauthorized"),
        (lambda: {"token": make_token("tenant_a", int(time.time()) - 5)}, "unauthorized"),
        (lambda: {"token": make_token("tenant_a", later(), secret="z" * 32)}, "unauthorized"),
        (lambda: {"token": jwt.encode({"tenant": "tenant_a"}, SECRET, "HS256")}, "unauthorized"),
        (lambda: {"token": make_token("tenant_x", later())}, "forbidden_tenant"),
        (lambda: {}, "validation_error"),
        (lambda: {"token": 42}, "validation_error"),
        (
            lambda: {"token": make_token("tenant_a", later()), "tenant": "tenant_a"},
            "validation_error",
        ),
        (lambda: make_token("tenant_a", later()), "validation_error"),
    ],
    ids=[
        "garbage",
        "empty",
        "expired",
        "wrong-secret",
        "no-exp",
        "unknown-tenant",
        "no-token",
        "not-a-string",
        "unknown-field",
        "bare-string",
    ],
)
async def test_a_bad_refresh_is_refused_and_the_socket_keeps_its_token(
    token_server: TestServer, kind: str, payload: Callable[[], object], code: str
) -> None:
    gateway = token_server.app[GATEWAY]
    auth = {"token": make_token("tenant_a", later())}
    async with open_client(kind, token_server.make_url(""), auth=auth) as client:
        info, _ = await client.expect_established()
        session = gateway._sessions[info["socketId"]]
        expiry, principal = session.expiry, session.principal
        ack = await client.emit("refresh_token", payload())
        assert ack["ok"] is False
        assert ack["error"]["code"] == code and ack["error"]["message"]
        assert session.expiry is expiry and expiry is not None and not expiry.cancelled()
        assert session.principal is principal
        assert (await client.emit("create_event", {"message": "still here"}))["ok"] is True


async def test_a_refresh_replaces_the_timer_and_the_principal_of_the_session(
    token_server: TestServer,
) -> None:
    gateway = token_server.app[GATEWAY]
    # An admin socket may continue on a plain token: a refresh can drop a role.
    auth = {"token": make_token("tenant_a", later(), admin=True)}
    async with socket_client(token_server.make_url(""), auth=auth) as client:
        info, _ = await client.expect_established()
        session = gateway._sessions[info["socketId"]]
        first = session.expiry
        assert first is not None and session.principal.admin
        second_exp = later() + 60
        ack = await client.emit("refresh_token", {"token": make_token("tenant_a", second_exp)})
        assert ack == {"ok": True, "expiresAt": second_exp * 1000}
        assert first.cancelled()
        assert session.expiry is not None and not session.expiry.cancelled()
        assert session.expiry.when() - first.when() == pytest.approx(60, abs=1)
        assert session.principal.expires_at == second_exp and not session.principal.admin
        # Leaving cancels the new timer, as it did the first.
        await gateway.sio.disconnect(info["socketId"])
        assert session.expiry.cancelled()


@pytest.mark.parametrize("kind", CLIENT_KINDS)
async def test_refresh_token_without_token_auth_is_refused(server: TestServer, kind: str) -> None:
    token = make_token("tenant_a", later())
    async with open_client(kind, server.make_url(""), auth={"tenant": "tenant_a"}) as client:
        await client.expect_established()
        ack = await client.emit("refresh_token", {"token": token})
        assert ack["ok"] is False and ack["error"]["code"] == "validation_error"
        assert ack["error"]["details"] == {"token": "this server does not use tokens"}


@pytest.mark.parametrize("kind", CLIENT_KINDS)
async def test_refresh_token_counts_against_the_per_address_limit(
    start_server: ServerFactory, kind: str
) -> None:
    server = await start_server(auth="token", auth_secret=SECRET, rate_limit_max_requests=2)
    auth = {"token": make_token("tenant_a", later())}
    async with open_client(kind, server.make_url(""), auth=auth) as client:
        await client.expect_established()
        for _ in range(2):
            ack = await client.emit("refresh_token", {"token": make_token("tenant_a", later())})
            assert ack["ok"] is True
        refused = await client.emit("refresh_token", {"token": make_token("tenant_a", later())})
        assert refused["ok"] is False and refused["error"]["code"] == "rate_limited"
