"""What a hostile client can send over a raw WebSocket, and what it gets: reserved event
names never reach the gateway's life-cycle handlers, malformed packets end the connection
with one short warning, and every refused input is answered."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from aiohttp.test_utils import TestServer

from feedserver.app import GATEWAY
from feedserver.auth import mint_token
from tests.conftest import ServerFactory
from tests.raw_socket import RECEIVE_TIMEOUT, client_frame, raw_socket, raw_tcp_websocket
from tests.waiting import eventually

SECRET = "k" * 32
RESERVED = (
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
)


def live_sessions(server: TestServer) -> int:
    return len(server.app[GATEWAY]._sessions)


async def test_a_client_disconnect_event_does_not_release_a_socket_that_stays(
    start_server: ServerFactory,
) -> None:
    server = await start_server(auth="token", auth_secret=SECRET, max_connections_per_tenant=1)
    token = mint_token(SECRET, "tenant_a", 60)
    async with raw_socket(server) as sock:
        await sock.connect({"token": token})
        await sock.send('42["disconnect"]')
        # The packet is refused before dispatch: the connection ends, and so does its count.
        assert await sock.closes()
    await eventually(lambda: live_sessions(server) == 0, "the session is released once")
    # The cap still holds: one socket in, a second one refused.
    async with raw_socket(server) as first, raw_socket(server) as second:
        await first.connect({"token": token})
        await second.send("40" + json.dumps({"token": token}))
        refused = await second.expect("44")
        assert json.loads(refused[2:])["data"]["code"] == "too_many_connections"


async def test_a_client_connect_event_cannot_replace_its_session(
    start_server: ServerFactory,
) -> None:
    server = await start_server(auth="token", auth_secret=SECRET)
    token = mint_token(SECRET, "tenant_a", 60)
    async with raw_socket(server) as sock:
        await sock.connect({"token": token})
        forged = ["connect", {"REMOTE_ADDR": "10.9.9.9", "QUERY_STRING": ""}, {"token": token}]
        await sock.send("42" + json.dumps(forged))
        assert await sock.closes()
        assert not any('"connection_established"' in t for t in sock.received[3:])
    await eventually(lambda: live_sessions(server) == 0, "no session is left behind")


async def test_a_socket_cannot_join_a_second_tenant_with_a_connect_event(
    server: TestServer,
) -> None:
    async with raw_socket(server, "&tenant=tenant_a") as sock:
        assert (await sock.connect())["tenantId"] == "tenant_a"
        await sock.send('42["connect",{"QUERY_STRING":"tenant=tenant_b"},{}]')
        assert await sock.closes()
    assert not any("tenant_b" in text for text in sock.received)  # no second established
    assert live_sessions(server) == 0


@pytest.mark.parametrize("name", RESERVED)
async def test_every_reserved_event_name_ends_the_connection(server: TestServer, name: str) -> None:
    async with raw_socket(server, "&tenant=tenant_a") as sock:
        await sock.connect()
        await sock.send("42" + json.dumps([name, {}]))
        assert await sock.closes()


# Each kind of packet socket.io-parser refuses, before and after the Socket.IO CONNECT.
MALFORMED = (
    "49",  # unknown Socket.IO packet type
    "42[",  # JSON cut short
    "42{}",  # an event that is not a list
    '42[{"not":"a name"}]',
    "43x[]",  # an acknowledgement without a usable id
    "42" + "1" * 120 + '["create_event",{}]',  # an id field too long
    '44{"message":"only servers send this"}',
    "41{}",  # DISCONNECT with data
    "4",  # an Engine.IO message without a Socket.IO packet
    "42" + "[" * 100_000,  # nested deeper than any decoder goes
    '453-["create_event",1,2,3]',  # more binary attachments than the server holds
)


async def test_malformed_packets_end_the_connection_with_one_short_warning(
    server: TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    for text in MALFORMED:
        for connect_first in (False, True):
            async with raw_socket(server, "&tenant=tenant_a") as sock:
                if connect_first:
                    await sock.connect()
                await sock.send(text)
                assert await sock.closes(), f"still open after {text!r}"
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    warnings = [r for r in caplog.records if "malformed packet" in r.getMessage()]
    assert len(warnings) == 1, "throttled: one line for the burst"
    await eventually(lambda: live_sessions(server) == 0, "every session is released")


async def test_a_truncated_connect_gets_a_connect_error(server: TestServer) -> None:
    async with raw_socket(server) as sock:
        await sock.send('40{"tenant":"tenant_a"')
        refused = json.loads((await sock.expect("44"))[2:])
        assert refused["data"]["code"] == "validation_error"
        assert refused["data"]["message"].startswith("Invalid CONNECT packet")
        assert await sock.closes()


async def test_refused_create_event_inputs_are_answered_and_the_socket_stays(
    server: TestServer,
) -> None:
    async with raw_socket(server, "&tenant=tenant_a") as sock:
        await sock.connect()
        answers = {}
        for ack_id, packet in (
            (1, '["create_event",{"message":"x\\ud800y"}]'),  # a lone surrogate, escaped
            (2, '["create_event",{"message":"one"},"and an extra argument"]'),
            (3, '["create_event",{"message":"' + "x" * 100_000 + '"}]'),  # over the body limit
        ):
            await sock.send(f"42{ack_id}{packet}")
            (answer,) = json.loads((await sock.expect(f"43{ack_id}"))[2 + len(str(ack_id)) :])
            answers[ack_id] = answer
        assert answers[1]["error"]["code"] == "validation_error"
        assert answers[2]["error"]["code"] == "validation_error"
        assert answers[3]["error"]["code"] == "payload_too_large"
        assert not any(a["ok"] for a in answers.values())
        # Still connected, and still publishing.
        await sock.send('424["create_event",{"message":"after the refusals"}]')
        (ok,) = json.loads((await sock.expect("434"))[3:])
        assert ok["ok"] is True


async def test_a_binary_message_is_refused_like_the_original(server: TestServer) -> None:
    async with raw_socket(server, "&tenant=tenant_a") as sock:
        await sock.connect()
        # socket.io's encoding of emit("create_event", {message: Buffer}, ack): a placeholder,
        # then the attachment as a binary frame.
        await sock.send('451-7["create_event",{"message":{"_placeholder":true,"num":0}}]')
        await sock.ws.send_bytes(b"\x04hello")
        (answer,) = json.loads((await sock.expect("437"))[3:])
        assert answer["error"]["code"] == "validation_error"
        assert answer["error"]["details"] == {"message": "must be a string"}


async def test_an_engineio_close_from_the_client_ends_its_session(server: TestServer) -> None:
    async with raw_socket(server, "&tenant=tenant_a") as sock:
        await sock.connect()
        assert live_sessions(server) == 1
        await sock.send("1")  # Engine.IO CLOSE
        assert await sock.closes()
    await eventually(lambda: not server.app[GATEWAY].sio.eio.sockets, "Engine.IO forgets it")
    assert live_sessions(server) == 0


async def test_an_unmasked_client_frame_is_a_protocol_error(server: TestServer) -> None:
    async with raw_tcp_websocket(server, "&tenant=tenant_a") as (reader, writer):
        writer.write(client_frame(b"40", masked=False))
        data = await asyncio.wait_for(reader.read(), RECEIVE_TIMEOUT)  # until the server closes
    close_at = data.rfind(b"\x88\x02")  # a close frame with a 2-byte code
    assert close_at >= 0 and data[close_at + 2 : close_at + 4] == (1002).to_bytes(2, "big")
    assert b"40{" not in data  # the CONNECT was never handled


async def test_masked_frames_split_anywhere_are_accepted(server: TestServer) -> None:
    async with raw_tcp_websocket(server, "&tenant=tenant_a") as (reader, writer):
        frames = client_frame(b"40") + client_frame(b"3" * 200) + client_frame(b"3" + b"x" * 70_000)
        for i in range(0, len(frames), 3):  # every header cut somewhere
            writer.write(frames[i : i + 3])
            await writer.drain()
        seen = b""
        while b'40{"sid"' not in seen:
            chunk = await asyncio.wait_for(reader.read(1 << 16), RECEIVE_TIMEOUT)
            assert chunk, "closed"
            seen += chunk


async def test_a_client_that_never_reads_cannot_grow_the_servers_memory(
    server: TestServer,
) -> None:
    """WebSocket PINGs (each answered with a PONG) from a client that reads nothing, with an
    Engine.IO PONG now and then so no ping timeout ends it: what the server holds unsent for
    it stays within the one bound, and the connection is dropped."""
    gateway = server.app[GATEWAY]
    engine = gateway.engine
    bound = engine.max_write_buffer
    ping = client_frame(b"p" * 125, 0x9)
    keepalive = client_frame(b"3")
    most_unsent = 0
    sent = 0
    async with raw_tcp_websocket(server, receive_buffer=4096) as (_reader, writer):
        try:
            while sent < 32 * bound:
                writer.write(ping * 64 + keepalive)
                sent += len(ping) * 64
                await asyncio.wait_for(writer.drain(), RECEIVE_TIMEOUT)
                unsent = [s.unsent() for s in engine.sockets.values()]
                most_unsent = max([most_unsent, *unsent])
                if not unsent:
                    break  # dropped
        except (ConnectionError, TimeoutError):
            pass  # dropped, or no longer read: either way the flood stopped growing anything
    assert most_unsent <= bound + 256 * 1024  # the bound, plus at most one read's replies
    await eventually(lambda: not engine.sockets, "the flooder is disconnected")
    assert engine.stats.slow_readers_dropped == 1


@pytest.mark.parametrize(
    ("code", "answer"), [(4000, 4000), (1001, 1001), (1006, 1002), (999, 1002)]
)
async def test_a_close_code_that_may_not_be_sent_is_answered_with_a_protocol_error(
    server: TestServer, code: int, answer: int
) -> None:
    async with raw_tcp_websocket(server) as (reader, writer):
        writer.write(client_frame(code.to_bytes(2, "big"), 0x8))
        data = await asyncio.wait_for(reader.read(), RECEIVE_TIMEOUT)  # until the server closes
    close_at = data.rfind(b"\x88\x02")
    assert close_at >= 0 and int.from_bytes(data[close_at + 2 : close_at + 4], "big") == answer


async def test_an_unknown_engineio_packet_type_is_a_protocol_error(
    server: TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with raw_socket(server, "&tenant=tenant_a") as sock:
        await sock.send("9")
        assert await sock.closes()
        assert sock.closed_with == 1002
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_binary_packet_before_connect_ends_the_connection(
    server: TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with raw_socket(server, "&tenant=tenant_a") as sock:
        await sock.send('451-["create_event",{"_placeholder":true,"num":0}]')
        assert await sock.closes()
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
