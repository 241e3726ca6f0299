"""The Engine.IO v4 server for aiohttp: handshake, sessions, long-polling, WebSocket, the
upgrade between them, heartbeats, CLOSE and limits.

It is the engine python-socketio's `AsyncServer` runs on (its `_engineio_server_class`
hook): it has the members the Socket.IO server and its managers call (`on`, `send`,
`send_packet`, `attach`, `handle_request`, `shutdown`, `sleep`, `start_background_task`,
`create_event`, `get_session`, `save_session`, `transport`, `async_mode`, `generate_id`,
`disconnect`) and none of python-engineio's code.

HTTP answers follow the Node original (the `engine.io` package): a refused request gets
400 and `{"code", "message"}` with Engine.IO's error codes; a POST is answered `ok`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import hdrs, web

from ..randomness import RandomBytes
from . import handover
from .frames import CLOSE_OK
from .handover import DetachableWebSocketResponse, FrameParsers, take_over
from .handshake import Answers, RequestHead
from .heartbeat import Heartbeat
from .packets import MESSAGE, OPEN, BadPacket, decode_payload
from .socket import EngineSocket, PollRefused
from .websocket import WebSocketConnection
from .writes import DEFAULT_MAX_PAUSE, WriteScheduler

log = logging.getLogger(__name__)

DEFAULT_MAX_QUEUE = 1000  # packets a long-polling client may leave untaken
DEFAULT_MAX_WRITE_BUFFER = 1 << 20  # bytes a WebSocket client may leave unread
ID_BYTES = 15

# Engine.IO's error codes (engine.io's `Server.errors`).
UNKNOWN_TRANSPORT, UNKNOWN_SID, BAD_HANDSHAKE_METHOD, BAD_REQUEST, FORBIDDEN = range(5)
UNSUPPORTED_PROTOCOL_VERSION = 5
SWITCHING_PROTOCOLS = 101

Handler = Callable[..., Awaitable[Any]]
OriginCheck = Callable[[str | None, Mapping[str, Any]], bool]


class Reason:
    """Why a connection ended: the strings python-socketio passes to disconnect handlers."""

    SERVER_DISCONNECT = "server disconnect"
    CLIENT_DISCONNECT = "client disconnect"
    PING_TIMEOUT = "ping timeout"
    TRANSPORT_CLOSE = "transport close"
    TRANSPORT_ERROR = "transport error"


@dataclass(slots=True, frozen=True)
class DirectHandshake:
    """A new session's WebSocket handshake that the engine answers itself
    (`EngineServer.direct_handshake`)."""

    key: str  # Sec-WebSocket-Key
    environ: dict[str, Any]


@dataclass(slots=True)
class EngineStats:
    """Running totals, for metrics and tests."""

    sends: int = 0  # send()s of WebSocket frames (fewer than frames when coalesced)
    slow_readers_dropped: int = 0
    opened_directly: int = 0  # sessions opened by `open_directly`, without aiohttp


class EngineError(Exception):
    def __init__(self, code: int, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


class EngineServer:
    async_mode = "aiohttp"
    reason = Reason

    def __init__(
        self,
        *,
        async_mode: str = "aiohttp",
        ping_interval: float = 25,
        ping_timeout: float = 20,
        max_http_buffer_size: int = 1_000_000,
        cors_allowed_origins: str | list[str] | OriginCheck | None = None,
        cors_credentials: bool = True,
        max_queue: int = DEFAULT_MAX_QUEUE,
        max_write_buffer: int = DEFAULT_MAX_WRITE_BUFFER,
        max_write_pause: float = DEFAULT_MAX_PAUSE,
        stats: EngineStats | None = None,
        eager_packets: bool = False,
        # python-socketio passes these; this engine has one behaviour for each:
        http_compression: bool = False,  # responses are never compressed
        logger: Any = False,  # logs go to the `feedserver.engineio` loggers
        json: Any = None,  # the OPEN packet is plain JSON; messages are socketio's text
        async_handlers: bool = False,  # a socket's packets are handled one at a time
    ) -> None:
        if async_mode != "aiohttp":
            raise ValueError("feedserver.engineio serves aiohttp only")
        if ping_interval <= 0 or ping_timeout <= 0:
            raise ValueError("ping_interval and ping_timeout must be positive")
        if max_queue < 1 or max_write_buffer < 1:
            raise ValueError("max_queue and max_write_buffer must be positive")
        handover.check_internals()
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.max_http_buffer_size = max_http_buffer_size
        self.cors_allowed_origins = cors_allowed_origins
        self.cors_credentials = cors_credentials
        self.max_queue = max_queue
        self.max_write_buffer = max_write_buffer
        self.handlers: dict[str, Handler] = {}
        self.sockets: dict[str, EngineSocket] = {}
        # Closed by the server with no poll pending: the last payload (ending in CLOSE)
        # for the client's next GET, kept for one heartbeat period.
        self._last_polls: dict[str, str] = {}
        self.heartbeat = Heartbeat(ping_interval, ping_timeout)
        self.writes = WriteScheduler(max_write_pause)
        self.stats = stats if stats is not None else EngineStats()
        # Whether a client's packets are handled at once, in the callback that read them
        # (`tasks.start_eagerly`), rather than in a task: for message handlers that need
        # no current task before they first wait (redis-py's timeouts need one).
        self.eager_packets = eager_packets
        self._tasks: set[asyncio.Task[Any]] = set()
        self._parsers: FrameParsers | None = None
        self._path: str | None = None  # where it is attached
        self._answers = Answers()
        self._random = RandomBytes()  # for generate_id
        # The OPEN packet's fields after the sid, the same for every session.
        timing = (
            f'"pingInterval":{round(ping_interval * 1000)},'
            f'"pingTimeout":{round(ping_timeout * 1000)},'
            f'"maxPayload":{max_http_buffer_size}}}'
        )
        self._open_tail = {
            "polling": f'","upgrades":["websocket"],{timing}',
            "websocket": f'","upgrades":[],{timing}',
        }

    # -- what python-socketio calls -------------------------------------------------------

    def on(self, event: str, handler: Handler | None = None) -> Any:
        if event not in ("connect", "message", "disconnect"):
            raise ValueError(f"unknown Engine.IO event {event!r}")
        if handler is None:

            def register(function: Handler) -> Handler:
                self.handlers[event] = function
                return function

            return register
        self.handlers[event] = handler
        return None

    @property
    def path(self) -> str:
        """Where it is attached (`/socket.io/`): its route, as the access log names it."""
        if self._path is None:
            raise RuntimeError("the engine is not attached to an app")
        return self._path

    def attach(self, app: web.Application, engineio_path: str = "engine.io") -> None:
        self._path = f"/{engineio_path.strip('/')}/"
        app.router.add_route("*", self._path, self.handle_request)

    async def send(self, sid: str, data: str | bytes) -> None:
        self.send_now(sid, data)

    def send_now(self, sid: str, data: str | bytes) -> None:
        """`send`, queued when this returns, for a caller that is not a coroutine."""
        sock = self.sockets.get(sid)
        if sock is not None:
            sock.send_message(data)

    async def send_packet(self, sid: str, pkt: Any) -> None:
        """An Engine.IO packet object as python-socketio's managers build them
        (`engineio.packet.Packet`: `packet_type`, `data`): only MESSAGEs are sent."""
        if pkt.packet_type != MESSAGE:
            raise ValueError(f"only MESSAGE packets are sent this way, not {pkt.packet_type}")
        await self.send(sid, pkt.data)

    async def disconnect(self, sid: str | None = None) -> None:
        targets = list(self.sockets.values()) if sid is None else [self.sockets.get(sid)]
        for sock in targets:
            if sock is not None:
                sock.close()

    def transport(self, sid: str) -> str:
        return self.sockets[sid].transport

    async def get_session(self, sid: str) -> dict[str, Any]:
        sock = self.sockets[sid]
        if sock.session is None:
            sock.session = {}
        return sock.session

    async def save_session(self, sid: str, session: dict[str, Any]) -> None:
        self.sockets[sid].session = session

    def create_event(self) -> asyncio.Event:
        return asyncio.Event()

    async def sleep(self, seconds: float = 0) -> None:
        await asyncio.sleep(seconds)

    def start_background_task(self, target: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        task = asyncio.ensure_future(target(*args, **kwargs))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def generate_id(self) -> str:
        """20 URL-safe characters from 15 random bytes, as engine.io's `base64id` (a
        connect takes two: the Engine.IO and the Socket.IO sid)."""
        return self._random.urlsafe(ID_BYTES)

    async def close_transports(self, within: float) -> None:
        """Close every connection once what it has queued has left (at most `within`
        seconds), as a server that goes away does (`EngineSocket.close_transport`)."""
        connections = list(self.sockets.values())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not all(s.sent_all() for s in connections) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # a client's next poll has no event of its own
        for sock in connections:
            sock.close_transport()

    async def shutdown(self) -> None:
        for sock in list(self.sockets.values()):
            sock.close_transport()
        self.heartbeat.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.writes.close()

    # -- what sockets call ------------------------------------------------------------------

    def forget(self, sock: EngineSocket) -> None:
        if self.sockets.get(sock.sid) is sock:
            del self.sockets[sock.sid]

    def keep_last_poll(self, sid: str, payload: str) -> None:
        self._last_polls[sid] = payload
        asyncio.get_running_loop().call_later(
            self.ping_interval + self.ping_timeout, self._last_polls.pop, sid, None
        )

    async def disconnected(self, sock: EngineSocket, reason: str) -> None:
        handler = self.handlers.get("disconnect")
        if handler is not None:
            try:
                await handler(sock.sid, reason)
            except Exception:
                log.exception("disconnect handler failed for %s", sock.sid)

    # -- HTTP -----------------------------------------------------------------------------

    async def handle_request(self, request: web.Request) -> web.StreamResponse:
        try:
            cors = self._cors_headers(request)
        except EngineError as exc:
            return _error_response(exc, [])
        if request.method == hdrs.METH_OPTIONS:
            return web.Response(headers=cors)
        try:
            response = await self._route(request)
        except EngineError as exc:
            return _error_response(exc, cors)
        if not isinstance(response, web.WebSocketResponse):
            response.headers.extend(cors)
        return response

    async def _route(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        transport = query.get("transport")
        if transport not in ("polling", "websocket"):
            raise EngineError(UNKNOWN_TRANSPORT, "Transport unknown")
        sid = query.get("sid")
        upgrade = request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
        if sid is None:
            if query.get("EIO") != "4":
                raise EngineError(UNSUPPORTED_PROTOCOL_VERSION, "Unsupported protocol version")
            if request.method != hdrs.METH_GET:
                raise EngineError(BAD_HANDSHAKE_METHOD, "Bad handshake method")
            if transport == "websocket" and not upgrade:
                raise EngineError(BAD_REQUEST, "Bad request")
            return await self._open(request, transport)
        sock = self.sockets.get(sid)
        if sock is None:
            last = self._last_polls.pop(sid, None)
            if last is not None and transport == "polling" and request.method == hdrs.METH_GET:
                return _payload_response(last)
            raise EngineError(UNKNOWN_SID, "Session ID unknown")
        if transport == "websocket":
            if not upgrade or request.method != hdrs.METH_GET:
                raise EngineError(BAD_REQUEST, "Bad request")
            return await self._accept_websocket(request, sock, upgrade=True)
        if sock.transport != "polling":
            raise EngineError(BAD_REQUEST, "Bad request")  # upgraded: no more HTTP requests
        if request.method == hdrs.METH_GET:
            try:
                return _payload_response(await sock.poll())
            except PollRefused:
                raise EngineError(BAD_REQUEST, "Bad request") from None
        if request.method == hdrs.METH_POST:
            return await self._post(request, sock)
        raise EngineError(BAD_HANDSHAKE_METHOD, "Bad request method")

    async def _open(self, request: web.Request, transport: str) -> web.StreamResponse:
        sock = await self._new_session(_environ(request), transport)
        if transport == "polling":
            return _payload_response(await sock.poll())
        return await self._accept_websocket(request, sock)

    async def _new_session(self, environ: dict[str, Any], transport: str) -> EngineSocket:
        """A session, accepted by the connect handler, its OPEN queued. `environ` is only
        a new session's: python-socketio keeps it."""
        sid = self.generate_id()
        sock = EngineSocket(self, sid)
        self.sockets[sid] = sock
        connect = self.handlers.get("connect")
        try:
            accepted = connect is None or await connect(sid, environ) is not False
        except BaseException:  # a failing handler, or the client left
            self.forget(sock)
            raise
        if not accepted:
            self.forget(sock)
            raise EngineError(FORBIDDEN, "Forbidden", status=403)
        # {"sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"}; the sid is
        # URL-safe base64, which needs no JSON escaping
        sock.send_text(f'{OPEN}{{"sid":"{sid}{self._open_tail[transport]}')
        self.heartbeat.schedule(sock)
        return sock

    def _frame_parsers(self) -> FrameParsers:
        if self._parsers is None:  # needs the running loop
            self._parsers = FrameParsers()
        return self._parsers

    async def _accept_websocket(
        self, request: web.Request, sock: EngineSocket, *, upgrade: bool = False
    ) -> web.StreamResponse:
        """aiohttp answers the handshake (compress=False: no per-message deflate, whatever
        the client offers, which also lets every recipient share one frame); then the
        connection is ours (`handover.take_over`)."""
        conn = WebSocketConnection(sock, self._frame_parsers(), self.max_http_buffer_size)
        # A second WebSocket for a session that has one (or is getting one) is accepted,
        # then closed at once, as the Node server does: it has no part in the session.
        spare = upgrade and not sock.start_upgrade(conn)
        response = DetachableWebSocketResponse(
            max_msg_size=self.max_http_buffer_size, compress=False
        )
        await response.prepare(request)
        if request.transport is None:  # the client left during the handshake
            if spare:
                pass
            elif upgrade:
                sock.websocket_lost(conn)
            else:
                sock.abandon()
            return response
        transport, head, tail = take_over(request, response, conn)
        conn.transport = transport
        if upgrade:
            if head:
                transport.write(head)
            if spare:
                conn.close(CLOSE_OK)
                return response
        else:
            sock.use_websocket(conn, head)
        if tail:
            conn.data_received(tail)
        return response

    # -- a new WebSocket session, before aiohttp -------------------------------------------

    def direct_handshake(
        self, head: RequestHead, transport: asyncio.Transport
    ) -> DirectHandshake | None:
        """What `open_directly` needs if `head` opens a new session on a WebSocket, as
        `handle_request` would accept it; else None, and the request goes to aiohttp and
        `handle_request`, which also gives every refusal its answer."""
        query = head.query
        if (
            head.path != self._path
            or query.get("transport") != "websocket"
            or query.get("EIO") != "4"
            or "sid" in query
        ):
            return None
        key = head.websocket_key()
        host = head.headers.get("host")
        if key is None or host is None:
            return None
        scheme = "https" if transport.get_extra_info("sslcontext") else "http"
        peer = transport.get_extra_info("peername")
        remote = str(peer[0]) if isinstance(peer, list | tuple) else ""
        environ = _environ_of(
            head.method, head.path, head.query_string, remote, scheme, head.headers
        )
        origin = head.headers.get("origin")
        if (
            origin is not None
            and self.cors_allowed_origins != []
            and not self._origin_allowed(origin, environ, f"{scheme}://{host}")
        ):
            return None
        return DirectHandshake(key, environ)

    async def open_directly(
        self, handshake: DirectHandshake, transport: asyncio.Transport, tail: bytes, headers: str
    ) -> int:
        """Open the session of `handshake` on `transport` (`tail` is what came after the
        handshake; reading is resumed if it was paused) and answer it, with `headers`
        (complete lines) in the answer; returns the answer's status. The same steps as
        `handle_request`'s for such a request, without aiohttp's request, middlewares and
        WebSocket response."""
        try:
            sock = await self._new_session(handshake.environ, "websocket")
        except EngineError as exc:
            body = json.dumps({"code": exc.code, "message": exc.message}).encode()
            transport.write(self._answers.refused(exc.status, body, headers))
            transport.close()
            return exc.status
        try:
            conn = WebSocketConnection(sock, self._frame_parsers(), self.max_http_buffer_size)
            conn.transport = transport
            transport.set_protocol(conn)
            transport.resume_reading()
            sock.use_websocket(conn, self._answers.switching_protocols(handshake.key, headers))
        except BaseException:
            sock.abandon()  # no session without its connection
            raise
        self.stats.opened_directly += 1
        if tail:
            conn.data_received(tail)
        return SWITCHING_PROTOCOLS

    async def _post(self, request: web.Request, sock: EngineSocket) -> web.StreamResponse:
        if (request.content_length or 0) > self.max_http_buffer_size:
            sock.protocol_error()
            raise EngineError(BAD_REQUEST, "Payload too large", status=413)
        body = bytearray()
        while chunk := await request.content.read(1 << 16):
            body += chunk
            if len(body) > self.max_http_buffer_size:  # a chunked body says no length
                sock.protocol_error()
                raise EngineError(BAD_REQUEST, "Payload too large", status=413)
        try:
            packets = decode_payload(body.decode())
        except (BadPacket, UnicodeDecodeError):
            sock.protocol_error()
            raise EngineError(BAD_REQUEST, "Bad request") from None
        await sock.post(packets)
        return web.Response(text="ok", content_type="text/html")

    def _cors_headers(self, request: web.Request) -> list[tuple[str, str]]:
        """CORS for the polling transport; an Origin that is not allowed is refused (for
        WebSocket above all, which browsers do not subject to CORS)."""
        allowed = self.cors_allowed_origins
        if allowed == []:  # CORS handling off altogether
            return []
        origin = request.headers.get(hdrs.ORIGIN)
        headers: list[tuple[str, str]] = []
        if origin is not None:
            own = f"{request.scheme}://{request.host}"
            if not self._origin_allowed(origin, _environ(request), own):
                raise EngineError(BAD_REQUEST, "Not an accepted origin")
            headers.append((hdrs.ACCESS_CONTROL_ALLOW_ORIGIN, origin))
        if request.method == hdrs.METH_OPTIONS:
            headers.append((hdrs.ACCESS_CONTROL_ALLOW_METHODS, "OPTIONS, GET, POST"))
            asked = request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_HEADERS)
            if asked:
                headers.append((hdrs.ACCESS_CONTROL_ALLOW_HEADERS, asked))
        if self.cors_credentials:
            headers.append((hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS, "true"))
        return headers

    def _origin_allowed(self, origin: str, environ: dict[str, Any], own: str) -> bool:
        """Whether `origin` may open or use a session; `own` is the server's origin as
        the request names it."""
        allowed = self.cors_allowed_origins
        if allowed is None:  # the page's own origin only
            return origin == own
        if callable(allowed):
            return bool(allowed(origin, environ))
        if isinstance(allowed, str):
            return allowed == "*" or origin == allowed
        return "*" in allowed or origin in allowed


