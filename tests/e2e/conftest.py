"""End-to-end fixtures: the real server in a subprocess and Debian's headless Chromium."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from .chromium import launch_chromium
from .live_server import FeedServer, RestClient, start_server

TENANTS = ("tenant_a", "tenant_b")
LIVE_TIMEOUT_MS = 10_000

# Chromium logs failed requests itself (a server that is down, a refused token); those are
# expected in some tests and are not errors of the page.
_NETWORK_NOISE = ("net::ERR_", "Failed to load resource", "WebSocket connection to")

expect.set_options(timeout=5_000)


@pytest.fixture(scope="package")
def feed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FeedServer]:
    """One real feedserver for the whole e2e session, on a free port."""
    log_path = tmp_path_factory.mktemp("feedserver") / "server.log"
    with start_server(log_path, tenants=TENANTS) as server:
        yield server


@pytest.fixture(scope="package")
def rest(feed_server: FeedServer) -> RestClient:
    return RestClient(feed_server.url)


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """Package scope, not session: the sync Playwright API keeps an asyncio loop running
    in this thread while it is open, which would break the async tests of other folders."""
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


@dataclass
class PageProblems:
    """Script errors and CSP violations seen by a page; a clean page has none."""

    errors: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("console", self._on_console)

    def watch_csp_events(self, page: Page) -> None:
        """Also the `securitypolicyviolation` events themselves, read by `check`."""
        page.add_init_script(script=_RECORD_CSP_VIOLATIONS)

    def check(self, page: Page) -> None:
        """Notes the violations `page` recorded (before it closes)."""
        if page.is_closed():
            return
        for violation in page.evaluate("() => window.__cspViolations ?? []"):
            self.errors.append(f"securitypolicyviolation: {violation}")

    def _on_console(self, message: ConsoleMessage) -> None:
        text = message.text
        if "Content Security Policy" in text:
            self.errors.append(f"CSP violation: {text}")
        elif message.type == "error" and not any(n in text for n in _NETWORK_NOISE):
            self.errors.append(f"console error: {text}")


_RECORD_CSP_VIOLATIONS = """
  window.__cspViolations = [];
  document.addEventListener('securitypolicyviolation', (e) =>
    window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));
"""

OpenFeed = Callable[..., Page]
OpenAdmin = Callable[..., Page]


@pytest.fixture
def open_feed(browser: Browser, feed_server: FeedServer) -> Iterator[OpenFeed]:
    """Open the page in a fresh browser context (its own socket); by default wait for live.

    `open_feed("tenant_b")`, or `open_feed(url=...)` for any address (another server, a
    `#token=` link); `live=False` skips the wait; `init_script` runs in the page before its
    own scripts (as a site's script that configures the page would).
    """
    contexts = []
    problems = PageProblems()

    def open_page(
        tenant: str = "tenant_a",
        *,
        url: str | None = None,
        live: bool = True,
        width: int = 1280,
        height: int = 800,
        init_script: str | None = None,
    ) -> Page:
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)
        page = context.new_page()
        problems.watch(page)
        if init_script is not None:
            page.add_init_script(script=init_script)
        page.goto(url or f"{feed_server.url}/?tenant={tenant}")
        if live:
            expect(page.get_by_test_id("status")).to_have_attribute(
                "data-state", "live", timeout=LIVE_TIMEOUT_MS
            )
        return page

    yield open_page
    for context in contexts:
        context.close()
    assert problems.errors == [], "\n".join(problems.errors)


@pytest.fixture
def open_admin(browser: Browser, feed_server: FeedServer) -> Iterator[OpenAdmin]:
    """Open the operator page (`/admin`) in a fresh browser context; by default wait until
    it has listed the tenants. `open_admin(url=...)` for another server."""
    pages = []
    problems = PageProblems()

    def open_page(*, url: str | None = None, loaded: bool = True) -> Page:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        pages.append(page)
        problems.watch(page)
        problems.watch_csp_events(page)
        page.goto(url or f"{feed_server.url}/admin")
        if loaded:
            expect(page.get_by_test_id("admin-status")).to_have_attribute("data-state", "live")
        return page

    yield open_page
    for page in pages:
        problems.check(page)
        page.context.close()
    assert problems.errors == [], "\n".join(problems.errors)
