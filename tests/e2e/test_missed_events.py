"""Missed events after the socket is cut: each shown once, in order, or the gap is named.

Run twice: with socket.io's native connection state recovery (the server default: the
client's pid and offset are honoured) and without it (FEED_CONNECTION_STATE_RECOVERY=false:
the page's own `auth.since` is what brings the missed events back).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from .live_server import FeedServer, RestClient, start_server

pytestmark = pytest.mark.e2e

OpenFeed = Callable[..., Page]
RECONNECT_DELAY_MS = 3000
SMALL_HISTORY = 3
MODES = {"native": "true", "since": "false"}


def recovery_env(mode: str) -> dict[str, str]:
    return {"FEED_CONNECTION_STATE_RECOVERY": MODES[mode]}


@pytest.fixture(params=list(MODES))
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server(mode: str, tmp_path: Path) -> Iterator[FeedServer]:
    with start_server(tmp_path / "server.log", env=recovery_env(mode)) as s:
        yield s


@pytest.fixture
def small_history_server(mode: str, tmp_path: Path) -> Iterator[FeedServer]:
    env = recovery_env(mode) | {"FEED_HISTORY_SIZE": str(SMALL_HISTORY)}
    with start_server(tmp_path / "server.log", env=env) as s:
        yield s


@dataclass
class Gap:
    """A page that saw one event, then lost its socket while more were posted over REST."""

    page: Page
    first: dict[str, Any]
    missed: list[dict[str, Any]]


def cut_while_posting(server: FeedServer, open_feed: OpenFeed, missed_count: int) -> Gap:
    rest = RestClient(server.url)
    first = rest.post_event("tenant_a", "before the cut")
    page = open_feed(url=f"{server.url}/?tenant=tenant_a")
    expect(page.get_by_test_id("event")).to_have_count(1)
    # Close the transport; slow the first retry so that the posts surely fall in the gap.
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
    missed = [rest.post_event("tenant_a", f"missed {i}") for i in range(missed_count)]
    assert shown_seqs(page) == [first["seq"]]
    expect(page.get_by_test_id("status")).to_have_attribute(
        "data-state", "live", timeout=RECONNECT_DELAY_MS + 10_000
    )
    return Gap(page, first, missed)


def shown_seqs(page: Page) -> list[int]:
    seqs: list[int] = page.eval_on_selector_all(
        '[data-testid="feed"] [data-testid="event"]',
        "items => items.map(i => Number(i.dataset.seq))",
    )
    return seqs


def test_missed_events_are_shown_once_in_order_after_the_socket_is_cut(
    mode: str, server: FeedServer, open_feed: OpenFeed
) -> None:
    gap = cut_while_posting(server, open_feed, 5)
    page, before, missed = gap.page, gap.first, gap.missed

    expected = [e["message"] for e in reversed(missed)] + ["before the cut"]
    expect(page.get_by_test_id("event-message")).to_have_text(expected)
    expect(page.get_by_test_id("sync-note")).to_contain_text("5 missed events recovered")
    assert shown_seqs(page) == [e["seq"] for e in reversed([before, *missed])]
    assert page.evaluate("() => window.__feed.client.lastAuth.since") == before["seq"]
    natively = page.evaluate("() => Boolean(window.__feed.socket.recovered)")
    assert natively is (mode == "native")

    # Still live afterwards, and nothing arrives twice.
    after = RestClient(server.url).post_event("tenant_a", "after the reconnect")
    expect(page.get_by_test_id("event").first).to_have_attribute("data-seq", str(after["seq"]))
    assert shown_seqs(page) == [e["seq"] for e in reversed([before, *missed, after])]


def test_page_says_when_missed_events_could_not_be_recovered(
    small_history_server: FeedServer, open_feed: OpenFeed
) -> None:
    gap = cut_while_posting(small_history_server, open_feed, SMALL_HISTORY + 2)
    page, first, missed = gap.page, gap.first, gap.missed

    note = page.get_by_test_id("sync-note")
    expect(note).to_have_attribute("data-kind", "warning")
    expect(note).to_contain_text("could not be recovered")
    assert page.evaluate("() => window.__feed.client.lastAuth.since") == first["seq"]
    # What the server still holds is shown, newest first, each once; the oldest missed are gone.
    held = [e["message"] for e in reversed(missed[-SMALL_HISTORY:])]
    expect(page.get_by_test_id("event-message")).to_have_text([*held, "before the cut"])
