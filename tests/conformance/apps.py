"""The servers the official suites test: their reference handlers on two stacks.

Each suite's README (`../shared/conformance/`) gives a reference Node server: pingInterval
300 ms, pingTimeout 200 ms, maxPayload 1000000, CORS `*`, and
- Engine.IO suite (path `/engine.io/`): every message is sent back as it came;
- Socket.IO suite (path `/socket.io/`): on connect to `/` or `/custom`,
  `emit("auth", handshake.auth)`; `message` is answered with `message-back` and the same
  arguments, `message-with-ack` with an ack of its arguments; no other namespace exists.

`STACKS` builds those handlers on
- `gateway`: the Socket.IO server feedserver runs today (`realtime.GatewayServer` on
  `eio_transport.LeanEngineServer`, WebSockets detached by `fanout.RoomBroadcaster` into
  `eio_websocket`), with the options `RealtimeGateway` gives it except the suites' own
  (pings, payload size, CORS). The Engine.IO suite runs on that server's engine, whose
  handlers are pointed at the echo instead of at Socket.IO;
- `stock`: python-socketio's `AsyncServer` and python-engineio's `AsyncServer` as shipped.

Test-only: nothing in `feedserver` imports this.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import engineio
import socketio
from aiohttp import web

from feedserver.fanout import RoomBroadcaster
from feedserver.jsoncodec import SocketJson
from feedserver.realtime import GatewayServer
from feedserver.rooms import IndexedManager

# The suites' expected configuration (their READMEs' reference servers).
PING_INTERVAL = 0.3
PING_TIMEOUT = 0.2
MAX_PAYLOAD = 1_000_000
SUITE_OPTIONS: dict[str, Any] = {
    "async_mode": "aiohttp",
    "ping_interval": PING_INTERVAL,
    "ping_timeout": PING_TIMEOUT,
    "max_http_buffer_size": MAX_PAYLOAD,
    "cors_allowed_origins": "*",
}
SOCKETIO_NAMESPACES = ("/", "/custom")


def gateway_server() -> GatewayServer:
    """feedserver's Socket.IO server as `RealtimeGateway` builds it, with the suites' options,
    and its WebSockets detached as in production (the broadcaster installs that driver)."""
    server = GatewayServer(
        client_manager=IndexedManager(),
        json=SocketJson,
        http_compression=False,
        logger=False,
        engineio_logger=False,
        **SUITE_OPTIONS,
    )
    RoomBroadcaster(server)  # kept alive by the driver it installs into server.eio
    return server


def stock_server() -> socketio.AsyncServer:
    return socketio.AsyncServer(logger=False, engineio_logger=False, **SUITE_OPTIONS)


def gateway_engine() -> engineio.AsyncServer:
    """The engine under `gateway_server()`, its handlers taken over from Socket.IO."""
    engine: engineio.AsyncServer = gateway_server().eio
    return engine


def stock_engine() -> engineio.AsyncServer:
    return engineio.AsyncServer(logger=False, **SUITE_OPTIONS)


def engineio_app(engine: engineio.AsyncServer) -> web.Application:
    """The Engine.IO suite's reference server: every message sent back, text or binary."""

    async def connect(eio_sid: str, environ: dict[str, Any]) -> None:
        """Everyone is welcome (and this replaces Socket.IO's handler on the gateway)."""

    async def message(eio_sid: str, data: str | bytes) -> None:
        await engine.send(eio_sid, data)

    async def disconnect(eio_sid: str, reason: Any = None) -> None:
        pass

    engine.on("connect", connect)
    engine.on("message", message)
    engine.on("disconnect", disconnect)
    app = web.Application()
    engine.attach(app, engineio_path="engine.io")
    app.on_shutdown.append(lambda _app: engine.shutdown())
    return app


@dataclass(eq=False)
class _Emits:
    """The `auth` emits started by connect handlers, owned until they end or the app stops:
    socketio sends the CONNECT reply after the handler returns, and `auth` must follow it."""

    tasks: set[asyncio.Task[None]]

    def start(self, emit: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(emit)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def cancel(self, _app: web.Application) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def socketio_app(server: socketio.AsyncServer) -> web.Application:
    """The Socket.IO suite's reference server on `server`."""
    emits = _Emits(set())
    for namespace in SOCKETIO_NAMESPACES:
        server.on("connect", _greeter(server, namespace, emits), namespace=namespace)

    async def message(sid: str, *args: Any) -> None:
        await server.emit("message-back", args, to=sid)

    async def message_with_ack(sid: str, *args: Any) -> tuple[Any, ...]:
        return args  # a tuple: one ack argument each

    server.on("message", message)
    server.on("message-with-ack", message_with_ack)
    app = web.Application()
    server.attach(app, socketio_path="socket.io")
    app.on_shutdown.append(emits.cancel)
    app.on_shutdown.append(lambda _app: server.shutdown())
    return app


def _greeter(
    server: socketio.AsyncServer, namespace: str, emits: _Emits
) -> Callable[[str, dict[str, Any], Any], Coroutine[Any, Any, None]]:
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        # socket.io's `handshake.auth` is `{}` when the CONNECT carries none.
        payload = {} if auth is None else auth
        emits.start(server.emit("auth", payload, to=sid, namespace=namespace))

    return connect


@dataclass(frozen=True, slots=True)
class Stack:
    """One Socket.IO / Engine.IO server implementation under test."""

    name: str
    engineio: Callable[[], web.Application]
    socketio: Callable[[], web.Application]


STACKS = {
    "gateway": Stack(
        "gateway",
        engineio=lambda: engineio_app(gateway_engine()),
        socketio=lambda: socketio_app(gateway_server()),
    ),
    "stock": Stack(
        "stock",
        engineio=lambda: engineio_app(stock_engine()),
        socketio=lambda: socketio_app(stock_server()),
    ),
}
