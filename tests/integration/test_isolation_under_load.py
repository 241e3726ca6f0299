"""No response body, header or socket payload of one tenant ever carries another's text.

Two tenants, several subscribers each (the real JS client and python-socketio), REST and
socket posts at once, every message a unique random marker; then every byte each tenant's
clients received is searched for the other tenant's markers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets

from aiohttp import ClientSession

from tests.clients import open_client
from tests.conftest import ServerFactory
from tests.js_client import JsClient
from tests.socket_client import SocketClient

TENANTS = ("tenant_a", "tenant_b")
SUBSCRIBERS = {"js": 1, "python": 3}  # per tenant
POSTS = 30  # per tenant and transport


async def test_tenant_b_never_receives_tenant_a_text_under_mixed_load(
    start_server: ServerFactory,
) -> None:
    server = await start_server()
    url = server.make_url("")
    markers = {t: {f"mk-{t}-{secrets.token_hex(8)}" for _ in range(2 * POSTS)} for t in TENANTS}
    seen_over_rest: dict[str, list[str]] = {t: [] for t in TENANTS}

    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(ClientSession(str(url)))
        clients = {
            tenant: [
                await stack.enter_async_context(open_client(kind, url, auth={"tenant": tenant}))
                for kind, count in SUBSCRIBERS.items()
                for _ in range(count)
            ]
            for tenant in TENANTS
        }
        for subscribers in clients.values():
            for client in subscribers:
                await client.expect_established()

        async def record(tenant: str, method: str, path: str, **kwargs: object) -> None:
            headers = {"X-Tenant-ID": tenant}
            async with http.request(method, path, headers=headers, **kwargs) as resp:  # type: ignore[arg-type]
                seen_over_rest[tenant].append(f"{dict(resp.headers)} {await resp.text()}")

        async def publish(tenant: str) -> None:
            texts = sorted(markers[tenant])
            rest, socket = texts[:POSTS], texts[POSTS:]
            senders = clients[tenant]

            async def post_in_turn(sender: JsClient | SocketClient, messages: list[str]) -> None:
                for message in messages:  # one client awaits one ack at a time
                    assert (await sender.emit("create_event", {"message": message}))["ok"]

            jobs = [record(tenant, "POST", "/api/events", json={"message": m}) for m in rest]
            jobs += [
                post_in_turn(sender, socket[n :: len(senders)]) for n, sender in enumerate(senders)
            ]
            jobs += [record(tenant, "GET", "/api/events?limit=500") for _ in range(5)]
            jobs += [record(tenant, "GET", "/api/events/stats") for _ in range(5)]
            await asyncio.gather(*jobs)

        await asyncio.gather(*(publish(tenant) for tenant in TENANTS))

        for tenant in TENANTS:
            await record(tenant, "GET", "/api/events?limit=500")
            for client in clients[tenant]:
                live = [(await client.expect_live_event())["message"] for _ in range(2 * POSTS)]
                assert set(live) == markers[tenant]

    for tenant, other in (TENANTS, TENANTS[::-1]):
        received = seen_over_rest[tenant] + [json.dumps(client.lines) for client in clients[tenant]]
        text = "\n".join(received)
        leaked = [marker for marker in markers[other] if marker in text]
        assert leaked == [], f"{tenant} received {len(leaked)} of {other}'s messages"
        assert other not in text, f"{tenant} was told about {other}"
