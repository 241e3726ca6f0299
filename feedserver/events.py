"""The event: the one data type every layer shares."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

_NS_PER_MS = 1_000_000
_MS_PER_S = 1000
# The end of a timestamp for each millisecond: a lookup instead of formatting a number.
_MILLISECONDS_Z = tuple(f"{ms:03d}Z" for ms in range(_MS_PER_S))


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    tenant_id: str
    message: str  # already normalised and HTML-escaped
    timestamp: str  # ISO 8601 UTC with milliseconds and Z

    @property
    def id(self) -> str:
        return f"{self.tenant_id}-{self.seq}"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "seq": self.seq,
            "tenantId": self.tenant_id,
            "message": self.message,
            "timestamp": self.timestamp,
        }


def utc_timestamp(now: datetime | None = None) -> str:
    """UTC, ISO 8601 with milliseconds and `Z`, as JavaScript's toISOString()."""
    moment = now or datetime.now(UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class UtcClock:
    """`utc_timestamp()` of the current time, for hot paths (each publish).

    The text up to the second is built once per second (`datetime.isoformat` costs a few
    microseconds); the milliseconds are integer arithmetic on `now_ns()` and a table.
    """

    def __init__(self, now_ns: Callable[[], int] = time.time_ns) -> None:
        self._now_ns = now_ns
        self._second = -1
        self._prefix = ""  # "2026-01-20T10:30:05."

    def timestamp(self) -> str:
        second, ms = divmod(self._now_ns() // _NS_PER_MS, _MS_PER_S)
        if second != self._second:
            self._prefix = _second_prefix(second)
            self._second = second
        return self._prefix + _MILLISECONDS_Z[ms]

    def timestamp_before(self, seconds: int) -> str:
        """The timestamp of `seconds` ago: an event stamped before it is older than that.

        Timestamps of one shape compare as text in time order, so this is the bound
        stores compare event timestamps with.
        """
        second, ms = divmod(self._now_ns() // _NS_PER_MS - seconds * _MS_PER_S, _MS_PER_S)
        return _second_prefix(second) + _MILLISECONDS_Z[ms]


# A few seconds are asked for at once: now's, and now minus each retention in use.
@functools.lru_cache(maxsize=64)
def _second_prefix(second: int) -> str:
    """The text of a Unix `second` up to its milliseconds: "2026-01-20T10:30:05."."""
    return utc_timestamp(datetime.fromtimestamp(second, UTC))[:-4]
