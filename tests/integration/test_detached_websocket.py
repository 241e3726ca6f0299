"""A WebSocket leaves aiohttp once its handshake is done (feedserver.engineio.handover):
what it still does and what it no longer holds, through real WebSocket clients."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from typing import Any

from aiohttp import ClientSession, WSMsgType
from aiohttp.test_utils import TestServer

from feedserver.app import GATEWAY
from tests.rest_calls import publish
from tests.waiting import eventually

RECEIVE_TIMEOUT = 5.0
WS_PATH = "/socket.io/?EIO=4&transport=websocket&tenant=tenant_a"


def engineio(server: TestServer) -> Any:
    return server.app[GATEWAY].sio.eio


async def test_a_connected_websocket_is_no_longer_an_aiohttp_request(server: TestServer) -> None:
    async with ClientSession() as http, http.ws_connect(server.make_url(WS_PATH)) as ws:
        assert (await ws.receive_str(timeout=RECEIVE_TIMEOUT)).startswith("0{")
        await ws.send_str("40")
        assert (await ws.receive_str(timeout=RECEIVE_TIMEOUT)).startswith("40{")
        assert server.runner is not None and server.runner.server is not None
        web_server = server.runner.server
        await eventually(lambda: not web_server.connections, "aiohttp forgets the connection")
        (sock,) = engineio(server).sockets.values()
        assert sock.transport == "websocket"
        # socketio keeps the environ; it no longer holds the request, but the peer's address
        (environ,) = server.app[GATEWAY].sio.environ.values()
        assert "aiohttp.request" not in environ and "wsgi.input" not in environ
        assert environ["REMOTE_ADDR"] == "127.0.0.1"
        # and the socket still gets the tenant's events, after the catch-up
        texts = [await ws.receive_str(timeout=RECEIVE_TIMEOUT) for _ in range(2)]
        assert '"connection_established"' in texts[0] and '"initial_events"' in texts[1]
        event = await publish(server, "tenant_a", "to a detached socket")
        text = await ws.receive_str(timeout=RECEIVE_TIMEOUT)
        assert text.startswith('42["event_created"') and f'"id":"{event["id"]}"' in text


async def test_websocket_pings_are_answered_with_pongs(server: TestServer) -> None:
    async with (
        ClientSession() as http,
        http.ws_connect(server.make_url(WS_PATH), autoping=False) as ws,
    ):
        assert (await ws.receive_str(timeout=RECEIVE_TIMEOUT)).startswith("0{")
        await ws.ping(b"are you there")
        msg = await ws.receive(timeout=RECEIVE_TIMEOUT)
        assert (msg.type, msg.data) == (WSMsgType.PONG, b"are you there")


async def test_a_client_close_is_answered_and_the_socket_forgotten(server: TestServer) -> None:
    async with ClientSession() as http:
        ws = await http.ws_connect(server.make_url(WS_PATH))
        assert (await ws.receive_str(timeout=RECEIVE_TIMEOUT)).startswith("0{")
        await ws.send_str("40")
        assert (await ws.receive_str(timeout=RECEIVE_TIMEOUT)).startswith("40{")
        assert await ws.close(code=4000)  # True: the server answered with its close frame
        assert ws.close_code == 4000  # its close frame echoes the client's code
        await eventually(lambda: not engineio(server).sockets, "Engine.IO drops the socket")
        assert not server.app[GATEWAY]._sessions


async def test_a_message_that_is_not_engineio_closes_with_a_protocol_error(
    server: TestServer,
) -> None:
    async with ClientSession() as http, http.ws_connect(server.make_url(WS_PATH)) as ws:
        assert (await ws.receive_str(timeout=RECEIVE_TIMEOUT)).startswith("0{")
        await ws.send_str("")  # an Engine.IO packet has at least its type
        msg = await ws.receive(timeout=RECEIVE_TIMEOUT)
        assert msg.type == WSMsgType.CLOSE and msg.data == 1002
    await eventually(lambda: not engineio(server).sockets, "Engine.IO drops the socket")


async def test_an_engineio_disconnect_sends_its_close_packet_then_closes(
    server: TestServer,
) -> None:
    async with ClientSession() as http, http.ws_connect(server.make_url(WS_PATH)) as ws:
        assert (await ws.receive_str(timeout=RECEIVE_TIMEOUT)).startswith("0{")
        await ws.send_str("40")
        assert (await ws.receive_str(timeout=RECEIVE_TIMEOUT)).startswith("40{")
        (eio_sid,) = engineio(server).sockets
        await engineio(server).disconnect(eio_sid)
        texts = []
        while (msg := await ws.receive(timeout=RECEIVE_TIMEOUT)).type == WSMsgType.TEXT:
            texts.append(msg.data)
        # what was sent before (the catch-up), then Engine.IO CLOSE, then the close frame
        assert texts[-1] == "1", texts
        assert msg.type == WSMsgType.CLOSE and msg.data == 1000
    await eventually(lambda: not engineio(server).sockets, "Engine.IO drops the socket")
    assert not server.app[GATEWAY]._sessions


async def test_the_connect_sequence_takes_two_writes(server: TestServer) -> None:
    stats = server.app[GATEWAY].engine.stats
    sends_before = stats.sends
    async with ClientSession() as http, http.ws_connect(server.make_url(WS_PATH)) as ws:
        assert (await ws.receive_str(timeout=RECEIVE_TIMEOUT)).startswith("0{")
        # the 101 and the Engine.IO OPEN went out in one send()
        assert stats.sends == sends_before + 1
        await ws.send_str("40")
        texts = [await ws.receive_str(timeout=RECEIVE_TIMEOUT) for _ in range(3)]
        assert texts[0].startswith("40{")
        assert '"connection_established"' in texts[1] and '"initial_events"' in texts[2]
        # the CONNECT reply, connection_established and initial_events in one more
        assert stats.sends == sends_before + 2


async def test_connects_handled_in_one_loop_pass_take_two_writes_each(
    server: TestServer,
) -> None:
    """Two CONNECTs read in the same loop pass: the second's reply is queued while the
    first's flush is already due, and its catch-up still leaves with it."""
    stats = server.app[GATEWAY].engine.stats
    async with (
        ClientSession() as http,
        http.ws_connect(server.make_url(WS_PATH)) as first,
        http.ws_connect(server.make_url(WS_PATH)) as second,
    ):
        for ws in (first, second):
            assert (await ws.receive_str(timeout=RECEIVE_TIMEOUT)).startswith("0{")
        sends_before = stats.sends
        await asyncio.gather(first.send_str("40"), second.send_str("40"))
        for ws in (first, second):
            texts = [await ws.receive_str(timeout=RECEIVE_TIMEOUT) for _ in range(3)]
            assert texts[0].startswith("40{") and '"initial_events"' in texts[2]
        assert stats.sends == sends_before + 2


