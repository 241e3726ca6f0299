"""The page when the server runs with FEED_AUTH=token: a token instead of the tenant picker."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import jwt
import pytest
from playwright.sync_api import Page, expect

from .live_server import FeedServer, RestClient, start_server

pytestmark = pytest.mark.e2e

OpenFeed = Callable[..., Page]
SECRET = "e2e-secret-" + "x" * 40


def make_token(tenant: str, *, admin: bool = False, ttl: int = 3600) -> str:
    claims: dict[str, object] = {"tenant": tenant, "exp": int(time.time()) + ttl}
    if admin:
        claims["role"] = "admin"
    return jwt.encode(claims, SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FeedServer]:
    log_path = tmp_path_factory.mktemp("feedserver-token") / "server.log"
    env = {"FEED_AUTH": "token", "FEED_AUTH_SECRET": SECRET}
    with start_server(log_path, env=env) as server:
        RestClient(server.url).post_event("tenant_a", "probe", token=make_token("tenant_a"))
        yield server


def test_token_from_the_link_connects_and_is_removed_from_the_address(
    open_feed: OpenFeed, token_server: FeedServer
) -> None:
    token = make_token("tenant_a")
    page = open_feed(url=f"{token_server.url}/#token={token}")

    expect(page.get_by_test_id("tenant-form")).to_be_hidden()
    expect(page.get_by_test_id("token-form")).to_be_visible()
    expect(page.get_by_test_id("current-tenant")).to_have_text("tenant_a")
    assert token not in page.url
    auth = page.evaluate("() => window.__feed.client.lastAuth")
    assert auth["token"] == token
    assert "tenant" not in auth

    text = f"posted with a token {uuid.uuid4().hex[:8]}"
    box = page.get_by_test_id("message-input")
    box.fill(text)
    box.press("Enter")
    expect(page.get_by_test_id("event-message").filter(has_text=text)).to_have_count(1)


def test_a_pasted_token_connects(open_feed: OpenFeed, token_server: FeedServer) -> None:
    page = open_feed(url=f"{token_server.url}/", live=False)
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "offline")
    expect(page.get_by_test_id("page-error")).to_contain_text("token")

    page.get_by_test_id("token-input").fill(make_token("tenant_b"))
    page.get_by_test_id("token-input").press("Enter")

    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "live")
    expect(page.get_by_test_id("current-tenant")).to_have_text("tenant_b")


def test_a_bad_token_is_refused_with_a_clear_message(
    open_feed: OpenFeed, token_server: FeedServer
) -> None:
    forged = jwt.encode({"tenant": "tenant_a", "exp": int(time.time()) + 60}, "y" * 40, "HS256")
    page = open_feed(url=f"{token_server.url}/#token={forged}", live=False)

    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "offline")
    expect(page.get_by_test_id("page-error")).to_contain_text("token")
    expect(page.get_by_test_id("token-form")).to_be_visible()


def test_system_messages_show_as_banners_with_literal_text(
    open_feed: OpenFeed, token_server: FeedServer
) -> None:
    page = open_feed(url=f"{token_server.url}/#token={make_token('tenant_b')}")
    notice = "Maintenance at 14:00 UTC <b>not bold</b> & brief"

    RestClient(token_server.url).post_system_message(
        make_token("tenant_a", admin=True), notice, "warning"
    )

    expect(page.get_by_test_id("system-banner-text")).to_have_text(notice)
    expect(page.get_by_test_id("system-banner")).to_have_attribute("data-level", "warning")
    assert page.get_by_test_id("banners").locator("b").count() == 0
