"""Room broadcast: an event encoded once, one shared frame appended to each recipient.

The Socket.IO packet, the Engine.IO packet and the WebSocket frame (server frames are
unmasked, so every recipient gets identical bytes) are built once per event; the
broadcaster then only picks the recipients (python-socketio's manager knows the rooms) and
hands each connection the same frame (`EngineSocket.send_broadcast`). The connection
decides the rest: when it is written (the loop's write scheduler), on which transport,
and whether its client reads fast enough to stay.

    broadcaster = RoomBroadcaster(sio.manager, sio.eio)
    broadcaster.broadcast(tenant, "event_created", SocketJson.dumps(event.to_json()), "7")

Only this process's sockets are reached; with several nodes, each node broadcasts the
events and notices it learns about (`cluster`).
"""

from __future__ import annotations

from typing import Any

from .engineio import EngineServer
from .engineio.frames import text_frame
from .jsoncodec import SocketJson

NAMESPACE = "/"


def encode_event_text(event: str, data_json: str, offset: str | None = None) -> str:
    """Socket.IO EVENT packet for the default namespace: `2["event",data(,"offset")]`.
    The one EVENT encoder: broadcasts and a socket's own events (`emit_to`) use it."""
    event_json = SocketJson.dumps(event)
    if offset is None:
        return f"2[{event_json},{data_json}]"
    return f"2[{event_json},{data_json},{SocketJson.dumps(offset)}]"


class RoomBroadcaster:
    def __init__(self, manager: Any, engine: EngineServer) -> None:
        self._manager = manager  # a socketio manager: get_participants(namespace, room)
        self._sockets = engine.sockets

    def has_recipients(self, room: str | None) -> bool:
        """Whether a socket of this process is in `room`: with no one to reach, a publish
        need not encode anything (most posts of a tenant nobody watches on this node)."""
        return next(self._manager.get_participants(NAMESPACE, room), None) is not None

    def broadcast(
        self, room: str | None, event: str, data_json: str, offset: str | None = None
    ) -> int:
        """Send `event` with the already-serialized `data_json` to `room` (None: every
        socket of the namespace); return the recipients. It never yields to the loop, so
        two broadcasts never interleave and every socket sees them in call order."""
        text = "4" + encode_event_text(event, data_json, offset)
        frame = text_frame(text)
        sockets = self._sockets
        sent = 0
        for _sid, eio_sid in self._manager.get_participants(NAMESPACE, room):
            sock = sockets.get(eio_sid)
            if sock is not None and sock.send_broadcast(text, frame):
                sent += 1
        return sent
