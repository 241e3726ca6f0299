"""Socket.IO transport: handshake -> core -> emit. One room per tenant.

A connecting socket is first *syncing*: it is not yet in its tenant's room, and live events
for its tenant are parked in its session. Once its catch-up (`initial_events`) is sent, the
parked events that the catch-up did not cover follow, and only then does it join the room.
So every subscriber sees each event once, in seq order, whichever store is behind.

A reconnect of the socket.io JS client with `{pid, offset}` in its auth is resumed as
socket.io's native connection state recovery (see `recovery`): same pid, and the missed
events as `event_created` instead of `initial_events`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import socketio
from aiohttp import web
from socketio import packet as sio_packet

from .addresses import ClientAddresses
from .auth import Authenticator, Principal
from .broadcast import RoomBroadcaster, encode_event_text
from .config import Settings
from .core import CREDENTIALS_REVOKED, CatchUp, Feed, SystemNotice, system_notice
from .engineio import EngineServer, EngineStats
from .errors import (
    FeedError,
    Forbidden,
    ForbiddenTenant,
    InternalError,
    PayloadTooLarge,
    RateLimited,
    ShuttingDown,
    Unauthorized,
    ValidationFailed,
)
from .events import Event
from .jsoncodec import SocketJson
from .logs import ThrottledWarning
from .metrics import FeedMetrics
from .packets import MalformedPacket, StrictPacket
from .quotas import ConnectionCaps, RequestLimiter
from .recovery import ConnectionRecovery, Resume
from .schemas import MAX_SEQ, parse_refresh_token
from .socketio_internals import IndexedManager, SocketServer, check_internals

log = logging.getLogger(__name__)

SOCKETIO_PATH = "socket.io"
# The Node original's Engine.IO `maxPayload` (its clients see it in the OPEN packet): a
# larger create_event is answered by the message rules, as in the original, not dropped.
MAX_PACKET_BYTES = 1_000_000
SHUTDOWN_NOTICE = "server shutting down"


class GatewayServer(SocketServer):
    """The Socket.IO server, on feedserver's engine (`socketio_internals`)."""

    def emit_to(self, sid: str, event: str, data: Any) -> None:
        """`emit(event, data, to=sid)` in the default namespace, without the task that
        socketio's manager starts per recipient: the packet is queued when this returns, so
        a socket's connect sequence (CONNECT reply, `connection_established`, its catch-up)
        leaves in one write. `data`: one JSON argument, or a tuple of it and its offset
        (never binary: the packet is written as JSON text, by the one EVENT encoder)."""
        eio_sid = self.manager.eio_sid_from_sid(sid, "/")
        if eio_sid is None:  # it has left
            return
        args = data if isinstance(data, tuple) else (data,)
        self.eio.send_now(eio_sid, encode_event_text(event, SocketJson.dumps(args[0]), *args[1:]))


@dataclass(slots=True, eq=False)
class Session:
    tenant: str
    address: str
    # Whether this socket's events carry offsets (`parse_offsets`), and so its room.
    recovery: ConnectionRecovery
    room: str
    # Who authenticated the socket: the handshake's principal, then each refresh's.
    principal: Principal
    # Disconnects the socket when its token expires; cancelled when it leaves first, moved
    # by a `refresh_token`.
    expiry: asyncio.TimerHandle | None = None
    # Events that arrived while the socket was syncing; None once it is in its room.
    pending: list[Event] | None = field(default_factory=list)
    # Counted in the bus's interest in its tenant (`Feed.join`): to leave when it goes.
    joined: bool = False


