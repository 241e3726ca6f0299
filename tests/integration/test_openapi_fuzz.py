"""The REST API against its own OpenAPI document, fuzzed by schemathesis on a live server."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import orjson
import pytest
from aiohttp import ClientSession

from feedserver.auth import mint_token
from feedserver.config import TENANT_RE
from tests.conftest import ServerFactory

SECRET = "f" * 32
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
WARNINGS = (
    "missing_auth",
    "base_url_mismatch",
    "validation_mismatch",
    "missing_deserializer",
    "unused_openapi_auth",
    "unsupported_regex",
    "method_not_allowed",
    "constants_extraction",
    "unmatched_filter",
    "unresolvable_reference",
    "low_valid_rate",
    "rate_limited",
    "dictionary_mismatch",
    "timeout_units",
)
# Every check but `positive_data_acceptance`: the document cannot state every rule (a
# message that NFC makes longer than the limit, an Idempotency-Key header that disagrees
# with `idempotencyKey` in the body), so some schema-valid requests are rightly refused.
ARGS = (
    "--max-examples=25",
    "--exclude-checks=positive_data_acceptance",
    "--generation-database=none",
    "--seed=20261127",
    "--no-color",
    "--request-timeout=10",
    # Every warning but missing_test_data: a fuzzed kid names no key, so DELETE
    # .../keys/{kid} answers 404 to nearly all of them by design; the stateful phase
    # reaches real kids through the document's links (tenant -> key -> revocation).
    "--warnings=" + ",".join(WARNINGS),
)
BUDGET_S = 60


async def test_the_document_is_served_and_names_every_operation(
    start_server: ServerFactory,
) -> None:
    server = await start_server()
    async with (
        ClientSession(str(server.make_url(""))) as http,
        http.get("/api/openapi.json") as resp,
    ):
        assert resp.status == 200 and resp.content_type == "application/json"
        document = await resp.json()
    assert document["openapi"].startswith("3.")
    assert {(path, method) for path, ops in document["paths"].items() for method in ops} == {
        ("/api/events", "post"),
        ("/api/events", "get"),
        ("/api/events/stats", "get"),
        ("/api/system-messages", "post"),
        ("/api/admin/tenants", "get"),
        ("/api/admin/tenants", "post"),
        ("/api/admin/tenants/{tenant_id}", "get"),
        ("/api/admin/tenants/{tenant_id}", "patch"),
        ("/api/admin/tenants/{tenant_id}", "delete"),
        ("/api/admin/tenants/{tenant_id}/keys", "post"),
        ("/api/admin/tenants/{tenant_id}/keys/{kid}", "delete"),
        ("/api/admin/tenants/{tenant_id}/revoke-tokens", "post"),
        ("/api/health", "get"),
        ("/api/ready", "get"),
        ("/api/config", "get"),
        ("/api/openapi.json", "get"),
    }
    for name in (
        "Error",
        "Event",
        "History",
        "Stats",
        "Health",
        "Ready",
        "SystemMessage",
        "Tenant",
        "TenantList",
        "TenantCreate",
        "TenantUpdate",
        "Key",
        "KeyCreate",
        "KeyCreated",
        "Policy",
        "RevokeTokens",
    ):
        assert name in document["components"]["schemas"]


@pytest.mark.parametrize("auth", ["none", "token"])
async def test_fuzzing_finds_no_server_error_and_no_answer_outside_the_document(
    start_server: ServerFactory, auth: str
) -> None:
    server = await start_server(auth=auth, auth_secret=SECRET, tenant_max_events_per_sec=1_000_000)
    headers: list[str] = []
    if auth == "token":
        token = mint_token(SECRET, "tenant_a", 600, admin=True)
        headers = ["-H", f"Authorization: Bearer {token}"]
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        str(SCHEMATHESIS),
        "run",
        str(server.make_url("/api/openapi.json")),
        *ARGS,
        *headers,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout=BUDGET_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"schemathesis took more than {BUDGET_S}s") from None
    report = output.decode(errors="replace")
    assert process.returncode == 0, report
    assert "No issues found" in report, report
    assert time.monotonic() - started < BUDGET_S


async def test_in_token_mode_the_document_names_no_tenant(start_server: ServerFactory) -> None:
    """As /api/config, the document is open to anyone: with tokens it keeps the tenant list
    to itself; in `none` mode, where the header is the credential, it gives the tenants
    that exist as examples. In both, tenants come and go at runtime: the header is
    described by the tenant id rule."""
    tenants = ("acme-internal", "globex_7")
    documents = {}
    for auth in ("token", "none"):
        server = await start_server(auth=auth, auth_secret=SECRET, tenants=tenants)
        async with (
            ClientSession(str(server.make_url(""))) as http,
            http.get("/api/openapi.json") as resp,
        ):
            assert resp.status == 200
            documents[auth] = await resp.json()
    assert not [tenant for tenant in tenants if tenant in orjson.dumps(documents["token"]).decode()]
    for auth, document in documents.items():
        [header] = [
            parameter
            for parameter in document["paths"]["/api/events"]["post"]["parameters"]
            if parameter["name"] == "X-Tenant-ID"
        ]
        assert header["schema"] == {"type": "string", "pattern": TENANT_RE.pattern}
        assert sorted(header.get("examples", {})) == ([] if auth == "token" else sorted(tenants))
