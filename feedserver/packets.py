"""Socket.IO packets as the server accepts them from clients: decoded strictly, as the Node
server's socket.io-parser does, so nothing a client writes reaches a handler it should not.

python-socketio dispatches an EVENT to whatever handler is registered under its name,
and the life-cycle handlers (`connect`, `disconnect`) are registered in the same table:
a client that sent `42["disconnect"]` ran the gateway's teardown while staying connected.
`StrictPacket` (python-socketio's public `serializer=` hook) refuses, like
socket.io-parser's `isPayloadValid`:
- an EVENT whose first element is not an event name, or is a reserved one;
- a CONNECT whose payload is not an object, a DISCONNECT with a payload, an ACK whose
  payload is not a list, a CONNECT_ERROR (only servers send it), an unknown type;
- text that does not decode (bad JSON, an id field that is too long) and binary data
  where a text packet belongs; and more attachments than `MAX_ATTACHMENTS` (each one is
  held until the last arrives).
Errors of the JSON decoder for nesting too deep (RecursionError) count as bad JSON too.
The refusal is a `MalformedPacket`; the gateway logs it briefly and ends the connection,
as the Node server does for a packet it cannot decode.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from socketio import packet as sio_packet

# The names socket.io reserves for its own life cycle (socket.io-parser, RESERVED_EVENTS).
RESERVED_EVENTS = frozenset(
    ("connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener")
)
# The feed sends and takes no binary data; two attachments (each up to the packet limit)
# keep binary clients working, as far as the protocol's own test suite goes.
MAX_ATTACHMENTS = 2


class MalformedPacket(ValueError):
    """A client packet that the server refuses to dispatch; `kind` and `namespace` are
    what could be read of it before it failed (a refused CONNECT is answered)."""

    def __init__(self, reason: str, kind: int | None = None, namespace: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind
        self.namespace = namespace


class StrictPacket(sio_packet.Packet):  # type: ignore[misc]
    """`socketio.packet.Packet` that raises `MalformedPacket` for what socket.io-parser
    refuses (see the module docstring). Encoding is the library's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        encoded = kwargs.get("encoded_packet")
        if encoded is not None and not encoded:  # the library would skip decode() for it
            raise MalformedPacket("an empty packet")
        super().__init__(*args, **kwargs)

    def decode(self, encoded_packet: Any) -> int:
        if not isinstance(encoded_packet, str):
            raise MalformedPacket("binary data where a text packet was expected")
        try:
            attachments = int(super().decode(encoded_packet))
        except (ValueError, TypeError, IndexError, RecursionError) as exc:
            kind = self.packet_type if isinstance(self.packet_type, int) else None
            raise MalformedPacket(_reason(exc), kind, self.namespace) from None
        problem = _payload_problem(self.packet_type, self.data)
        if problem is None and attachments > MAX_ATTACHMENTS:
            problem = f"more than {MAX_ATTACHMENTS} binary attachments"
        if problem is not None:
            raise MalformedPacket(problem, self.packet_type, self.namespace)
        return attachments


def _payload_problem(kind: int, data: Any) -> str | None:
    if kind in (sio_packet.EVENT, sio_packet.BINARY_EVENT):
        if not isinstance(data, list) or not data:
            return "an event must be a non-empty list"
        name = data[0]
        if isinstance(name, str):
            return f"reserved event name {name!r}" if name in RESERVED_EVENTS else None
        if isinstance(name, int) and not isinstance(name, bool):
            return None  # socket.io-parser allows numeric event names
        return "an event name must be a string"
    if kind == sio_packet.CONNECT:
        return None if data is None or isinstance(data, dict) else "CONNECT data must be an object"
    if kind == sio_packet.DISCONNECT:
        return None if data is None else "DISCONNECT takes no data"
    if kind in (sio_packet.ACK, sio_packet.BINARY_ACK):
        return None if isinstance(data, list) else "an acknowledgement must be a list"
    if kind == sio_packet.CONNECT_ERROR:
        return "CONNECT_ERROR is sent by servers only"
    return f"unknown packet type {kind!r}"


def _reason(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError | orjson.JSONDecodeError):
        return "invalid JSON"
    return str(exc) or type(exc).__name__
