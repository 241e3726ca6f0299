"""RoomBroadcaster and the engine's write path against a tiny app and real clients."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import socketio
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from feedserver.broadcast import RoomBroadcaster
from feedserver.engineio import EngineServer
from feedserver.jsoncodec import SocketJson
from feedserver.socketio_internals import IndexedManager, SocketServer

ROOM = "tenant_a"
RECEIVE_TIMEOUT = 10


@dataclass
class FanoutApp:
    server: TestServer
    sio: SocketServer
    broadcaster: RoomBroadcaster
    connected: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    disconnected: asyncio.Queue[str] = field(default_factory=asyncio.Queue)

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    def room_size(self) -> int:
        return len(list(self.sio.manager.get_participants("/", ROOM)))

    @property
    def dropped(self) -> int:
        engine: EngineServer = self.sio.eio
        return engine.stats.slow_readers_dropped


async def start_fanout_app(aiohttp_server: Any, **engine_options: Any) -> FanoutApp:
    # Short ping times: a polling client's disconnect waits for its pending long poll, which
    # the server of a closed socket only ends at ping_interval + ping_timeout.
    sio = SocketServer(
        async_mode="aiohttp",
        client_manager=IndexedManager(),
        json=SocketJson,
        cors_allowed_origins="*",
        ping_interval=1,
        ping_timeout=2,
        **engine_options,
    )
    app = web.Application()
    sio.attach(app)
    fan = FanoutApp(
        server=None,  # type: ignore[arg-type]
        sio=sio,
        broadcaster=RoomBroadcaster(sio.manager, sio.eio),
    )

    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        await sio.enter_room(sid, ROOM)
        fan.connected.put_nowait(sid)

    async def disconnect(sid: str, reason: Any = None) -> None:
        fan.disconnected.put_nowait(sid)

    sio.on("connect", connect)
    sio.on("disconnect", disconnect)
    fan.server = await aiohttp_server(app, host="127.0.0.1")
    return fan


@pytest.fixture
async def fanout_app(aiohttp_server: Any) -> FanoutApp:
    return await start_fanout_app(aiohttp_server)


class Subscriber:
    """A python-socketio AsyncClient that records `event_created` seqs (and offsets)."""

    def __init__(self) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.seqs: asyncio.Queue[int] = asyncio.Queue()
        self.offsets: list[str] = []
        self.client.on("event_created", self._on_event)

    async def _on_event(self, data: dict[str, Any], *offset: str) -> None:
        self.offsets.extend(offset)
        self.seqs.put_nowait(data["seq"])

    async def received(self, count: int) -> list[int]:
        return [await asyncio.wait_for(self.seqs.get(), RECEIVE_TIMEOUT) for _ in range(count)]


@pytest.fixture
async def subscriber() -> AsyncIterator[Subscriber]:
    sub = Subscriber()
    yield sub
    await sub.client.disconnect()


def event_json(seq: int, padding: int = 0) -> str:
    return json.dumps({"seq": seq, "message": "m" * padding}, separators=(",", ":"))


async def publish_mixed_round(fan: FanoutApp, seq: int, padding: int = 0) -> None:
    """Four events: socketio emits (whose packet is queued once the emit has returned) and
    broadcasts, back to back, none of them written yet when the next is made."""
    await fan.sio.emit("event_created", {"seq": seq, "message": ""}, room=ROOM)
    fan.broadcaster.broadcast(ROOM, "event_created", event_json(seq + 1))
    await fan.sio.emit("event_created", {"seq": seq + 2, "message": ""}, room=ROOM)
    fan.broadcaster.broadcast(ROOM, "event_created", event_json(seq + 3, padding))


async def publish_mixed(fan: FanoutApp, first: int, count: int) -> None:
    for round_ in range(count // 4):
        await publish_mixed_round(fan, first + 4 * round_, padding=round_ * 7)


async def test_websocket_client_receives_broadcasts_in_order(
    fanout_app: FanoutApp, subscriber: Subscriber
) -> None:
    await subscriber.client.connect(fanout_app.url, transports=["websocket"])
    for seq in range(1, 201):
        sent = fanout_app.broadcaster.broadcast(ROOM, "event_created", event_json(seq))
        assert sent == 1
    await publish_mixed(fanout_app, 201, 200)
    assert await subscriber.received(400) == list(range(1, 401))
    assert fanout_app.dropped == 0


async def test_polling_client_receives_broadcasts_in_order(
    fanout_app: FanoutApp, subscriber: Subscriber
) -> None:
    await subscriber.client.connect(fanout_app.url, transports=["polling"])
    # python-engineio's client refuses a poll response of more than 16 packets, so publish
    # in bursts of 4 and let each burst arrive before the next one
    received: list[int] = []
    for first in range(1, 201, 4):
        await publish_mixed_round(fanout_app, first)
        received += await subscriber.received(4)
    assert received == list(range(1, 201))
    assert fanout_app.sio.eio.stats.sends == 0  # no WebSocket frame was written


async def test_upgrading_client_receives_broadcasts_in_order(
    fanout_app: FanoutApp, subscriber: Subscriber
) -> None:
    await subscriber.client.connect(fanout_app.url, transports=["polling", "websocket"])
    seq = 0
    # one event per round trip while the client upgrades from polling to websocket
    while subscriber.client.transport() != "websocket" and seq < 2000:
        seq += 1
        fanout_app.broadcaster.broadcast(ROOM, "event_created", event_json(seq))
        assert await subscriber.received(1) == [seq]
    assert subscriber.client.transport() == "websocket"
    for more in range(seq + 1, seq + 101):
        fanout_app.broadcaster.broadcast(ROOM, "event_created", event_json(more))
    await publish_mixed(fanout_app, seq + 101, 100)
    assert await subscriber.received(200) == list(range(seq + 1, seq + 201))
    assert fanout_app.sio.eio.stats.sends > 0


async def test_a_room_has_recipients_while_a_socket_of_this_process_is_in_it(
    fanout_app: FanoutApp, subscriber: Subscriber
) -> None:
    assert not fanout_app.broadcaster.has_recipients(ROOM)
    await subscriber.client.connect(fanout_app.url, transports=["websocket"])
    await asyncio.wait_for(fanout_app.connected.get(), RECEIVE_TIMEOUT)
    assert fanout_app.broadcaster.has_recipients(ROOM)
    assert not fanout_app.broadcaster.has_recipients("another_room")
    await subscriber.client.disconnect()
    await asyncio.wait_for(fanout_app.disconnected.get(), RECEIVE_TIMEOUT)
    assert not fanout_app.broadcaster.has_recipients(ROOM)


async def test_offset_is_sent_as_a_trailing_argument(
    fanout_app: FanoutApp, subscriber: Subscriber
) -> None:
    await subscriber.client.connect(fanout_app.url, transports=["websocket"])
    fanout_app.broadcaster.broadcast(ROOM, "event_created", event_json(42), offset="42")
    assert await subscriber.received(1) == [42]
    assert subscriber.offsets == ["42"]


async def test_every_subscriber_of_the_room_and_no_one_else_receives(
    fanout_app: FanoutApp,
) -> None:
    subs = [Subscriber() for _ in range(3)]
    outsider = Subscriber()
    try:
        for sub, transport in zip(subs, ["websocket", "polling", "websocket"], strict=True):
            await sub.client.connect(fanout_app.url, transports=[transport])
        await outsider.client.connect(fanout_app.url, transports=["websocket"])
        outsider_sid = outsider.client.get_sid()
        await fanout_app.sio.leave_room(outsider_sid, ROOM)
        for seq in range(1, 11):
            sent = fanout_app.broadcaster.broadcast(ROOM, "event_created", event_json(seq))
            assert sent == 3
        for sub in subs:
            assert await sub.received(10) == list(range(1, 11))
        # a marker sent to the outsider alone arrives first: nothing of the room preceded it
        await fanout_app.sio.emit("event_created", {"seq": -1}, to=outsider_sid)
        assert await outsider.received(1) == [-1]
    finally:
        for sub in [*subs, outsider]:
            await sub.client.disconnect()


async def test_permessage_deflate_is_never_negotiated(fanout_app: FanoutApp) -> None:
    async with (
        ClientSession() as http,
        http.ws_connect(
            f"{fanout_app.url}/socket.io/?EIO=4&transport=websocket", compress=15
        ) as ws,
    ):
        assert ws.compress == 0
        assert "Sec-WebSocket-Extensions" not in ws._response.headers
        opening = await ws.receive_str()
        assert opening.startswith("0{")


# -- slow readers ------------------------------------------------------------------------


def masked_text_frame(payload: bytes) -> bytes:
    """A client-to-server text frame (clients must mask; a zero mask is a valid mask)."""
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


async def open_non_reading_websocket(url_host: str, port: int) -> asyncio.StreamWriter:
    """A WebSocket client that connects to the namespace and then never reads again."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: small window
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (url_host, port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
            f"Host: {url_host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    status = await reader.readuntil(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 101")
    writer.write(masked_text_frame(b"40"))
    return writer


