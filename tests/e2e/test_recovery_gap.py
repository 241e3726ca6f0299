"""Reconnecting after more was missed than the server still holds."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from .live_server import FeedServer, RestClient, start_server

pytestmark = pytest.mark.e2e

OpenFeed = Callable[..., Page]
HISTORY_SIZE = 3
RECONNECT_DELAY_MS = 2500


@pytest.fixture
def small_history_server(tmp_path: Path) -> Iterator[FeedServer]:
    with start_server(tmp_path / "server.log", env={"FEED_HISTORY_SIZE": str(HISTORY_SIZE)}) as s:
        yield s


def test_page_says_when_missed_events_could_not_be_recovered(
    small_history_server: FeedServer, open_feed: OpenFeed
) -> None:
    rest = RestClient(small_history_server.url)
    first = rest.post_event("tenant_a", "seen before the cut")
    page = open_feed(url=f"{small_history_server.url}/?tenant=tenant_a")
    expect(page.get_by_test_id("event")).to_have_count(1)

    page.evaluate(
        """(delay) => {
            const manager = window.__feed.socket.io;
            manager.randomizationFactor(0);
            manager.reconnectionDelay(delay);
            manager.reconnectionDelayMax(delay);
            manager.engine.close();
        }""",
        RECONNECT_DELAY_MS,
    )
    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "reconnecting")
    missed = [rest.post_event("tenant_a", f"missed {i}") for i in range(HISTORY_SIZE + 2)]

    expect(page.get_by_test_id("status")).to_have_attribute("data-state", "live", timeout=15_000)
    note = page.get_by_test_id("sync-note")
    expect(note).to_have_attribute("data-kind", "warning")
    expect(note).to_contain_text("could not be recovered")
    assert page.evaluate("() => window.__feed.client.lastAuth.since") == first["seq"]
    # What the server still holds is shown, newest first, each once; the oldest missed are gone.
    held = [e["message"] for e in reversed(missed[-HISTORY_SIZE:])]
    expect(page.get_by_test_id("event-message")).to_have_text([*held, "seen before the cut"])
