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

`RecoveringServer` is `socketio.AsyncServer` with one override, `_send_packet`, and only
for CONNECT packets: it adds the pid granted to that socket by the connect handler
(`grant_pid`). It relies on `AsyncServer._handle_connect` sending the CONNECT reply, for
a socket id in `data["sid"]`, after the connect handler returns (the default,
`always_connect=False`). It also adds `close_transports`, for a server that goes away,
which uses engineio's socket `queue` and `close()`, its writer's `None` sentinel, and
asyncio.Queue's `_getters` (as `fanout` does). Tested with
python-socketio 5.18.1 / python-engineio 4.15.1 (pyproject pins >=5.18,<5.19 and
>=4.15,<4.16); tests/unit/test_recovery.py checks these assumptions.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from dataclasses import dataclass
from typing import Any

import socketio
from engineio import packet as eio_packet
from socketio import packet

from .core import CatchUp
from .eio_websocket import DirectQueue
from .events import Event
from .schemas import MAX_SEQ
from .store import EventStore

_PID = re.compile(r"^([A-Za-z0-9_-]{1,32})\.[A-Za-z0-9_-]{1,64}\Z")
_OFFSET = re.compile(r"^[0-9]{1,16}\Z")


class RecoveringServer(socketio.AsyncServer):  # type: ignore[misc]
    """`socketio.AsyncServer` whose CONNECT reply carries the pid granted to the socket."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pids: dict[str, str] = {}

    def grant_pid(self, sid: str, pid: str) -> None:
        """Put `pid` in the CONNECT reply to `sid`; call it last in the connect handler."""
        self._pids[sid] = pid

    async def close_transports(self, within: float) -> None:
        """Close every Engine.IO connection once what it has queued has left (at most
        `within` seconds), as a server that goes away does: socket.io clients reconnect
        by themselves after that, where a Socket.IO DISCONNECT would keep them away.

        A long-polling client gets an Engine.IO CLOSE as the last packet of its last poll,
        after every packet queued before it (the JS client handles a payload's packets in
        order), so it sees `transport close` as the Node original's clients do, not the
        `transport error` of a refused poll. A WebSocket is closed (the JS client needs the
        WebSocket closed): `None` on the queue is engineio's end-of-connection sentinel,
        which also ends a pending long-poll.
        """
        connections = list(self.eio.sockets.values())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not all(map(_sent_all, connections)) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # Engine.IO has no event for "sent"
        for connection in connections:
            polling = not isinstance(connection.queue, DirectQueue)
            await connection.close(wait=False, abort=True)
            if polling:
                connection.queue.put_nowait(eio_packet.Packet(eio_packet.CLOSE))
            connection.queue.put_nowait(None)

    async def _send_packet(self, eio_sid: str, pkt: Any) -> None:
        if pkt.packet_type == packet.CONNECT and isinstance(pkt.data, dict) and self._pids:
            pid = self._pids.pop(str(pkt.data.get("sid")), None)
            if pid is not None:
                pkt.data = {**pkt.data, "pid": pid}
        await super()._send_packet(eio_sid, pkt)


def _sent_all(connection: Any) -> bool:
    """Nothing queued, and its writer back waiting for more: a WebSocket writer that has
    written the last packet, or the client's next long-poll, which proves that the previous
    response arrived (asyncio.Queue._getters: the futures of waiting get() calls)."""
    queue = connection.queue
    if isinstance(queue, DirectQueue):
        return True  # a detached WebSocket writes everything before its close frame
    return bool(connection.closed or (queue.empty() and queue._getters))


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

    async def read(self, handshake: dict[str, Any]) -> Reconnect:
        """The resume this handshake asks for, if it is one this store can answer.

        A pid of another epoch (a memory store that restarted, a flushed Redis), or a
        pid or offset this server never sends, is not an error: the client is simply
        not recovered, and starts afresh.
        """
        if not self.enabled:
            return Reconnect(None, "")
        epoch = await self._store.epoch()
        return Reconnect(_resume(handshake, epoch), f"{epoch}.{secrets.token_urlsafe(12)}")

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