class RealtimeGateway:
    def __init__(
        self,
        settings: Settings,
        feed: Feed,
        authenticator: Authenticator,
        requests: RequestLimiter,
        addresses: ClientAddresses,
        caps: ConnectionCaps,
        metrics: FeedMetrics,
        engine_stats: EngineStats,
        *,
        eager_packets: bool = False,
    ) -> None:
        self.feed = feed
        self.authenticator = authenticator
        self.requests = requests
        self.addresses = addresses
        self.caps = caps
        self.metrics = metrics
        self._origins = frozenset(settings.cors_origins)
        self._max_payload_bytes = settings.max_body_bytes
        self.recovery = ConnectionRecovery(feed.store, enabled=settings.connection_state_recovery)
        self._no_offsets = ConnectionRecovery(feed.store, enabled=False)
        check_internals()
        self.sio = GatewayServer(
            async_mode="aiohttp",
            # The index keeps a disconnect from scanning every socket's room (socketio_internals).
            client_manager=IndexedManager(),
            cors_allowed_origins=self._origin_allowed,
            json=SocketJson,
            ping_interval=settings.ping_interval,
            ping_timeout=settings.ping_timeout,
            max_http_buffer_size=MAX_PACKET_BYTES,
            serializer=StrictPacket,
            http_compression=False,
            logger=False,
            engineio_logger=False,
            # the engine's own (feedserver.engineio): slow readers, paced writes
            max_queue=settings.max_queue,
            max_write_pause=settings.max_write_pause_ms / 1000,
            stats=engine_stats,
            # With the in-process backend a CONNECT is handled in the callback that read
            # it, with no task (~5 % of a connect): nothing on its path waits for I/O.
            eager_packets=eager_packets,
        )
        self.engine: EngineServer = self.sio.eio
        self.broadcaster = RoomBroadcaster(self.sio.manager, self.engine)
        self._sessions: dict[str, Session] = {}
        self._syncing: dict[str, set[Session]] = {}
        # Accepted connects' catch-ups, by Engine.IO sid, until their CONNECT reply is queued.
        self._catch_ups: dict[str, tuple[str, Session, CatchUp, bool]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._warn_malformed = ThrottledWarning(log)
        # Every Socket.IO packet passes `_on_engine_message` on its way to socketio.
        self._dispatch_message = self.engine.handlers["message"]
        self.engine.on("message", self._on_engine_message)
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        self.sio.on("create_event", self._on_create_event)
        self.sio.on("refresh_token", self._on_refresh_token)
        feed.add_listener(self.deliver)
        feed.add_notice_listener(self.send_system_message)

    def attach(self, app: web.Application) -> None:
        self.sio.attach(app, socketio_path=SOCKETIO_PATH)

    def _origin_allowed(self, origin: str | None, environ: Mapping[str, Any]) -> bool:
        """CORS_ORIGIN, plus the page's own origin; no Origin header means no browser."""
        if origin is None or "*" in self._origins or origin in self._origins:
            return True
        host = environ.get("HTTP_HOST")
        return host is not None and origin in (f"http://{host}", f"https://{host}")

    # -- connection life cycle ------------------------------------------------------------

    async def _on_engine_message(self, eio_sid: str, data: Any) -> None:
        """A client's Socket.IO packet, decoded strictly (`packets.StrictPacket`): one that
        is refused reaches no handler and ends the connection, as the Node server does; a
        refused CONNECT is answered with `connect_error` first."""
        try:
            await self._dispatch_message(eio_sid, data)
        except ValueError as exc:  # MalformedPacket, or what socketio finds after decoding
            # (a binary attachment nobody announced, a binary packet before CONNECT)
            self._warn_malformed("closing a connection that sent a malformed packet: %s", exc)
            if isinstance(exc, MalformedPacket) and exc.kind == sio_packet.CONNECT:
                refused = ValidationFailed(f"Invalid CONNECT packet: {exc.reason}")
                reply = self.sio.packet_class(
                    sio_packet.CONNECT_ERROR,
                    data=refusal(refused).error_args,  # as socketio answers a refusal
                    namespace=exc.namespace,
                )
                await self.engine.send(eio_sid, reply.encode())
            self._spawn(self.engine.disconnect(eio_sid))
        finally:
            # A CONNECT that `_on_connect` accepted: socketio has queued its reply, and its
            # catch-up follows at once, so that the two leave in one write.
            if self._catch_ups:
                accepted = self._catch_ups.pop(eio_sid, None)
                if accepted is not None:
                    self._sync(*accepted)

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any) -> None:
        handshake = auth if isinstance(auth, dict) else {}
        query = dict(parse_qsl(environ.get("QUERY_STRING", "")))
        # REMOTE_ADDR is the peer's address (feedserver.engineio's environ).
        address = self.addresses.resolve(
            environ["REMOTE_ADDR"], environ.get("HTTP_X_FORWARDED_FOR")
        )
        try:
            principal = self.authenticator.from_handshake(handshake, query)
            tenant = principal.require_tenant()
            since = parse_since(handshake.get("since", query.get("since")))
            offsets = parse_offsets(handshake.get("offsets", query.get("offsets")))
            await self.caps.admit(tenant, address)
        except FeedError as exc:
            raise refusal(exc) from None
        if offsets and self.recovery.enabled:
            session = Session(tenant, address, self.recovery, tenant, principal)
        else:
            session = Session(tenant, address, self._no_offsets, plain_room(tenant), principal)
        # Registered before the awaits below: a client that leaves meanwhile is counted
        # out by `_on_disconnect` like any other, or its connection would count forever.
        self._sessions[sid] = session
        self.metrics.connection_opened(tenant)
        # Its key may have been revoked while `admit` awaited Redis: the revocation's sweep
        # (`disconnect_revoked`) did not see this session then, and sees it from here on.
        if not self.authenticator.stands(principal):
            await self._on_disconnect(sid)
            raise refusal(Unauthorized("Token key revoked or cut off")) from None
        try:
            reconnect = await session.recovery.read(handshake)
            resume = reconnect.resume
            # Read before the CONNECT reply: its pid says whether the client is recovered.
            catch_up = await self._catch_up(session, since, resume)
        except FeedError as exc:
            await self._on_disconnect(sid)
            raise refusal(exc) from None
        if self._sessions.get(sid) is not session:  # it left while its catch-up was read
            self._stop_syncing(session)
            return
        replay = resume is not None and catch_up.recovered
        pid = resume.pid if resume is not None and replay else reconnect.new_pid
        self._arm_expiry(sid, session)
        # The CONNECT reply is queued after this handler returns (nothing in between
        # awaits); the catch-up must follow it, and does, from `_on_engine_message`. A
        # call, not a task: every send is queued at once, so nothing can come in between.
        self._catch_ups[self.sio.manager.eio_sid_from_sid(sid, "/")] = (
            sid,
            session,
            catch_up,
            replay,
        )
        if session.recovery.enabled:
            self.sio.grant_pid(sid, pid)

    async def _catch_up(
        self, session: Session, since: int | None, resume: Resume | None
    ) -> CatchUp:
        """The session's catch-up; live events are parked from before it is read, and
        the node follows the tenant before it is read (`EventBus.join`)."""
        self._syncing.setdefault(session.tenant, set()).add(session)
        try:
            # Refused before it counts: an unknown tenant is never followed.
            self.feed.tenants.active(session.tenant)
            session.joined = True  # `join` counts it in before it awaits anything
            await self.feed.join(session.tenant)
            if resume is not None:
                return await self.feed.recover(session.tenant, resume.offset)
            return await self.feed.catch_up(session.tenant, since)
        except BaseException:
            self._stop_syncing(session)
            raise

    def _sync(self, sid: str, session: Session, catch_up: CatchUp, replay: bool) -> None:
        self._send_catch_up(sid, session, catch_up, replay)
        sent_up_to = max([catch_up.latest_seq] + [e.seq for e in catch_up.events[-1:]])
        while session.pending:
            batch, session.pending = session.pending, []
            for event in batch:
                if event.seq > sent_up_to:
                    self._send_event(sid, session, event)
                    sent_up_to = event.seq
        self._stop_syncing(session)
        if self._sessions.get(sid) is session:
            self.sio.manager.basic_enter_room(sid, "/", session.room)

    def _send_catch_up(self, sid: str, session: Session, catch_up: CatchUp, replay: bool) -> None:
        """`connection_established`, then the missed events: replayed one by one as
        `event_created` to a natively recovered socket (an `initial_events` would make a
        client that resets its list on it drop what it holds), else `initial_events`."""
        self.sio.emit_to(
            sid,
            "connection_established",
            {
                "tenantId": session.tenant,
                "socketId": sid,
                "timestamp": self.feed.clock.timestamp(),  # the feed's, as its events'
                "recovered": catch_up.recovered,
                "latestSeq": catch_up.latest_seq,
            },
        )
        if not replay:
            initial = session.recovery.initial_args(catch_up)
            self.sio.emit_to(sid, "initial_events", initial)
            return
        for event in catch_up.events:
            self._send_event(sid, session, event)

    def _send_event(self, sid: str, session: Session, event: Event) -> None:
        self.sio.emit_to(sid, "event_created", session.recovery.event_args(event))

    def _stop_syncing(self, session: Session) -> None:
        session.pending = None
        syncing = self._syncing.get(session.tenant)
        if syncing is not None:
            syncing.discard(session)
            if not syncing:
                del self._syncing[session.tenant]

    async def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        session = self._sessions.pop(sid, None)
        if session is None:
            return
        self._stop_syncing(session)
        if session.joined:
            self.feed.leave(session.tenant)
        if session.expiry is not None:
            session.expiry.cancel()
        self.caps.release(session.tenant, session.address)
        self.metrics.connection_closed(session.tenant)

    def _arm_expiry(self, sid: str, session: Session) -> None:
        """Disconnect the socket when its principal's token expires (replacing the timer of
        the token before it)."""
        if session.expiry is not None:
            session.expiry.cancel()
            session.expiry = None
        expires_at = session.principal.expires_at
        if expires_at is not None:
            session.expiry = asyncio.get_running_loop().call_later(
                expires_at - time.time(), self._expire, sid
            )

    def _expire(self, sid: str) -> None:
        log.info("token expired: disconnecting a socket")
        self._spawn(self.sio.disconnect(sid))

    # -- events ---------------------------------------------------------------------------

    async def _on_create_event(self, sid: str, *args: Any) -> dict[str, Any]:
        session = self._sessions.get(sid)
        if session is None:
            return ack_error(InternalError("Not connected"))
        try:
            await self._count_request(session)
            published = await self.feed.publish(session.tenant, self._payload(args))
        except FeedError as exc:
            return ack_error(exc)
        except Exception:
            log.exception("create_event failed")
            return ack_error(InternalError())
        if published.replayed:
            return {"ok": True, "event": published.event.to_json(), "replayed": True}
        return {"ok": True, "event": published.event.to_json()}

    async def _count_request(self, session: Session) -> None:
        """One request of the client address's budget, shared with REST (`RateLimited`
        over it)."""
        quota = await self.requests.hit(session.address)
        if not quota.allowed:
            self.metrics.refused_by_rate_limit("socket")
            raise RateLimited(quota.reset_after)

    async def _on_refresh_token(self, sid: str, *args: Any) -> dict[str, Any]:
        """A later token for the same socket: its expiry moves to the new `exp`, without a
        disconnect; a refused one changes nothing (the socket still goes at the old `exp`)."""
        session = self._sessions.get(sid)
        if session is None:
            return ack_error(InternalError("Not connected"))
        try:
            await self._count_request(session)  # a refresh is a token guess too
            principal = self._refreshed_principal(session, args)
        except FeedError as exc:
            return ack_error(exc)
        except Exception:
            log.exception("refresh_token failed")
            return ack_error(InternalError())
        if self._sessions.get(sid) is not session:  # it left while the limit was counted
            return ack_error(InternalError("Not connected"))
        session.principal = principal
        self._arm_expiry(sid, session)
        assert principal.expires_at is not None  # tokens without `exp` are refused
        return {"ok": True, "expiresAt": round(principal.expires_at * 1000)}

    def _refreshed_principal(self, session: Session, args: tuple[Any, ...]) -> Principal:
        """The principal of a `refresh_token` payload, if it may take the session's place:
        the same tenant, and no role the session's token did not have."""
        if session.principal.expires_at is None:  # FEED_AUTH=none: nothing expires
            raise ValidationFailed(
                "This connection has no token to refresh",
                {"token": "this server does not use tokens"},
            )
        if len(args) > 1:
            raise ValidationFailed(
                "refresh_token takes one argument", {"payload": "pass one {token} object"}
            )
        token = parse_refresh_token(args[0] if args else None)
        principal = self.authenticator.from_handshake({"token": token}, {})
        if principal.tenant != session.tenant:
            raise ForbiddenTenant("The token is for another tenant than this connection")
        if principal.admin and not session.principal.admin:
            raise Forbidden("The token has a role this connection's token did not have")
        return principal

    def _payload(self, args: tuple[Any, ...]) -> Any:
        """The one `{message}` argument of `create_event`, within the REST body limit."""
        if len(args) > 1:
            raise ValidationFailed(
                "create_event takes one argument", {"payload": "pass one {message} object"}
            )
        payload = args[0] if args else None
        try:
            size = len(SocketJson.dumps(payload))
        except TypeError:  # binary data (a Buffer): the feed takes text, as the Node original
            raise ValidationFailed("Invalid message", {"message": "must be a string"}) from None
        if size > self._max_payload_bytes:
            raise PayloadTooLarge(f"The payload exceeds {self._max_payload_bytes} bytes")
        return payload

    async def deliver(self, event: Event) -> None:
        """Feed listener: send one new event to its tenant's subscribers on this node.

        The bus of every node that has a socket of the tenant calls this for each of its
        events (see `cluster`), so the emit is local.
        """
        started = time.perf_counter()
        parked = 0
        for session in self._syncing.get(event.tenant_id, ()):
            if session.pending is not None:
                session.pending.append(event)
                parked += 1
        in_room = 0
        data = None
        for room, recovery in (
            (event.tenant_id, self.recovery),
            (plain_room(event.tenant_id), self._no_offsets),
        ):
            if self.broadcaster.has_recipients(room):
                data = data or SocketJson.dumps(event.to_json())
                in_room += self.broadcaster.broadcast(
                    room, "event_created", data, offset=recovery.offset(event)
                )
        self.metrics.delivered(event.tenant_id, in_room + parked, time.perf_counter() - started)

    async def send_system_message(self, notice: SystemNotice) -> None:
        """Feed notice listener: send `system_message` to every socket of this node, on
        the one write path of every broadcast (the bus brings each node its notices)."""
        self.broadcaster.broadcast(None, "system_message", SocketJson.dumps(notice))

    async def disconnect_tenant(self, tenant: str, notice: SystemNotice) -> int:
        """Send `notice` to every socket of `tenant` on this node, then disconnect each one
        (the tenant was deleted). How many went."""
        return await self._disconnect(
            notice, [sid for sid, session in self._sessions.items() if session.tenant == tenant]
        )

    async def disconnect_revoked(self, tenant: str) -> int:
        """Tell, then disconnect, this node's sockets of `tenant` whose credentials no longer
        stand (a key revoked, a cut-off, the operator key turned off). How many went."""
        sids = [
            sid
            for sid, session in self._sessions.items()
            if session.tenant == tenant and not self.authenticator.stands(session.principal)
        ]
        gone = await self._disconnect(system_notice(CREDENTIALS_REVOKED, "warning"), sids)
        if gone:
            log.info("disconnected %d socket(s) of tenant %s: credentials revoked", gone, tenant)
        return gone

    async def _disconnect(self, notice: SystemNotice, sids: list[str]) -> int:
        """The notice, then a Socket.IO DISCONNECT, so that clients do not reconnect. Each
        socket by its sid, not by room: one still syncing is in no room yet."""
        for sid in sids:
            self.sio.emit_to(sid, "system_message", notice)
        for sid in sids:
            await self.sio.disconnect(sid)
        return len(sids)

    async def close(self, grace: float = 0.0) -> None:
        """Tell every client the server is going, and close its connection once the notice
        has left (at most `grace` seconds). Only the first call does anything.

        The transports are closed, not the Socket.IO sessions (as the Node original's
        `io.close()` does): a socket.io client reconnects by itself after a transport close,
        to this node restarted or to another, and recovers what it missed (`recovery`);
        a Socket.IO DISCONNECT would tell it to stay away.
        """
        if self._closed:
            return
        self._closed = True
        # Only this node is going: the notice goes to its own sockets, not on the bus.
        notice = system_notice(SHUTDOWN_NOTICE, "warning")
        self.broadcaster.broadcast(None, "system_message", SocketJson.dumps(notice))
        await self.engine.close_transports(within=grace)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.sio.shutdown()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def refuse_new_sessions(shutting_down: asyncio.Event) -> Callable[[web.Request], None]:
    """A guard (see `api.error_middleware`): while the server shuts down, a new Engine.IO
    session (no `sid` yet) gets a 503.

    The listener stays open during the goodbye (a long-polling client needs new requests to
    get it), and clients whose transport was closed reconnect meanwhile. A failed handshake
    is a transport error, which socket.io clients retry until another node (or this one,
    restarted) answers; a Socket.IO `connect_error` would make them give up.
    """
    path = f"/{SOCKETIO_PATH}/"

    def refuse(request: web.Request) -> None:
        if shutting_down.is_set() and request.path == path and "sid" not in request.query:
            raise ShuttingDown()

    return refuse


