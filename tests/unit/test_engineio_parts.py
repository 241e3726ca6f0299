"""The engine's pure parts, without a server: packets, frames, the frame reader, the
heartbeat's timers, the write scheduler, and the one EVENT encoder."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

import pytest
import socketio
from aiohttp import WSCloseCode, WSMsgType
from aiohttp._websocket.writer import WebSocketWriter

from feedserver.broadcast import encode_event_text
from feedserver.engineio import frames, packets
from feedserver.engineio.handover import FrameParsers, check_internals
from feedserver.engineio.heartbeat import Heartbeat
from feedserver.engineio.writes import WriteScheduler
from feedserver.jsoncodec import SocketJson


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    assert len(payload) < 126
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


# -- packets ------------------------------------------------------------------------------


def test_a_polling_payload_splits_into_text_and_binary_packets() -> None:
    assert packets.decode_payload("4hello\x1ebAQIDBA==\x1e3\x1e1") == [
        packets.Packet(packets.MESSAGE, "hello"),
        packets.Packet(packets.MESSAGE, b"\x01\x02\x03\x04"),
        packets.Packet(packets.PONG, ""),
        packets.Packet(packets.CLOSE, ""),
    ]
    assert packets.polling_text(b"\x01\x02\x03\x04") == "bAQIDBA=="
    assert packets.polling_text("hello") == "4hello"


@pytest.mark.parametrize("body", ["abc", "", "7", "4ok\x1e", "b!!!", "bAQ"])
def test_what_is_not_engineio_is_a_bad_packet(body: str) -> None:
    with pytest.raises(packets.BadPacket):
        packets.decode_payload(body)


def test_a_websocket_message_is_a_packet_or_binary_data() -> None:
    assert packets.decode_frame("2probe") == packets.Packet(packets.PING, "probe")
    assert packets.decode_frame(b"\x00\xff") == packets.Packet(packets.MESSAGE, b"\x00\xff")
    with pytest.raises(packets.BadPacket):
        packets.decode_frame("x")


# -- frames -------------------------------------------------------------------------------


class _RecordingTransport:
    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += bytes(data)

    def is_closing(self) -> bool:
        return False


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
async def test_frames_match_aiohttps_server_frames(size: int) -> None:
    transport = _RecordingTransport()
    writer = WebSocketWriter(None, transport, use_mask=False, compress=0)  # type: ignore[arg-type]
    writer._output_size = -(1 << 30)  # never reach the drain path (no protocol here)
    payload = b"4" + b"x" * size
    await writer.send_frame(payload, 1)
    assert frames.websocket_frame(payload) == transport.data


def test_close_codes_that_may_not_be_sent_are_answered_with_a_protocol_error() -> None:
    assert frames.close_reply(None) == frames.close_reply(0) == 1000
    assert [frames.close_reply(c) for c in (1000, 1001, 3000, 4999)] == [1000, 1001, 3000, 4999]
    assert [frames.close_reply(c) for c in (999, 1004, 1005, 1006, 1015, 2000, 5000)] == [1002] * 7


def test_every_client_frame_must_be_masked_also_split_across_reads() -> None:
    check = frames.MaskCheck()
    stream = client_frame(b"40") + client_frame(b"x" * 100)
    assert all(check.all_masked(stream[i : i + 3]) for i in range(0, len(stream), 3))
    assert not frames.MaskCheck().all_masked(b"\x81\x0240")


class Recording:
    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.failures: list[BaseException] = []

    def message(self, msg: Any) -> None:
        self.messages.append(msg)

    def parse_failed(self, exc: BaseException) -> None:
        self.failures.append(exc)


async def test_aiohttps_c_parser_hands_each_message_to_its_connection_at_once() -> None:
    check_internals()
    parsers = FrameParsers()
    one, other = Recording(), Recording()
    one_parser, other_parser = parsers.parser(100), parsers.parser(100)
    third = client_frame(b"42third")
    parsers.feed(one_parser, one, client_frame(b"40") + client_frame(b"\x01\x02", 0x2) + third[:5])
    parsers.feed(other_parser, other, client_frame(b"4other"))
    messages, failures = one.messages, one.failures
    assert [(m.type, m.data) for m in other.messages] == [(WSMsgType.TEXT, "4other")]
    assert [(m.type, m.data) for m in messages] == [
        (WSMsgType.TEXT, "40"),
        (WSMsgType.BINARY, b"\x01\x02"),
    ]
    parsers.feed(one_parser, one, third[5:] + client_frame(b"ping", 0x9))
    assert [(m.type, m.data) for m in messages[2:]] == [
        (WSMsgType.TEXT, "42third"),
        (WSMsgType.PING, b"ping"),
    ]
    assert not failures


async def test_an_oversized_message_is_a_failure_with_the_too_big_code() -> None:
    parsers, conn = FrameParsers(), Recording()
    parsers.feed(parsers.parser(100), conn, client_frame(b"4" * 101))
    assert not conn.messages
    (failure,) = conn.failures
    assert getattr(failure, "code", None) == WSCloseCode.MESSAGE_TOO_BIG


# -- heartbeat ----------------------------------------------------------------------------


class Pinged:
    def __init__(self, *, gone: bool = False) -> None:
        self.awaiting_pong: float | None = None
        self.pings: list[float] = []
        self.timed_out = asyncio.Event()
        self.pinged = asyncio.Event()
        self.gone = gone

    def ping(self) -> bool:
        if self.gone:
            return False
        self.pings.append(asyncio.get_running_loop().time())
        self.pinged.set()
        return True

    def ping_timed_out(self) -> None:
        self.timed_out.set()


async def test_a_socket_is_pinged_after_the_interval_and_dropped_without_a_pong() -> None:
    beat = Heartbeat(interval=0.2, timeout=0.1)
    sock = Pinged()
    loop = asyncio.get_running_loop()
    started = loop.time()
    beat.schedule(sock)
    await asyncio.wait_for(sock.timed_out.wait(), 2)
    (pinged,) = sock.pings
    # never late: at most one tick (interval / 20) early
    assert 0.2 - 0.01 - 1e-3 <= pinged - started <= 0.2 + 0.005
    assert loop.time() - started <= 0.3 + 0.01
    beat.close()


async def test_a_pong_schedules_the_next_ping_and_an_unasked_pong_changes_nothing() -> None:
    beat = Heartbeat(interval=0.05, timeout=0.5)
    sock = Pinged()
    beat.pong(sock)  # nobody asked: no ping scheduled
    beat.schedule(sock)
    for _ in range(3):
        await asyncio.wait_for(sock.pinged.wait(), 2)
        sock.pinged.clear()
        beat.pong(sock)
        beat.pong(sock)  # a second pong for one ping schedules nothing more
    await asyncio.sleep(0.12)
    assert len(sock.pings) in (4, 5)  # three answered, then one or two more
    assert not sock.timed_out.is_set()
    beat.close()


async def test_a_socket_that_left_before_its_ping_is_not_held_by_the_timers() -> None:
    beat = Heartbeat(interval=10, timeout=10)
    sock = Pinged()
    beat.schedule(sock)
    collected = asyncio.Event()
    weakref.finalize(sock, collected.set)
    del sock
    gc.collect()
    assert collected.is_set()
    beat.close()


# -- writes -------------------------------------------------------------------------------


class Recorder:
    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name
        self.flushed = asyncio.Event()

    def flush(self) -> None:
        self.log.append(self.name)
        self.flushed.set()


async def test_own_packets_flush_this_pass_and_broadcasts_wait_out_the_pause() -> None:
    scheduler = WriteScheduler(max_pause=0.05)
    log: list[str] = []
    scheduler._quiet_until = asyncio.get_running_loop().time() + 0.05  # a flush just ended
    broadcast, own = Recorder(log, "broadcast"), Recorder(log, "own")
    scheduler.paced(broadcast)
    scheduler.soon(own)
    await asyncio.wait_for(own.flushed.wait(), 1)
    assert log == ["own"]
    await asyncio.wait_for(broadcast.flushed.wait(), 1)
    assert log == ["own", "broadcast"]
    scheduler.close()


# -- the EVENT encoder --------------------------------------------------------------------


@pytest.mark.parametrize("json_module", [None, SocketJson])
@pytest.mark.parametrize("offset", [None, "42"])
def test_event_text_matches_what_socketio_encodes(json_module: Any, offset: str | None) -> None:
    saved = socketio.packet.Packet.json
    if json_module is not None:
        socketio.packet.Packet.json = json_module
    try:
        data = {"seq": 42, "message": "héllo &lt;b&gt;", "tenantId": "t"}
        args = [data] if offset is None else [data, offset]
        expected = socketio.packet.Packet(
            socketio.packet.EVENT, data=["event_created", *args]
        ).encode()
        data_json = socketio.packet.Packet.json.dumps(data, separators=(",", ":"))
        assert encode_event_text("event_created", data_json, offset) == expected
    finally:
        socketio.packet.Packet.json = saved