async def test_frames_sent_before_the_101_arrives_are_read(server: TestServer) -> None:
    """A client that does not wait for the 101: its Socket.IO CONNECT came in the same
    segment as the upgrade request, and is answered like any other."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {WS_PATH} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(b"40"))
        writer.write(request + bytes([0x81, 0x80 | 2]) + mask + masked)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), RECEIVE_TIMEOUT)
        assert head.startswith(b"HTTP/1.1 101")
        texts: list[str] = []
        while len(texts) < 2:  # OPEN, then the CONNECT reply
            first, length = await asyncio.wait_for(reader.readexactly(2), RECEIVE_TIMEOUT)
            assert first == 0x81 and length < 126  # small unmasked text frames
            texts.append((await reader.readexactly(length)).decode())
        assert texts[0].startswith("0{") and texts[1].startswith("40{"), texts
    finally:
        writer.close()


async def open_polling_socket(http: ClientSession, server: TestServer) -> str:
    """A long-polling Engine.IO socket with its Socket.IO connect done; returns its sid."""
    base = server.make_url("/socket.io/?EIO=4&transport=polling&tenant=tenant_a")
    async with http.get(base) as resp:
        opened = await resp.text()
    assert opened.startswith("0{")
    sid: str = json.loads(opened[1:])["sid"]
    async with http.post(f"{base}&sid={sid}", data="40") as resp:
        assert resp.status == 200
    texts: list[str] = []
    while not any('"initial_events"' in t for t in texts):  # the connect sequence
        async with http.get(f"{base}&sid={sid}") as resp:
            texts += (await resp.text()).split("\x1e")
    assert texts[0].startswith("40{")
    return sid


async def test_an_upgrade_from_polling_is_detached_after_the_probe(server: TestServer) -> None:
    async with ClientSession() as http:
        sid = await open_polling_socket(http, server)
        url = server.make_url(f"/socket.io/?EIO=4&transport=websocket&sid={sid}")
        async with http.ws_connect(url) as ws:
            await ws.send_str("2probe")
            assert await ws.receive_str(timeout=RECEIVE_TIMEOUT) == "3probe"
            # an event published mid-upgrade waits in the long-polling queue ...
            first = await publish(server, "tenant_a", "during the upgrade")
            await ws.send_str("5")  # UPGRADE
            second = await publish(server, "tenant_a", "after the upgrade")
            # ... and both come over the WebSocket, in order
            texts: list[str] = []
            while len(texts) < 2:
                text = await ws.receive_str(timeout=RECEIVE_TIMEOUT)
                if text != "6":
                    texts.append(text)
            assert f'"id":"{first["id"]}"' in texts[0], texts
            assert f'"id":"{second["id"]}"' in texts[1], texts
            (sock,) = engineio(server).sockets.values()
            assert sock.transport == "websocket"
            assert server.runner is not None and server.runner.server is not None
            web_server = server.runner.server
            await eventually(lambda: not web_server.connections, "aiohttp forgets the WebSocket")


async def test_a_failed_upgrade_leaves_the_socket_polling(server: TestServer) -> None:
    async with ClientSession() as http:
        sid = await open_polling_socket(http, server)
        url = server.make_url(f"/socket.io/?EIO=4&transport=websocket&sid={sid}")
        async with http.ws_connect(url) as ws:
            await ws.send_str("2something else")  # not the probe
            msg = await ws.receive(timeout=RECEIVE_TIMEOUT)
            assert msg.type == WSMsgType.CLOSE
        (sock,) = engineio(server).sockets.values()
        assert sock.transport == "polling" and not sock.closed
        event = await publish(server, "tenant_a", "still polling")
        base = server.make_url(f"/socket.io/?EIO=4&transport=polling&sid={sid}")
        async with http.get(base) as resp:
            assert f'"id":"{event["id"]}"' in await resp.text()
