"""The servers the official suites test: their reference handlers on two stacks.

Each suite's README (`../shared/conformance/`) gives a reference Node server: pingInterval
300 ms, pingTimeout 200 ms, maxPayload 1000000, CORS `*`, and
- Engine.IO suite (path `/engine.io/`): every message is sent back as it came;
- Socket.IO suite (path `/socket.io/`): on connect to `/` or `/custom`,
  `emit("auth", handshake.auth)`; `message` is answered with `message-back` and the same
  arguments, `message-with-ack` with an ack of its arguments; no other namespace exists.

`STACKS` builds those handlers on
- `gateway`: the Socket.IO server feedserver runs (`realtime.GatewayServer`, python-socketio
  on `feedserver.engineio.EngineServer`), with the options `RealtimeGateway` gives it
  except the suites' own (pings, payload size, CORS). The Engine.IO suite runs on
  feedserver's engine alone, its handlers the echo;
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

from feedserver.engineio import EngineServer
from feedserver.jsoncodec import SocketJson
from feedserver.realtime import GatewayServer
from feedserver.socketio_internals import IndexedManager
from feedserver.upgrades import DirectUpgrades
from tests.listening import Unrecorded

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
# The listener's shortcut of an app on feedserver's engine: new sessions' WebSocket
# handshakes are answered as `feedserver serve` answers them, before aiohttp.
SHORTCUT = web.AppKey("shortcut", DirectUpgrades)


def gateway_server() -> GatewayServer:
    """feedserver's Socket.IO server as `RealtimeGateway` builds it, with the suites' options."""
    return GatewayServer(
        client_manager=IndexedManager(),
        json=SocketJson,
        http_compression=False,
        logger=False,
        engineio_logger=False,
        **SUITE_OPTIONS,
    )


def stock_server() -> socketio.AsyncServer:
    return socketio.AsyncServer(logger=False, engineio_logger=False, **SUITE_OPTIONS)


def gateway_engine() -> Any:
    """feedserver's engine with the suites' options."""
    return EngineServer(**SUITE_OPTIONS)


def stock_engine() -> engineio.AsyncServer:
    return engineio.AsyncServer(logger=False, **SUITE_OPTIONS)


def engineio_app(engine: Any) -> web.Application:
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
    _answer_upgrades_directly(app, engine)
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
    _answer_upgrades_directly(app, server.eio)
    app.on_shutdown.append(emits.cancel)
    app.on_shutdown.append(lambda _app: server.shutdown())
    return app


def _answer_upgrades_directly(app: web.Application, engine: Any) -> None:
    if isinstance(engine, EngineServer):  # python-engineio's has no such path
        app[SHORTCUT] = DirectUpgrades(engine, Unrecorded(), {}, asyncio.Event())


def _greeter(
    server: socketio.AsyncServer, namespace: str, emits: _Emits
) -> Callable[[str, dict[str, Any], Any], Coroutine[Any, Any, None]]:
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        # socket.io's `handshake.auth` is `{}` when the CONNECT carries none.
        payload = {} if auth is None else auth
        emits.start(
            _after_connect(lambda: server.emit("auth", payload, to=sid, namespace=namespace))
        )

    return connect


# How long after its CONNECT reply a greeter emits `auth`. The suite's client (ws 8.5)
# emits every frame of one read at once, and its `waitFor` listens again only after the
# first: two frames that arrive in one read lose the second. The Node reference emits in
# its connection handler and passes by timing alone (its second write waits for the
# first's callback); python-socketio runs connect handlers before the CONNECT reply, so the
# emit is a task, and this spaces it as Node's writes are spaced. socket.io clients read
# both in one read either way (tests/integration/test_js_interop.py).
AFTER_CONNECT_S = 0.02


async def _after_connect(emit: Callable[[], Coroutine[Any, Any, None]]) -> None:
    await asyncio.sleep(AFTER_CONNECT_S)
    await emit()


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