async def test_websocket_client_that_stops_reading_is_disconnected(
    aiohttp_server: Any,
) -> None:
    fan = await start_fanout_app(aiohttp_server, max_write_buffer=256 * 1024)
    host, port = fan.server.host, fan.server.port
    assert port is not None
    writer = await open_non_reading_websocket(host, port)
    try:
        sid = await asyncio.wait_for(fan.connected.get(), RECEIVE_TIMEOUT)
        big = event_json(0, padding=32 * 1024)
        for sent in range(1, 20_001):  # noqa: B007 - used after the loop
            fan.broadcaster.broadcast(ROOM, "event_created", big)
            if fan.dropped:
                break
            # Let the loop run between events, as it does between two publishes: the
            # frames taken for the fast path reach the transport in a later loop pass.
            await asyncio.sleep(0)
        assert fan.dropped == 1
        assert await asyncio.wait_for(fan.disconnected.get(), RECEIVE_TIMEOUT) == sid
        assert fan.room_size() == 0
        # the server's own buffer never held much more than the bound
        assert sent * len(big) > 256 * 1024
    finally:
        writer.close()


async def test_polling_client_that_stops_polling_is_disconnected_at_the_queue_bound(
    aiohttp_server: Any,
) -> None:
    max_queue = 5
    fan = await start_fanout_app(aiohttp_server, max_queue=max_queue)
    async with ClientSession(fan.url) as http:
        async with http.get("/socket.io/?EIO=4&transport=polling") as resp:
            opening = await resp.text()
        eio_sid = json.loads(opening[1:])["sid"]
        async with http.post(
            f"/socket.io/?EIO=4&transport=polling&sid={eio_sid}", data="40"
        ) as resp:
            assert resp.status == 200
        sid = await asyncio.wait_for(fan.connected.get(), RECEIVE_TIMEOUT)
        # the CONNECT reply is queued too: max_queue - 1 events fit, the next one evicts
        for _ in range(max_queue - 1):
            assert fan.broadcaster.broadcast(ROOM, "event_created", event_json(1)) == 1
        assert fan.dropped == 0
        assert fan.broadcaster.broadcast(ROOM, "event_created", event_json(2)) == 0
        assert fan.dropped == 1
        assert await asyncio.wait_for(fan.disconnected.get(), RECEIVE_TIMEOUT) == sid
        assert fan.room_size() == 0
        assert eio_sid not in fan.sio.eio.sockets  # dropped, with what it had not taken


