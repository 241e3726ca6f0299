"""The operator page (/admin) in Chromium against the real server (FEED_AUTH=none, loopback)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator

import jwt
import pytest
from playwright.sync_api import Dialog, Locator, Page, expect

from .live_server import FeedServer, RestClient, start_server

pytestmark = pytest.mark.e2e

OpenPage = Callable[..., Page]
SECRET = "e2e-admin-secret-" + "x" * 40


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FeedServer]:
    log_path = tmp_path_factory.mktemp("feedserver-admin") / "server.log"
    with start_server(log_path, env={"FEED_AUTH": "token", "FEED_AUTH_SECRET": SECRET}) as server:
        yield server


def admin_token() -> str:
    claims = {"tenant": "tenant_a", "role": "admin", "exp": int(time.time()) + 3600}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def new_tenant_id() -> str:
    return f"admin_{uuid.uuid4().hex[:8]}"


def tenant_row(admin: Page, tenant_id: str) -> Locator:
    return admin.locator(f'[data-testid="tenant"][data-tenant="{tenant_id}"]')


def create_tenant(admin: Page, tenant_id: str) -> Locator:
    admin.get_by_test_id("new-tenant-id").fill(tenant_id)
    admin.get_by_test_id("create-tenant-submit").click()
    row = tenant_row(admin, tenant_id)
    expect(row.get_by_test_id("tenant-status")).to_have_text("active")
    return row


def create_key(admin: Page, row: Locator) -> tuple[str, str]:
    """(kid, secret) of a new HS256 key of the row's tenant, read from the secret box."""
    row.get_by_test_id("tenant-new-key").click()
    box = admin.get_by_test_id("secret-box")
    expect(box).to_be_visible()
    expect(box.get_by_test_id("secret-value")).not_to_be_empty()
    kid = box.get_by_test_id("secret-kid").inner_text()
    return kid, box.get_by_test_id("secret-value").inner_text()


def mint_token(admin: Page) -> str:
    admin.get_by_test_id("mint-token").click()
    expect(admin.get_by_test_id("minted")).to_be_visible()
    return admin.get_by_test_id("minted-token").inner_text()


def accept_next_dialog(page: Page, seen: list[str]) -> None:
    def accept(dialog: Dialog) -> None:
        seen.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)


def test_operator_creates_keys_suspends_and_deletes_a_tenant(
    open_admin: OpenPage, feed_server: FeedServer
) -> None:
    admin = open_admin()
    tenant_id = new_tenant_id()
    row = create_tenant(admin, tenant_id)
    expect(row.get_by_test_id("key")).to_have_count(0)

    kid, secret = create_key(admin, row)
    box = admin.get_by_test_id("secret-box")
    expect(box.get_by_test_id("secret-tenant")).to_have_text(tenant_id)
    assert len(secret) >= 32
    key = row.locator(f'[data-testid="key"][data-kid="{kid}"]')
    expect(key).to_have_attribute("data-status", "active")

    # The test token is signed in the page with that secret: the server's library verifies it.
    token = mint_token(admin)
    claims = jwt.decode(token, secret, algorithms=["HS256"])
    assert claims["tenant"] == tenant_id and claims["exp"] - claims["iat"] == 3600
    assert jwt.get_unverified_header(token)["kid"] == kid

    box.get_by_test_id("secret-dismiss").click()
    expect(box).to_be_hidden()
    assert secret not in admin.content()
    assert secret not in admin.evaluate("() => JSON.stringify(sessionStorage)")

    dialogs: list[str] = []
    accept_next_dialog(admin, dialogs)
    key.get_by_test_id("key-revoke").click()
    expect(key).to_have_attribute("data-status", "revoked")
    expect(key.get_by_test_id("key-revoke")).to_be_hidden()

    suspend = row.get_by_test_id("tenant-suspend")
    suspend.click()
    expect(row.get_by_test_id("tenant-status")).to_have_text("suspended")
    expect(suspend).to_have_text("Resume")
    suspend.click()
    expect(row.get_by_test_id("tenant-status")).to_have_text("active")
    suspend.click()
    expect(row.get_by_test_id("tenant-status")).to_have_text("suspended")

    accept_next_dialog(admin, dialogs)
    row.get_by_test_id("tenant-delete").click()
    expect(row).to_have_count(0)
    assert len(dialogs) == 2 and kid in dialogs[0] and tenant_id in dialogs[1]
    admin.reload()
    expect(admin.get_by_test_id("admin-status")).to_have_attribute("data-state", "live")
    expect(tenant_row(admin, tenant_id)).to_have_count(0)


def test_live_connections_and_event_rate_follow_the_tenant(
    open_admin: OpenPage, open_feed: OpenPage, rest: RestClient
) -> None:
    admin = open_admin()
    tenant_id = new_tenant_id()
    row = create_tenant(admin, tenant_id)
    connections = row.get_by_test_id("tenant-connections")
    expect(connections).to_have_text("0")

    feed = open_feed(tenant_id)
    expect(connections).to_have_text("1")
    for n in range(20):
        rest.post_event(tenant_id, f"event {n}")
    # The rate of one poll interval shows for a second; the sparkline keeps a minute of them.
    admin.wait_for_function(
        "id => Math.max(...window.__admin.series.get(id).rates) > 0", arg=tenant_id
    )
    heights = row.locator(".sparkline-line").get_attribute("points") or ""
    assert any(float(point.split(",")[1]) < 24 for point in heights.split())

    feed.close()
    expect(connections).to_have_text("0")


