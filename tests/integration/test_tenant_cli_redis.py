"""`feedserver tenants` on the Redis of FEED_STORE, with a node running on it."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time

import jwt
import orjson
import pytest
from aiohttp import ClientSession

from feedserver.__main__ import main
from feedserver.app import TENANTS
from feedserver.store.redis import redis_client
from tests.clients import open_client
from tests.conftest import ServerFactory
from tests.feed_subscriber import subscribed
from tests.redis_server import RedisServer
from tests.tenant_changes import listening, next_change
from tests.unit.test_config import ATTRIBUTE

pytestmark = pytest.mark.redis


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer) -> None:
    for name in (*ATTRIBUTE, "FEED_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FEED_STORE", redis_server.url)


async def cli(*argv: str) -> int:
    # main() runs its own event loop: in a thread, next to the test's.
    return await asyncio.to_thread(main, ["tenants", *argv])


async def test_a_tenant_added_and_removed_by_the_cli_is_applied_by_a_running_node(
    redis_server: RedisServer, start_server: ServerFactory
) -> None:
    node = await start_server(store=redis_server.url)
    await listening(node.app[TENANTS])
    directory = node.app[TENANTS].directory
    created = next_change(directory, "acme")
    assert await cli("add", "acme") == 0
    assert await asyncio.wait_for(created, 1) is not None
    async with (
        ClientSession() as http,
        subscribed(str(node.make_url("")), "acme") as sub,
    ):
        async with http.post(
            node.make_url("/api/events"), json={"message": "hi"}, headers={"X-Tenant-ID": "acme"}
        ) as resp:
            assert resp.status == 201
        await sub.wait_for_seq(1)
        deleted = next_change(directory, "acme")
        assert await cli("rm", "acme") == 0
        assert await asyncio.wait_for(deleted, 1) is None
    client = redis_client(redis_server.url)
    try:
        assert [key async for key in client.scan_iter(match="feed:{acme}:*")] == []
    finally:
        await client.aclose()


async def test_rm_purges_the_events_also_when_no_node_runs(redis_server: RedisServer) -> None:
    assert await cli("add", "acme") == 0
    client = redis_client(redis_server.url)
    try:
        await client.set("feed:{acme}:seq", "3")  # as a node's publishes would have left it
        assert await cli("rm", "acme") == 0
        assert [key async for key in client.scan_iter(match="feed:{acme}:*")] == []
        assert await client.sismember("feed:tenants:deleted", "acme")
    finally:
        await client.aclose()


async def test_a_key_revoked_by_the_cli_disconnects_its_sockets_on_a_running_node(
    redis_server: RedisServer, start_server: ServerFactory
) -> None:
    node = await start_server(store=redis_server.url, auth="token", auth_secret="r" * 32)
    await listening(node.app[TENANTS])
    directory = node.app[TENANTS].directory
    assert await cli("add", "acme") == 0
    applied = next_change(directory, "acme")
    added = await asyncio.to_thread(_captured, "keys", "add", "acme", "--kid", "k1")
    await asyncio.wait_for(applied, 1)
    secret = orjson.loads(added)["secret"]
    now = int(time.time())
    token = jwt.encode(
        {"tenant": "acme", "iat": now, "exp": now + 60}, secret, "HS256", headers={"kid": "k1"}
    )
    async with open_client("js", node.make_url(""), auth={"token": token}) as client:
        await client.expect_established()
        assert await cli("keys", "rm", "acme", "k1") == 0
        [notice] = await client.expect_event("system_message", within=1)
        assert notice["message"] == "credentials revoked"
        await client.expect_type("disconnect", within=1)


def _captured(*argv: str) -> str:
    """What `feedserver tenants ARGV` prints (exit 0 asserted)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["tenants", *argv]) == 0
    return out.getvalue()
