"""orjson behind the `json` interface python-socketio expects (dumps returns str)."""

from __future__ import annotations

from typing import Any

import orjson


class SocketJson:
    """Passed as `socketio.AsyncServer(json=SocketJson)`; keyword options are ignored."""

    @staticmethod
    def dumps(obj: Any, **_options: Any) -> str:
        return orjson.dumps(obj).decode()

    @staticmethod
    def loads(text: str | bytes, **_options: Any) -> Any:
        return orjson.loads(text)
