"""orjson behind the `json` interface python-socketio expects (dumps returns str)."""

from __future__ import annotations

import json
from typing import Any

import orjson


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class SocketJson:
    """Passed as `socketio.AsyncServer(json=SocketJson)`; keyword options are ignored."""

    @staticmethod
    def dumps(obj: Any, **_options: Any) -> str:
        return orjson.dumps(obj).decode()

    @staticmethod
    def loads(text: str | bytes, **_options: Any) -> Any:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            # orjson refuses escaped lone surrogates ("\ud800"), which are valid JSON text:
            # the stdlib decodes them, so the message rules answer them (validation_error,
            # as REST does) instead of the packet being dropped as malformed.
            if "surrogate" not in str(exc):
                raise
            return json.loads(text, parse_constant=_no_constants)