def parse_since(raw: object) -> int | None:
    """`since` from the handshake: absent, or a non-negative integer (number or digits)."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise ValidationFailed("Invalid since", {"since": "must be a non-negative integer"})
    try:
        value = int(raw)
    except ValueError:
        raise ValidationFailed(
            "Invalid since", {"since": "must be a non-negative integer"}
        ) from None
    if not 0 <= value <= MAX_SEQ:
        raise ValidationFailed("Invalid since", {"since": "must be a non-negative integer"})
    return value


def plain_room(tenant: str) -> str:
    """The room of a tenant's sockets whose events carry no offset (`parse_offsets`); no
    tenant id has a space, so it is never a tenant's own room."""
    return f"{tenant} plain"


def parse_offsets(raw: object) -> bool:
    """`offsets` from the handshake: whether events end with their offset (the default).

    socket.io JS clients ignore the extra argument; a python-socketio client written for
    the Node original, whose handlers take one argument, connects with `offsets: false`
    (auth) or `?offsets=false` and gets the original's packets unchanged (and no native
    recovery, which needs the offsets)."""
    if raw is None or raw is True or raw in ("true", "1"):
        return True
    if raw is False or raw in ("false", "0"):
        return False
    raise ValidationFailed("Invalid offsets", {"offsets": "must be true or false"})


def refusal(exc: FeedError) -> socketio.exceptions.ConnectionRefusedError:
    """The one mapping of a refusal to `connect_error` (`err.data` is `{code, message}`)."""
    return socketio.exceptions.ConnectionRefusedError(exc.message, exc.to_json())


def ack_error(exc: FeedError) -> dict[str, Any]:
    """The one mapping of a refusal to the `create_event` acknowledgement shape."""
    return {"ok": False, "error": exc.to_json()}
