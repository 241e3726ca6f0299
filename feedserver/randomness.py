"""Kernel randomness for ids, drawn many ids at a time.

`secrets.token_*` asks the kernel on every call (a `getrandom()` system call: ~1 % of a
WebSocket connect's CPU per id, a few per cent of a POST's for its request id). A
`RandomBytes` draws the same `os.urandom` bytes a batch at a time and hands each out
once, so its ids are as unguessable as `secrets`'.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable

DEFAULT_BATCH = 1024  # bytes per draw: 64 session ids of 15 bytes, 85 pids of 12


class RandomBytes:
    __slots__ = ("_at", "_batch", "_draw", "_pool")

    def __init__(
        self, batch: int = DEFAULT_BATCH, draw: Callable[[int], bytes] = os.urandom
    ) -> None:
        self._batch = batch
        self._draw = draw
        self._pool = b""
        self._at = 0

    def take(self, size: int) -> bytes:
        """`size` random bytes no one else is given."""
        at = self._at
        if at + size > len(self._pool):
            self._pool, at = self._draw(max(self._batch, size)), 0
        self._at = at + size
        return self._pool[at : at + size]

    def urlsafe(self, size: int) -> str:
        """`size` random bytes in URL-safe base64 without padding, as
        `secrets.token_urlsafe(size)`."""
        return base64.urlsafe_b64encode(self.take(size)).rstrip(b"=").decode()

    def hex(self, size: int) -> str:
        """`size` random bytes in hex digits, as `secrets.token_hex(size)`."""
        return self.take(size).hex()
