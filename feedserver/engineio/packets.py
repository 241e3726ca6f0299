"""Engine.IO v4 packets: the seven types, and how each transport spells them.

Over WebSocket a text packet is its type digit and its data in one text frame, and a binary
message is the bytes alone in a binary frame. Over long-polling a payload joins packets
with the record separator (0x1e), a binary message spelled `b` + base64.
"""

from __future__ import annotations

import base64
import binascii
from typing import NamedTuple

OPEN, CLOSE, PING, PONG, MESSAGE, UPGRADE, NOOP = range(7)
SEPARATOR = "\x1e"


class Packet(NamedTuple):
    """A decoded Engine.IO packet: its type, and its data (text, or bytes for binary)."""

    type: int
    data: str | bytes = ""


class BadPacket(ValueError):
    """Not an Engine.IO packet: the connection that sent it is closed."""


def encode_text(packet_type: int, data: str = "") -> str:
    return f"{packet_type}{data}"


def decode_frame(data: str | bytes) -> Packet:
    """A packet from one WebSocket message."""
    if isinstance(data, bytes):
        return Packet(MESSAGE, data)
    return _decode_text(data)


def decode_payload(body: str) -> list[Packet]:
    """The packets of one long-polling POST body."""
    packets = []
    for part in body.split(SEPARATOR):
        if part[:1] == "b":
            try:
                packets.append(Packet(MESSAGE, base64.b64decode(part[1:], validate=True)))
            except binascii.Error:
                raise BadPacket("invalid base64 in a binary packet") from None
        else:
            packets.append(_decode_text(part))
    return packets


def polling_text(data: str | bytes) -> str:
    """A MESSAGE as one packet of a long-polling payload."""
    if isinstance(data, bytes):
        return "b" + base64.b64encode(data).decode("ascii")
    return f"4{data}"


def _decode_text(text: str) -> Packet:
    kind = text[:1]
    if len(kind) != 1 or not "0" <= kind <= "6":
        raise BadPacket(f"unknown Engine.IO packet type {kind!r}")
    return Packet(ord(kind) - 48, text[1:])
