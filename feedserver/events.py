"""The event: the one data type every layer shares."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


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