async def test_engineio_sends_between_coalesced_broadcasts_keep_their_place(
    fanout_app: FanoutApp, subscriber: Subscriber
) -> None:
    await subscriber.client.connect(fanout_app.url, transports=["websocket"])
    eio_sid = subscriber.client.eio.sid
    seq = 0
    for _ in range(50):
        # none of these awaits yields: all three happen before the broadcasts' flush
        fanout_app.broadcaster.broadcast(ROOM, "event_created", event_json(seq + 1))
        await fanout_app.sio.eio.send(eio_sid, f'2["event_created",{event_json(seq + 2)}]')
        fanout_app.broadcaster.broadcast(ROOM, "event_created", event_json(seq + 3))
        seq += 3
    assert await subscriber.received(seq) == list(range(1, seq + 1))


def hold_next_flush(fan: FanoutApp, seconds: float) -> None:
    """Act as if a long flush just ended: the next one waits `seconds` (a busy server)."""
    fan.sio.eio.writes._quiet_until = asyncio.get_running_loop().time() + seconds


async def test_broadcasts_during_a_pause_reach_a_socket_in_one_write_in_order(
    fanout_app: FanoutApp, subscriber: Subscriber
) -> None:
    await subscriber.client.connect(fanout_app.url, transports=["websocket"])
    sends_before = fanout_app.sio.eio.stats.sends
    hold_next_flush(fanout_app, 0.3)
    for seq in range(1, 21):
        fanout_app.broadcaster.broadcast(ROOM, "event_created", event_json(seq))
    assert await subscriber.received(20) == list(range(1, 21))
    assert fanout_app.sio.eio.stats.sends == sends_before + 1


async def test_sends_during_a_pause_keep_their_place_among_pending_broadcasts(
    fanout_app: FanoutApp, subscriber: Subscriber
) -> None:
    await subscriber.client.connect(fanout_app.url, transports=["websocket"])
    eio_sid = subscriber.client.eio.sid
    sid = subscriber.client.get_sid()
    hold_next_flush(fanout_app, 0.3)
    seq = 0
    for _ in range(10):
        # a pending broadcast, a socketio emit to the room, a broadcast, an Engine.IO
        # send, a broadcast, a socketio emit to the socket
        fanout_app.broadcaster.broadcast(ROOM, "event_created", event_json(seq + 1))
        await fanout_app.sio.emit("event_created", {"seq": seq + 2, "message": ""}, room=ROOM)
        fanout_app.broadcaster.broadcast(ROOM, "event_created", event_json(seq + 3))
        await fanout_app.sio.eio.send(eio_sid, f'2["event_created",{event_json(seq + 4)}]')
        fanout_app.broadcaster.broadcast(ROOM, "event_created", event_json(seq + 5))
        await fanout_app.sio.emit("event_created", {"seq": seq + 6, "message": ""}, to=sid)
        seq += 6
    assert await subscriber.received(seq) == list(range(1, seq + 1))


async def test_a_socket_that_leaves_during_a_pause_gets_nothing_more(
    fanout_app: FanoutApp,
) -> None:
    leaver, stayer = Subscriber(), Subscriber()
    try:
        await leaver.client.connect(fanout_app.url, transports=["websocket"])
        await stayer.client.connect(fanout_app.url, transports=["websocket"])
        hold_next_flush(fanout_app, 0.3)
        fanout_app.broadcaster.broadcast(ROOM, "event_created", event_json(1))
        await leaver.client.disconnect()
        await asyncio.wait_for(fanout_app.disconnected.get(), RECEIVE_TIMEOUT)
        fanout_app.broadcaster.broadcast(ROOM, "event_created", event_json(2))
        assert await stayer.received(2) == [1, 2]
        assert leaver.seqs.empty()
    finally:
        await stayer.client.disconnect()