def test_a_refused_request_shows_the_apis_message(open_admin: OpenPage) -> None:
    admin = open_admin()
    tenant_id = new_tenant_id()
    create_tenant(admin, tenant_id)

    admin.get_by_test_id("new-tenant-id").fill("Not a valid id!")
    admin.get_by_test_id("create-tenant-submit").click()
    error = admin.get_by_test_id("admin-error")
    expect(error).to_have_text(re.compile(r"^Invalid request \(id: must match .+\)$"))

    admin.get_by_test_id("new-tenant-id").fill(tenant_id)
    admin.get_by_test_id("create-tenant-submit").click()
    expect(error).to_have_text(f"Tenant {tenant_id} exists (id: already exists)")
    expect(admin.get_by_test_id("new-tenant-id")).to_have_value(tenant_id)

    admin.get_by_test_id("new-tenant-id").fill(new_tenant_id())
    admin.get_by_test_id("create-tenant-submit").click()
    expect(error).to_be_hidden()


def test_the_page_is_served_at_admin_slash_too_under_the_strict_csp(
    open_admin: OpenPage, feed_server: FeedServer
) -> None:
    admin = open_admin(url=f"{feed_server.url}/admin/")
    response = admin.goto(f"{feed_server.url}/admin/")
    assert response is not None
    csp = response.headers.get("content-security-policy", "")
    assert "script-src 'self'" in csp and "style-src 'self'" in csp
    assert "unsafe-inline" not in csp
    expect(admin.get_by_test_id("admin-status")).to_have_attribute("data-state", "live")
    expect(tenant_row(admin, "tenant_a")).to_have_count(1)


def test_the_secret_copies_to_the_clipboard(open_admin: OpenPage) -> None:
    admin = open_admin()
    admin.context.grant_permissions(["clipboard-read", "clipboard-write"])
    row = create_tenant(admin, new_tenant_id())
    _, secret = create_key(admin, row)

    admin.get_by_test_id("secret-copy").click()

    expect(admin.get_by_test_id("secret-copied")).to_have_text("Copied.")
    assert admin.evaluate("() => navigator.clipboard.readText()") == secret


def test_with_token_auth_the_admin_token_opens_the_page_and_a_minted_token_connects(
    open_admin: OpenPage, open_feed: OpenPage, token_server: FeedServer
) -> None:
    admin = open_admin(url=f"{token_server.url}/admin", loaded=False)
    expect(admin.get_by_test_id("admin-error")).to_have_text("A bearer token is required")
    expect(admin.get_by_test_id("admin-status")).to_have_attribute("data-state", "offline")

    admin.get_by_test_id("admin-token").fill(admin_token())
    admin.get_by_test_id("admin-token").press("Enter")
    expect(admin.get_by_test_id("admin-status")).to_have_attribute("data-state", "live")
    expect(admin.get_by_test_id("admin-error")).to_be_hidden()
    expect(admin.get_by_test_id("admin-token")).to_have_value("")
    assert admin.evaluate("() => localStorage.length") == 0

    tenant_id = new_tenant_id()
    row = create_tenant(admin, tenant_id)
    create_key(admin, row)
    token = mint_token(admin)
    link = admin.get_by_test_id("minted-open").get_attribute("href")
    assert link == f"/#token={token}"

    feed = open_feed(url=f"{token_server.url}{link}")
    expect(feed.get_by_test_id("current-tenant")).to_have_text(tenant_id)
    expect(row.get_by_test_id("tenant-connections")).to_have_text("1")

    # A reload keeps the token (same tab), and revoking the key ends the feed page's socket.
    admin.reload()
    expect(admin.get_by_test_id("admin-status")).to_have_attribute("data-state", "live")
    admin.once("dialog", lambda dialog: dialog.accept())
    row.get_by_test_id("key-revoke").click()
    expect(row.get_by_test_id("key")).to_have_attribute("data-status", "revoked")
    expect(feed.get_by_test_id("status")).not_to_have_attribute("data-state", "live")
    expect(row.get_by_test_id("tenant-connections")).to_have_text("0")


def test_rates_come_from_successive_counter_samples(open_admin: OpenPage) -> None:
    admin = open_admin()

    result = admin.evaluate(
        """async () => {
          const { RateSeries, sparklinePoints } = await import('/js/sparkline.js');
          const series = new RateSeries(3);
          const rates = [[0, 5], [1000, 15], [3000, 15], [3000, 99], [4000, 2], [5000, 6]]
            .map(([time, count]) => series.add(time, count));
          return {
            rates, kept: series.rates, latest: series.latest,
            points: sparklinePoints([0, 2], 3, 100, 20), flat: sparklinePoints([0], 3, 100, 20),
          };
        }"""
    )

    # A sample at the same time gives no rate; a counter that went down started again.
    assert result["rates"] == [None, 10, 0, None, 0, 4]
    assert result["kept"] == [0, 0, 4] and result["latest"] == 4
    # The newest at the right; the top is the largest rate (at least 1 event/s).
    assert result["points"] == "50.0,20.0 100.0,0.0"
    assert result["flat"] == "100.0,20.0"


def test_the_page_fits_a_phone_screen(open_admin: OpenPage) -> None:
    admin = open_admin()
    admin.set_viewport_size({"width": 390, "height": 844})
    create_tenant(admin, new_tenant_id())

    overflow = admin.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    expect(admin.get_by_test_id("create-tenant-submit")).to_be_in_viewport()
