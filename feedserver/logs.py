"""Logging set up once at start: text for people, one JSON object per line for machines.

The request id and the tenant live in context variables, so every line written while a
request (or a socket's handler) runs carries them without being passed around. Log lines
never contain message text or credentials: callers log ids, routes and counts only.
"""

from __future__ import annotations

import logging
import sys
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

from .events import utc_timestamp

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
tenant: ContextVar[str | None] = ContextVar("tenant", default=None)

# Structured fields a record may carry (`extra=`), in the order they are written.
FIELDS = ("method", "route", "status", "duration_ms")


def bind_tenant(value: str) -> None:
    """Name `value` in every log line of the current request or socket handler."""
    tenant.set(value)


class ContextFilter(logging.Filter):
    """Copies the context variables onto each record, where both formatters find them."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        record.tenant = tenant.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": utc_timestamp(datetime.fromtimestamp(record.created, UTC)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key in ("tenant", "request_id", *FIELDS):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message [tenant=.. request_id=..]`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = [
            f"{key}={value}"
            for key in ("tenant", "request_id")
            if (value := getattr(record, key, None)) is not None
        ]
        return f"{line} [{' '.join(context)}]" if context else line


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class ThrottledWarning:
    """At most one WARNING line per `interval` seconds for one kind of client misbehaviour,
    without a traceback, saying how many were left out since the last line: what a hostile
    client sends must not turn into log volume (a 2-byte frame is not worth 1 KB of log)."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self._logger = logger
        self._interval = interval
        self._next_at = 0.0
        self._left_out = 0

    def __call__(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now < self._next_at:
            self._left_out += 1
            return
        self._next_at = now + self._interval
        if self._left_out:
            message += " (%d more like it in the last %ds)"
            args = (*args, self._left_out, int(self._interval))
            self._left_out = 0
        self._logger.warning(message, *args)
