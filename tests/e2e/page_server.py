"""`python -m tests.e2e.page_server WEB_ROOT HOST PORT`: feedserver with another page at `/`.

`python -m feedserver serve` serves the repository's `web/`; some e2e tests need a page of
their own on the server's origin, as a user who serves their own frontend from it would
have (`create_app(settings, web_root)`). Settings come from the environment, as for `serve`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from aiohttp import web

from feedserver.app import create_app
from feedserver.config import Settings


def main(argv: list[str]) -> None:
    web_root, host, port = argv
    settings = Settings.from_env({**os.environ, "HOST": host, "PORT": port})
    app = create_app(settings, Path(web_root))
    web.run_app(app, host=host, port=int(port), print=None, access_log=None)


if __name__ == "__main__":
    main(sys.argv[1:])
