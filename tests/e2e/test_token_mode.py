"""The page when the server runs with FEED_AUTH=token: a token instead of the tenant picker."""

from __future__ import annotations

import json
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


# The first token of the refresh tests: whole seconds, so 5..6 s are left when it is made;
# the page renews it a tenth of its lifetime before its exp.
SHORT_TTL = 6


def make_token(tenant: str, *, admin: bool = False, ttl: int = 3600) -> str:
    claims: dict[str, object] = {"tenant": tenant, "exp": int(time.time()) + ttl}
    if admin:
        claims["role"] = "admin"
    return jwt.encode(claims, SECRET, algorithm="HS256")


def token_provider(tokens: list[str]) -> str:
    """A script defining `window.feedTokenProvider`: the tokens in turn, then the last one
    again; `window.__tokensGiven` counts the calls."""
    return f"""
      window.__tokensGiven = 0;
      window.feedTokenProvider = async () => {{
        const tokens = {json.dumps(tokens)};
        return tokens[Math.min(window.__tokensGiven++, tokens.length - 1)];
      }};
    """


def record_states(page: Page) -> None:
    """From now on `window.__states` lists every connection state the page goes through."""
    page.evaluate(
        """() => {
          window.__states = [];
          const record = (e) => window.__states.push(e.detail.state);
          window.__feed.client.addEventListener('state', record);
        }"""
    )


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


def test_a_token_provider_keeps_the_page_live_past_its_first_tokens_expiry(
    open_feed: OpenFeed, token_server: FeedServer
) -> None:
    first = make_token("tenant_a", ttl=SHORT_TTL)
    renewed, reconnected = make_token("tenant_a"), make_token("tenant_a")
    page = open_feed(
        url=f"{token_server.url}/", init_script=token_provider([first, renewed, reconnected])
    )
    assert page.evaluate("() => window.__feed.client.lastAuth.token") == first
    record_states(page)
    # A page given the same token and no provider: the server disconnects it at the exp.
    control = open_feed(url=f"{token_server.url}/#token={first}")
    expect(control.get_by_test_id("status")).not_to_have_attribute(
        "data-state", "live", timeout=(SHORT_TTL + 5) * 1000
    )

    # By then the page had sent a new token over the same connection.
    assert page.evaluate("() => window.__tokensGiven") == 2
    assert page.evaluate("() => window.__states") == []
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "live")
    text = f"after the first token {uuid.uuid4().hex[:8]}"
    RestClient(token_server.url).post_event("tenant_a", text, token=make_token("tenant_a"))
    expect(page.get_by_test_id("event-message").filter(has_text=text)).to_have_count(1)

    # A reconnect asks the provider for a token of its own.
    page.evaluate("() => window.__feed.socket.io.engine.close()")
    page.wait_for_function("() => window.__tokensGiven === 3")
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "live")
    assert page.evaluate("() => window.__feed.client.lastAuth.token") == reconnected


def test_a_refused_renewal_is_shown_while_the_page_stays_live(
    open_feed: OpenFeed, token_server: FeedServer
) -> None:
    expired = jwt.encode({"tenant": "tenant_a", "exp": int(time.time()) - 5}, SECRET, "HS256")
    first = make_token("tenant_a", ttl=SHORT_TTL)
    page = open_feed(url=f"{token_server.url}/", init_script=token_provider([first, expired]))

    error = page.get_by_test_id("page-error")
    expect(error).to_contain_text("Not authorised", timeout=(SHORT_TTL + 2) * 1000)
    expect(error).to_contain_text("until the current token expires")
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "live")
