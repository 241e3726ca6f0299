"""Write a screenshot of the feed page with a few events (docs/screenshot.png by default).

    python -m tests.e2e.screenshot [OUT.png] [--width 1280] [--height 800]
    python tests/e2e/screenshot.py OUT.png

Starts its own server on a free port, posts some events and takes the picture in
Debian's headless Chromium.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

if __package__:
    from .chromium import launch_chromium
    from .live_server import REPO_ROOT, RestClient, start_server
else:  # run as a file: this folder is on sys.path
    from chromium import launch_chromium  # type: ignore[import-not-found,no-redef]
    from live_server import (  # type: ignore[import-not-found,no-redef]
        REPO_ROOT,
        RestClient,
        start_server,
    )

DEFAULT_OUT = REPO_ROOT / "docs" / "screenshot.png"
TENANT = "tenant_a"
SAMPLE_EVENTS = (
    "Deploy started: api v2.14.0 (canary 5%)",
    "Canary healthy after 10 min: error rate 0.02%, p95 84 ms",
    "Rolled out to 100% of api nodes",
    'Nightly backup finished & verified: 14.2 GB, checksum "ok"',
    "Queue depth back below 1k <worker-3> after the spike",
)
FROM_THE_PAGE = "Release notes published for v2.14.0\nThanks everyone!"


def take_screenshot(out: Path, *, width: int, height: int) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, start_server(Path(tmp) / "server.log") as server:
        rest = RestClient(server.url)
        for message in SAMPLE_EVENTS:
            rest.post_event(TENANT, message)
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(f"{server.url}/?tenant={TENANT}")
            expect(page.get_by_test_id("status")).to_have_attribute(
                "data-state", "live", timeout=10_000
            )
            box = page.get_by_test_id("message-input")
            box.fill(FROM_THE_PAGE)
            box.press("Enter")
            expect(page.locator('[data-testid="event-latency"]:not([hidden])')).to_have_count(1)
            page.mouse.click(width - 5, height - 5)  # move focus off the text box
            page.screenshot(path=str(out), full_page=True, animations="disabled")
            browser.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=800)
    args = parser.parse_args(argv)
    path = take_screenshot(args.out, width=args.width, height=args.height)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
