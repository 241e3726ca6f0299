"""Event stores: one `EventStore` protocol, a memory and a Redis implementation."""

from __future__ import annotations

from .base import EventStore, TenantCounts, select_window
from .memory import MemoryStore

__all__ = ["EventStore", "MemoryStore", "TenantCounts", "select_window"]
