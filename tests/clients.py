"""Either real Socket.IO client by name, so one test runs against both.

    @pytest.mark.parametrize("kind", CLIENT_KINDS)
    async def test_x(server, kind):
        async with open_client(kind, server.make_url(""), auth={...}) as client:
            await client.expect_type("connect")

Both report the same `tests.lines` lines (see `tests/js_client.py`, `tests/socket_client.py`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from tests.js_client import JsClient, js_client
from tests.socket_client import SocketClient, socket_client

CLIENT_KINDS = ("js", "python")


@contextlib.asynccontextmanager
async def open_client(
    kind: str,
    url: object,
    *,
    query: dict[str, Any] | None = None,
    auth: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[JsClient | SocketClient]:
    """socket.io-client@4 in node (`js`) or python-socketio (`python`), connecting at once."""
    if kind == "js":
        extra: dict[str, Any] = {"extraHeaders": headers} if headers else {}
        async with js_client(url, query=query, auth=auth, **extra) as client:
            yield client
    else:
        async with socket_client(url, query=query, auth=auth, headers=headers) as client:
            yield client
