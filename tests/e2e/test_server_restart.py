"""The page across a real server restart (in-memory store: the history starts again)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from .live_server import RestClient, free_port, start_server

pytestmark = pytest.mark.e2e

OpenFeed = Callable[..., Page]
RECONNECT_TIMEOUT_MS = 20_000


def test_page_warns_reconnects_and_follows_a_restarted_server(
    open_feed: OpenFeed, tmp_path: Path
) -> None:
    port = free_port()
    with start_server(tmp_path / "first.log", port=port) as first:
        rest = RestClient(first.url)
        for i in range(3):
            rest.post_event("tenant_a", f"before restart {i}")
        page = open_feed(url=f"{first.url}/?tenant=tenant_a")
        expect(page.get_by_test_id("event")).to_have_count(3)

    # The server said goodbye on its way down, and the page keeps trying.
    expect(page.get_by_test_id("system-banner")).to_have_attribute("data-level", "warning")
    expect(page.get_by_test_id("system-banner-text")).to_contain_text("shutting down")
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "reconnecting")

    with start_server(tmp_path / "second.log", port=port) as second:
        RestClient(second.url).post_event("tenant_a", "after restart")
        expect(page.get_by_test_id("status")).to_have_attribute(
            "data-state", "live", timeout=RECONNECT_TIMEOUT_MS
        )
        # seq started again at 1: the page drops the old numbering instead of hiding
        # the new events as duplicates of the old ones.
        expect(page.get_by_test_id("event-message")).to_have_text(["after restart"])
        expect(page.get_by_test_id("event")).to_have_attribute("data-seq", "1")
        expect(page.get_by_test_id("sync-note")).to_contain_text("reset")

        page.get_by_test_id("system-banner-close").click()
        expect(page.get_by_test_id("system-banner")).to_have_count(0)
