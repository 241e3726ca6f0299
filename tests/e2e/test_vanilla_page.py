"""A vanilla page written for the Node original: `<script src=".../socket.io/socket.io.js">`
and the global `io()`, served from the server's own origin and from another one."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from playwright.sync_api import Page, expect

from .live_server import REPO_ROOT, RestClient, free_port, start_server

pytestmark = pytest.mark.e2e

OpenFeed = Callable[..., Page]
PAGE = Path(__file__).resolve().parent / "vanilla_page"


@dataclass(frozen=True)
class VanillaPages:
    rest: RestClient
    urls: dict[str, str]  # where the page is served from -> its address


def write_page(folder: Path, server: str) -> Path:
    """The page, loading the bundle from `server` ("" for the origin that serves it)."""
    (folder / "js").mkdir(parents=True)
    html = (PAGE / "index.html").read_text().replace("{server}", server)
    (folder / "index.html").write_text(html)
    (folder / "js" / "vanilla-feed.js").write_bytes((PAGE / "js" / "vanilla-feed.js").read_bytes())
    return folder


@contextmanager
def static_site(root: Path) -> Iterator[str]:
    """A plain aiohttp static file server for `root` on 127.0.0.1, in a thread of its own
    (this thread's loop is Playwright's)."""
    app = web.Application()
    app.router.add_static("/", root)
    runner = web.AppRunner(app, access_log=None)
    port = free_port()
    loop = asyncio.new_event_loop()
    listening = threading.Event()

    def serve() -> None:
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        listening.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert listening.wait(10), "the static site did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VanillaPages]:
    root = tmp_path_factory.mktemp("vanilla")
    port = free_port()
    server_url = f"http://127.0.0.1:{port}"
    own = write_page(root / "own", server="")
    (own / "node_modules").symlink_to(REPO_ROOT / "web" / "node_modules")
    elsewhere = write_page(root / "elsewhere", server=server_url)
    with static_site(elsewhere) as other_origin:
        env = {"CORS_ORIGIN": f"{server_url},{other_origin}"}
        with start_server(root / "server.log", env=env, port=port, web_root=own) as server:
            urls = {"own-origin": f"{server.url}/", "other-origin": f"{other_origin}/index.html"}
            yield VanillaPages(RestClient(server.url), urls)


@pytest.mark.parametrize("where", ["own-origin", "other-origin"])
def test_a_vanilla_page_gets_io_from_the_bundle_and_receives_live_events(
    pages: VanillaPages, open_feed: OpenFeed, where: str
) -> None:
    page = open_feed(url=pages.urls[where])  # waits for connection_established
    assert page.evaluate("typeof io") == "function"
    message = f"hello from {where}"
    pages.rest.post_event("tenant_a", message)
    expect(page.get_by_test_id("events")).to_contain_text(message)
