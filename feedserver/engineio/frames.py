"""The RFC 6455 pieces a server writes and checks itself: frames, masks, close codes.

Reading frames is aiohttp's C parser (`handover`); everything written is built here.
Server frames are unmasked, so every recipient of an event gets the same bytes.
"""

from __future__ import annotations

import struct

_PACK_LEN1 = struct.Struct("!BB").pack
_PACK_LEN2 = struct.Struct("!BBH").pack
_PACK_LEN3 = struct.Struct("!BBQ").pack
_PACK_CODE = struct.Struct("!H").pack
_FIN = 0x80
TEXT, BINARY, CLOSE, PONG = 0x1, 0x2, 0x8, 0xA

CLOSE_OK = 1000
CLOSE_PROTOCOL_ERROR = 1002


def websocket_frame(payload: bytes, opcode: int = TEXT) -> bytes:
    """An unmasked, uncompressed, final WebSocket frame (RFC 6455 5.2); text by default."""
    first = _FIN | opcode
    length = len(payload)
    if length < 126:
        header = _PACK_LEN1(first, length)
    elif length < 65536:
        header = _PACK_LEN2(first, 126, length)
    else:
        header = _PACK_LEN3(first, 127, length)
    return header + payload


def text_frame(text: str) -> bytes:
    return websocket_frame(text.encode())


def close_frame(code: int) -> bytes:
    return websocket_frame(_PACK_CODE(code), CLOSE)


def close_reply(code: object) -> int:
    """The code a server answers a client's close frame with: the client's own, echoed,
    1000 when it gave none, and 1002 for one that may not be sent in a close frame (RFC 6455
    7.4: 1004-1006 and 1015 are reserved, below 1000 and 1016-2999 unassigned)."""
    if not isinstance(code, int) or not code:
        return CLOSE_OK
    if 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999:
        return code
    return CLOSE_PROTOCOL_ERROR


class MaskCheck:
    """Follows the frame boundaries of a client's byte stream to see that every frame is
    masked (RFC 6455 5.1); aiohttp's parser, written for both sides, accepts either.
    A header split across two reads is kept until the rest arrives."""

    __slots__ = ("_head", "_skip")

    def __init__(self) -> None:
        self._head = b""  # the start of a header that the last read cut
        self._skip = 0  # bytes of the current frame's payload still to come

    def all_masked(self, data: bytes) -> bool:
        buf = self._head + data if self._head else data
        self._head = b""
        pos, end = self._skip, len(buf)
        while pos < end:
            if end - pos < 2:
                self._head = buf[pos:]
                break
            second = buf[pos + 1]
            if not second & 0x80:
                return False
            length = second & 0x7F
            size = 2 if length < 126 else 4 if length == 126 else 10
            if end - pos < size + 4:  # the mask key is part of the header
                self._head = buf[pos:]
                break
            if size > 2:
                length = int.from_bytes(buf[pos + 2 : pos + size], "big")
            pos += size + 4 + length
        self._skip = max(pos - end, 0)
        return True
