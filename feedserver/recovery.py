"""socket.io's native connection state recovery, as the socket.io v4 JavaScript client does it.

socket.io-client 4.x (`build/cjs/socket.js`) recovers a connection by itself when:
1. the server's CONNECT reply carries a `pid` (the client then sets
   `socket.recovered = pid && this._pid === pid` and keeps the pid);
2. events end with an offset: a trailing string argument (the client keeps the last one);
3. the server honours the `{pid, offset}` that the client adds to its next CONNECT auth.

python-socketio does none of this, so this module adds it, without state on the server:
- an offset is an event's `seq` as a string (the numbers of `auth.since` and REST `since`);
  `initial_events` ends with the seq of its last event (`latestSeq` when it is empty), so
  a client that disconnects before any `event_created` can recover too;
- a pid is `<store epoch>.<random>`. A reconnect is resumed with the *same* pid when its
  pid names this store's epoch and the store still holds every event after the offset;
  any node can decide that, also after a restart (Redis). Otherwise the socket gets a new
  pid, so the client sees `recovered === false`.

The pid reaches the CONNECT reply through `socketio_internals.SocketServer.grant_pid`;
everything here is pure rules, testable without a server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .core import CatchUp
from .events import Event
from .randomness import RandomBytes
from .schemas import MAX_SEQ
from .store import EventStore

_PID = re.compile(r"^([A-Za-z0-9_-]{1,32})\.[A-Za-z0-9_-]{1,64}\Z")
_OFFSET = re.compile(r"^[0-9]{1,16}\Z")


@dataclass(frozen=True, slots=True)
class Resume:
    """A reconnect that asks to continue after `offset` under `pid`."""

    pid: str
    offset: int


@dataclass(frozen=True, slots=True)
class Reconnect:
    """What a connect may continue (`resume`), and the pid it gets if it does not."""

    resume: Resume | None
    new_pid: str


class ConnectionRecovery:
    """Pids and offsets for the gateway; with `enabled` False, neither is ever sent."""

    def __init__(self, store: EventStore, *, enabled: bool) -> None:
        self._store = store
        self.enabled = enabled
        self._random = RandomBytes()

    async def read(self, handshake: dict[str, Any]) -> Reconnect:
        """The resume this handshake asks for, if it is one this store can answer.

        A pid of another epoch (a memory store that restarted, a flushed Redis), or a
        pid or offset this server never sends, is not an error: the client is simply
        not recovered, and starts afresh.
        """
        if not self.enabled:
            return Reconnect(None, "")
        epoch = await self._store.epoch()
        return Reconnect(_resume(handshake, epoch), f"{epoch}.{self._random.urlsafe(12)}")

    def offset(self, event: Event) -> str | None:
        """The trailing offset argument of `event`'s packets; None when recovery is off."""
        return str(event.seq) if self.enabled else None

    def event_args(self, event: Event) -> Any:
        """The arguments of an `event_created` packet: the event, then its offset."""
        offset = self.offset(event)
        return event.to_json() if offset is None else (event.to_json(), offset)

    def initial_args(self, catch_up: CatchUp) -> Any:
        """The arguments of `initial_events`: the list, then the offset it brings the client to."""
        events = [e.to_json() for e in catch_up.events]
        if not self.enabled:
            return events
        return (events, str(catch_up.events[-1].seq if catch_up.events else catch_up.latest_seq))


def _resume(handshake: dict[str, Any], epoch: str) -> Resume | None:
    pid, offset = handshake.get("pid"), handshake.get("offset")
    if not isinstance(pid, str) or not isinstance(offset, str):
        return None
    match = _PID.match(pid)
    if match is None or match.group(1) != epoch:
        return None
    if _OFFSET.match(offset) is None or int(offset) > MAX_SEQ:
        return None
    return Resume(pid, int(offset))
