"""The feed page in Chromium against the real server (FEED_AUTH=none)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

import pytest
from playwright.sync_api import Page, Request, expect

from .live_server import FeedServer, RestClient

pytestmark = pytest.mark.e2e

OpenFeed = Callable[..., Page]


def unique(label: str) -> str:
    return f"{label} {uuid.uuid4().hex[:8]}"


def messages_with(page: Page, marker: str) -> list[str]:
    """Texts of the feed items containing marker, top (newest) first."""
    return page.get_by_test_id("event-message").filter(has_text=marker).all_text_contents()


def shown_seqs(page: Page) -> list[int]:
    seqs: list[int] = page.eval_on_selector_all(
        '[data-testid="feed"] [data-testid="event"]',
        "items => items.map(i => Number(i.dataset.seq))",
    )
    return seqs


def post_from_page(page: Page, text: str) -> None:
    box = page.get_by_test_id("message-input")
    box.fill(text)
    box.press("Enter")


def record_outgoing_socket_events(page: Page) -> None:
    page.evaluate(
        "() => { window.__sent = []; window.__feed.socket.onAnyOutgoing("
        "(name) => window.__sent.push(name)); }"
    )


def test_post_reaches_other_pages_of_the_tenant_within_a_second_and_never_tenant_b(
    open_feed: OpenFeed, rest: RestClient
) -> None:
    sender, receiver, other_tenant = (
        open_feed("tenant_a"),
        open_feed("tenant_a"),
        open_feed("tenant_b"),
    )
    text = unique("hello tenant a")

    post_from_page(sender, text)

    expect(receiver.get_by_test_id("event-message").filter(has_text=text)).to_have_count(
        1, timeout=1000
    )
    expect(sender.get_by_test_id("event-message").filter(has_text=text)).to_have_count(1)
    # The sender sees how long its own post took to come back over the socket.
    expect(sender.get_by_test_id("latency")).not_to_have_attribute("data-ms", "")
    expect(sender.locator('[data-testid="event-latency"]:not([hidden])')).to_contain_text("ms")

    # Events of one tenant arrive in order; once B's own later event is shown, A's would be too.
    marker = unique("hello tenant b")
    rest.post_event("tenant_b", marker)
    expect(other_tenant.get_by_test_id("event-message").filter(has_text=marker)).to_have_count(1)
    assert messages_with(other_tenant, text) == []
    assert text not in other_tenant.get_by_test_id("feed").inner_text()


def test_markup_in_messages_is_shown_as_literal_text_and_never_runs(
    open_feed: OpenFeed, rest: RestClient
) -> None:
    page = open_feed("tenant_a")
    marker = unique("xss")
    attack = f'<img src=x onerror="window.__pwned=1"> {marker}'
    entities = f"5 &lt; 6 &amp;&amp; \"quoted\" 'single' <b>bold</b> {marker}"

    post_from_page(page, attack)
    expect(page.get_by_test_id("event-message").filter(has_text=marker)).to_have_count(1)
    rest.post_event("tenant_a", entities)

    expect(page.get_by_test_id("event-message").filter(has_text=marker)).to_have_text(
        [entities, attack]
    )
    assert page.get_by_test_id("feed").locator("img, script, b").count() == 0
    assert page.evaluate("() => window.__pwned") is None


def test_a_501_character_post_shows_the_limit_and_sends_nothing(
    open_feed: OpenFeed, rest: RestClient
) -> None:
    page = open_feed("tenant_a")
    latest_before = rest.list_events("tenant_a", limit=1)["latestSeq"]
    seqs_before = shown_seqs(page)
    record_outgoing_socket_events(page)
    box = page.get_by_test_id("message-input")

    box.fill("x" * 501)
    expect(page.get_by_test_id("counter-value")).to_have_text("501")
    expect(page.get_by_test_id("counter")).to_have_attribute("data-over", "true")
    box.press("Enter")

    expect(page.get_by_test_id("post-error")).to_contain_text("limit is 500")
    assert page.evaluate("() => window.__sent") == []
    assert rest.list_events("tenant_a", limit=1)["latestSeq"] == latest_before
    assert shown_seqs(page) == seqs_before
    expect(box).to_have_value("x" * 501)

    # One character less is accepted, which shows the spy above would have seen a send.
    box.press("Backspace")
    expect(page.get_by_test_id("counter")).to_have_attribute("data-over", "false")
    box.press("Enter")
    expect(page.get_by_test_id("post-error")).to_be_hidden()
    expect(box).to_have_value("")
    assert page.evaluate("() => window.__sent") == ["create_event"]


def test_posting_while_offline_says_so_and_does_not_fall_back_to_rest(open_feed: OpenFeed) -> None:
    page = open_feed("tenant_a")
    rest_posts: list[str] = []

    def note_rest_post(request: Request) -> None:
        if request.method == "POST" and "/api/" in request.url:
            rest_posts.append(request.url)

    page.on("request", note_rest_post)
    page.evaluate("() => window.__feed.socket.disconnect()")
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "offline")

    post_from_page(page, unique("while offline"))

    expect(page.get_by_test_id("post-error")).to_contain_text("offline")
    assert rest_posts == []


def test_shift_enter_adds_a_line_and_enter_posts(open_feed: OpenFeed) -> None:
    page = open_feed("tenant_a")
    marker = unique("two lines")
    box = page.get_by_test_id("message-input")

    box.press_sequentially(f"first {marker}")
    box.press("Shift+Enter")
    box.press_sequentially("second")
    expect(box).to_have_value(f"first {marker}\nsecond")
    box.press("Enter")

    item = page.get_by_test_id("event-message").filter(has_text=marker)
    expect(item).to_have_count(1)
    assert item.text_content() == f"first {marker}\nsecond"


def test_deep_link_opens_the_tenant_and_the_picker_switches_it(
    open_feed: OpenFeed, rest: RestClient
) -> None:
    page = open_feed("tenant_b")
    expect(page.get_by_test_id("tenant-select")).to_have_value("tenant_b")
    text_a = unique("only in a")
    rest.post_event("tenant_a", text_a)

    page.get_by_test_id("tenant-select").select_option("tenant_a")

    expect(page).to_have_url(re.compile(r"\?tenant=tenant_a$"))
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "live")
    expect(page.get_by_test_id("event-message").filter(has_text=text_a)).to_have_count(1)
    expect(page.get_by_test_id("current-tenant")).to_have_text("tenant_a")


def test_page_fits_a_phone_screen(open_feed: OpenFeed, rest: RestClient) -> None:
    page = open_feed("tenant_a", width=390, height=844)
    rest.post_event("tenant_a", unique("a long word " + "w" * 120))
    expect(page.get_by_test_id("event").first).to_be_visible()

    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    expect(page.get_by_test_id("post-button")).to_be_in_viewport()
    expect(page.get_by_test_id("status")).to_be_in_viewport()


def test_page_is_served_with_a_strict_csp(feed_server: FeedServer, open_feed: OpenFeed) -> None:
    page = open_feed("tenant_a")
    response = page.goto(f"{feed_server.url}/?tenant=tenant_a")
    assert response is not None
    csp = response.headers.get("content-security-policy", "")
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    # The page still works under it (the fixture also fails on any CSP violation).
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "live")


def test_browser_offline_shows_offline_and_the_page_comes_back_by_itself(
    open_feed: OpenFeed, rest: RestClient
) -> None:
    page = open_feed("tenant_a")
    marker = unique("while the browser was offline")

    page.context.set_offline(True)
    page.evaluate("() => window.__feed.socket.io.engine.close()")
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "offline")
    rest.post_event("tenant_a", marker)
    post_from_page(page, unique("not sent"))
    expect(page.get_by_test_id("post-error")).to_contain_text("offline")

    page.context.set_offline(False)
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "live", timeout=15_000)
    expect(page.get_by_test_id("event-message").filter(has_text=marker)).to_have_count(1)
    expect(page.get_by_test_id("post-error")).to_be_hidden()