def _error_response(exc: EngineError, cors: list[tuple[str, str]]) -> web.Response:
    body = json.dumps({"code": exc.code, "message": exc.message})
    return web.Response(status=exc.status, text=body, content_type="application/json", headers=cors)


def _payload_response(payload: str) -> web.Response:
    return web.Response(text=payload, content_type="text/plain", charset="utf-8")


# The request headers a session's environ keeps: what connect handlers need to place and
# check a client (its host, origin, and the proxies' forwarding headers). The rest of the
# handshake (cookies, user agent, the WebSocket keys ...) is not kept for the connection's
# lifetime: about 1 KB per connection (docs/benchmarks.md).
ENVIRON_HEADERS = {
    "host": "HTTP_HOST",
    "origin": "HTTP_ORIGIN",
    "forwarded": "HTTP_FORWARDED",
    "x-forwarded-for": "HTTP_X_FORWARDED_FOR",
    "x-forwarded-proto": "HTTP_X_FORWARDED_PROTO",
    "x-forwarded-host": "HTTP_X_FORWARDED_HOST",
}


def _environ(request: web.Request) -> dict[str, Any]:
    """`_environ_of` an aiohttp request (a repeated header's values joined by commas)."""
    fields = request.headers
    headers = {name: ",".join(fields.getall(name)) for name in ENVIRON_HEADERS if name in fields}
    remote = request.remote or ""
    return _environ_of(
        request.method, request.path, request.query_string, remote, request.scheme, headers
    )


def _environ_of(
    method: str, path: str, query: str, remote: str, scheme: str, headers: Mapping[str, str]
) -> dict[str, Any]:
    """The WSGI-style environ python-socketio hands to connect handlers, with the peer's
    address in REMOTE_ADDR and the headers of `ENVIRON_HEADERS` (`headers` has lower-case
    names). It outlives the request, so it holds none of aiohttp's objects."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "REMOTE_ADDR": remote,
        "wsgi.url_scheme": scheme,
    }
    for name, key in ENVIRON_HEADERS.items():
        value = headers.get(name)
        if value is not None:
            environ[key] = value
    return environ
