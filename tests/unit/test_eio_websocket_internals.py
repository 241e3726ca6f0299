"""The aiohttp / python-engineio internals feedserver.eio_websocket relies on.

If a digest check fails after a dependency upgrade, the library changed a function whose
behaviour eio_websocket copies or depends on: compare the two, carry the change over, then
update the digest in `COPIED_FUNCTIONS`.
"""

from __future__ import annotations

import asyncio
import os
import struct
from typing import Any

import pytest
from aiohttp import WSCloseCode, WSMsgType
from aiohttp._websocket.reader import WebSocketReader

from feedserver import eio_websocket
from feedserver.eio_websocket import _Messages, check_internals, websocket_frame
from feedserver.internals import InternalsChanged


def test_the_installed_versions_have_every_internal_we_use() -> None:
    check_internals()


def test_a_changed_library_function_is_refused_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    name = "engineio AsyncSocket.receive"
    function, _ = eio_websocket.COPIED_FUNCTIONS[name]
    monkeypatch.setitem(eio_websocket.COPIED_FUNCTIONS, name, (function, "0" * 64))
    with pytest.raises(InternalsChanged, match=r"AsyncSocket\.receive unchanged"):
        check_internals()


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A masked client frame (RFC 6455 5.3), as browsers send."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    else:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    return header + mask + masked


class RecordingConnection:
    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.failures: list[BaseException] = []
        self._reading_paused = False

    def message(self, msg: Any) -> None:
        self.messages.append(msg)

    def parse_failed(self, exc: BaseException) -> None:
        self.failures.append(exc)


async def test_aiohttps_c_parser_hands_each_message_to_the_connection_at_once() -> None:
    connection = RecordingConnection()
    queue = _Messages(connection, asyncio.get_running_loop())  # type: ignore[arg-type]
    reader = WebSocketReader(queue, 100, False, True)
    # two messages and half of a third in one read, the rest in the next
    third = client_frame(b"42third")
    reader.feed_data(client_frame(b"40") + client_frame(b"\x01\x02", 0x2) + third[:5])
    assert [(m.type, m.data) for m in connection.messages] == [
        (WSMsgType.TEXT, "40"),
        (WSMsgType.BINARY, b"\x01\x02"),
    ]
    reader.feed_data(third[5:] + client_frame(b"ping", 0x9))
    assert [(m.type, m.data) for m in connection.messages[2:]] == [
        (WSMsgType.TEXT, "42third"),
        (WSMsgType.PING, b"ping"),
    ]
    assert not connection.failures


async def test_an_oversized_message_is_a_failure_with_the_too_big_code() -> None:
    connection = RecordingConnection()
    queue = _Messages(connection, asyncio.get_running_loop())  # type: ignore[arg-type]
    reader = WebSocketReader(queue, 100, False, True)
    reader.feed_data(client_frame(b"4" * 101))
    assert not connection.messages
    (failure,) = connection.failures
    assert getattr(failure, "code", None) == WSCloseCode.MESSAGE_TOO_BIG


def test_server_frames_are_unmasked_and_final_at_every_length_encoding() -> None:
    assert websocket_frame(b"2") == b"\x81\x012"
    assert websocket_frame(b"x" * 200)[:4] == b"\x81\x7e\x00\xc8"
    assert websocket_frame(b"x" * 70000)[:10] == b"\x81\x7f" + (70000).to_bytes(8, "big")
    assert websocket_frame(b"\x03\xe8", 0x8) == b"\x88\x02\x03\xe8"  # close, code 1000
