"""What the page says when the server refuses a post or a tenant."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from .live_server import FeedServer, start_server

pytestmark = pytest.mark.e2e

OpenFeed = Callable[..., Page]
EVENTS_PER_SECOND = 2


@pytest.fixture
def strict_server(tmp_path: Path) -> Iterator[FeedServer]:
    env = {"FEED_TENANT_MAX_EVENTS_PER_SEC": str(EVENTS_PER_SECOND)}
    with start_server(tmp_path / "server.log", env=env) as server:
        yield server


def test_a_rate_limited_post_says_so_and_keeps_the_text(
    strict_server: FeedServer, open_feed: OpenFeed
) -> None:
    page = open_feed(url=f"{strict_server.url}/?tenant=tenant_a")
    box, button, error = (
        page.get_by_test_id("message-input"),
        page.get_by_test_id("post-button"),
        page.get_by_test_id("post-error"),
    )
    for attempt in range(EVENTS_PER_SECOND * 5):
        box.fill(f"burst {attempt}")
        box.press("Enter")
        expect(button).to_be_enabled()  # the ack has come back
        if error.is_visible():
            break
    else:
        pytest.fail(f"{EVENTS_PER_SECOND * 5} posts in a burst were never rate limited")

    expect(error).to_contain_text("Rate limited")
    expect(box).to_have_value(f"burst {attempt}")


def test_an_unknown_tenant_in_the_link_is_refused_with_a_clear_message(
    feed_server: FeedServer, open_feed: OpenFeed
) -> None:
    page = open_feed(url=f"{feed_server.url}/?tenant=tenant_zz", live=False)

    expect(page.get_by_test_id("page-error")).to_contain_text("Unknown tenant")
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "offline")
    expect(page.get_by_test_id("tenant-select")).to_have_value("")


def test_a_post_the_server_refuses_shows_the_servers_reason(open_feed: OpenFeed) -> None:
    page = open_feed("tenant_a")
    box = page.get_by_test_id("message-input")

    box.fill("bell \u0007 character")
    box.press("Enter")

    expect(page.get_by_test_id("post-error")).to_contain_text("Not posted")
    expect(page.get_by_test_id("post-error")).to_contain_text("control characters")
    expect(box).to_have_value("bell \u0007 character")
