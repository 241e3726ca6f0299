// The realtime connection to one tenant's feed: connect, resume with `since`, publish.
// No DOM access here; the page listens to the events this object dispatches.
import { io } from '../vendor/socket.io.esm.min.js';

const ACK_TIMEOUT_MS = 10000;
const SERVER_KICK_RETRY_MS = 2000;
const MAX_KEPT_ARRIVALS = 200;
// A token is refreshed this long before its exp: 30 s, or a tenth of its lifetime if shorter.
const REFRESH_LEAD_MAX_MS = 30000;
const REFRESH_LEAD_SHARE = 0.1;
const MAX_TIMER_MS = 2 ** 31 - 1; // setTimeout fires at once for longer delays

/**
 * Connection states shown by the page:
 * connecting (first attempt), live, reconnecting (lost, retrying), offline (not trying).
 */
export class FeedClient extends EventTarget {
  #socket = null;
  #credentials = null; // {tenant} or {token}: what every handshake sends
  #tokenProvider = null; // async () => token, asked for each later handshake and each refresh
  #tokenExpiry = null; // {expiresAt, obtainedAt} (epoch ms) of the connection's token
  #refreshTimer = null;
  #connections = 0; // counts connects, so a refresh answered after a reconnect is ignored
  #handshakes = 0;
  #state = 'offline';
  #everConnected = false;
  #cursor = null; // highest seq received from the stream; sent as `since` on reconnect
  #sentSince = null; // the `since` of the handshake in progress
  #head = null; // latestSeq from the last connection_established
  #replay = null; // {upTo, added} while a natively recovered socket gets its missed events
  #seen = new Set();
  #awaitingDelivery = new Map(); // seq -> performance.now() at emit, for own posts
  #arrivals = new Map(); // seq -> performance.now() at event_created, while posts are in flight
  #inFlight = 0;
  #kickTimer = null;
  lastAuth = null; // the last handshake auth payload, for tests and debugging

  get socket() { return this.#socket; }
  get state() { return this.#state; }
  get cursor() { return this.#cursor; }
  get connected() { return Boolean(this.#socket?.connected); }

  /**
   * Connect with {tenant}, {token}, or {tokenProvider: async () => token} (with an optional
   * first {token}); drops any previous connection and its history. With a provider the token
   * is refreshed on the open socket before it expires, and each reconnect asks for a new one.
   */
  connect({ tokenProvider = null, ...credentials }) {
    this.disconnect();
    this.#credentials = credentials;
    this.#tokenProvider = tokenProvider;
    this.#handshakes = 0;
    this.#everConnected = false;
    this.#resetHistory();
    this.#setState('connecting');
    const socket = io({
      forceNew: true,
      auth: (send) => this.#handshakeAuth().then((auth) => { if (this.#socket === socket) send(auth); }),
    });
    this.#socket = socket;
    this.#listen(socket);
  }

  disconnect() {
    clearTimeout(this.#kickTimer);
    clearTimeout(this.#refreshTimer);
    if (!this.#socket) return;
    this.#socket.removeAllListeners();
    this.#socket.disconnect();
    this.#socket = null;
    this.#setState('offline');
  }

  /** Try again now (used when the browser comes back online). */
  retry() {
    if (this.#socket && !this.#socket.connected && !this.#socket.active) this.#socket.connect();
  }

  /**
   * Send create_event. Resolves with the server's ack, or {ok:false, error} when the
   * socket is not connected or no answer comes; never falls back to REST.
   */
  publish(message) {
    const socket = this.#socket;
    if (!socket?.connected) {
      return Promise.resolve(failure('offline', 'You are offline: the message was not sent.'));
    }
    const sentAt = performance.now();
    this.#inFlight += 1;
    return new Promise((resolve) => {
      socket.timeout(ACK_TIMEOUT_MS).emit('create_event', { message }, (timedOut, reply) => {
        this.#inFlight -= 1;
        if (timedOut) {
          resolve(failure('timeout', 'No answer from the server; the message may not have been sent.'));
          return;
        }
        if (!reply || reply.ok !== true || !reply.event) {
          resolve(failure(reply?.error?.code ?? 'error', reply?.error?.message ?? 'The server refused the message.', reply?.error));
          return;
        }
        this.#trackDelivery(reply.event.seq, sentAt);
        // Shown at once even if this socket's event_created is late; the stream stays
        // the only thing that moves the cursor, so nothing before it can be skipped.
        this.#add([reply.event], 'ack');
        resolve(reply);
      });
    });
  }

  async #handshakeAuth() {
    const auth = { ...this.#credentials };
    this.#handshakes += 1;
    if (this.#tokenProvider && (this.#handshakes > 1 || !auth.token)) {
      // A refused or missing token is answered by the server (connect_error), and said so.
      auth.token = await this.#provideToken().catch(() => undefined);
    }
    this.#tokenExpiry = auth.token ? { expiresAt: jwtExpiry(auth.token), obtainedAt: Date.now() } : null;
    if (this.#cursor !== null) auth.since = this.#cursor;
    this.#sentSince = this.#cursor;
    this.lastAuth = auth;
    return auth;
  }

  #listen(socket) {
    socket.on('connect', () => {
      this.#everConnected = true;
      this.#connections += 1;
      this.#scheduleRefresh();
      this.#setState('live');
    });
    socket.on('disconnect', (reason) => {
      clearTimeout(this.#refreshTimer);
      this.#onDisconnect(socket, reason);
    });
    socket.on('connect_error', (err) => this.#onConnectError(socket, err));
    socket.on('connection_established', (info) => this.#onEstablished(socket, info));
    socket.on('initial_events', (events) => this.#onInitialEvents(events));
    socket.on('event_created', (event) => this.#onEventCreated(event));
    socket.on('system_message', (msg) => this.#dispatch('system', msg));
  }

  async #provideToken() {
    const token = await this.#tokenProvider();
    if (typeof token !== 'string' || !token) throw new Error('The token provider gave no token.');
    return token;
  }

  /** Arm the refresh of the connection's token, if there is a provider and a known exp. */
  #scheduleRefresh() {
    clearTimeout(this.#refreshTimer);
    if (!this.#tokenProvider || !Number.isFinite(this.#tokenExpiry?.expiresAt)) return;
    const { expiresAt, obtainedAt } = this.#tokenExpiry;
    const lead = Math.min(REFRESH_LEAD_MAX_MS, (expiresAt - obtainedAt) * REFRESH_LEAD_SHARE);
    const delay = Math.max(0, expiresAt - lead - Date.now());
    if (delay > MAX_TIMER_MS) {
      this.#refreshTimer = setTimeout(() => this.#scheduleRefresh(), MAX_TIMER_MS);
      return;
    }
    this.#refreshTimer = setTimeout(() => this.#refresh(), delay);
  }

  /** `refresh_token` with a new token from the provider; the socket stays connected. */
  async #refresh() {
    const socket = this.#socket;
    const connection = this.#connections;
    const current = () => socket === this.#socket && connection === this.#connections && socket.connected;
    let token;
    try {
      token = await this.#provideToken();
    } catch (err) {
      if (current()) this.#dispatch('refresh-failed', { code: 'token_unavailable', message: err?.message || 'No new token.' });
      return;
    }
    if (!current()) return; // the reconnect asks the provider itself
    const obtainedAt = Date.now();
    socket.timeout(ACK_TIMEOUT_MS).emit('refresh_token', { token }, (timedOut, reply) => {
      if (!current()) return;
      if (timedOut || reply?.ok !== true) {
        // The socket stays until its current token expires; the reconnect then asks again.
        const error = timedOut ? { code: 'timeout', message: 'No answer from the server.' } : reply?.error;
        this.#dispatch('refresh-failed', { code: error?.code ?? 'error', message: error?.message ?? 'The token was refused.' });
        return;
      }
      this.#tokenExpiry = { expiresAt: reply.expiresAt, obtainedAt };
      this.#scheduleRefresh();
    });
  }

  #onDisconnect(socket, reason) {
    if (reason === 'io client disconnect') {
      this.#setState('offline');
      return;
    }
    this.#setState('reconnecting');
    // A server-side disconnect is not retried by socket.io itself; we still want to be live.
    if (reason === 'io server disconnect') {
      this.#kickTimer = setTimeout(() => socket.connect(), SERVER_KICK_RETRY_MS);
    }
  }

  #onConnectError(socket, err) {
    if (socket.active) {
      // Transport problem: socket.io keeps retrying with backoff.
      this.#setState(this.#everConnected ? 'reconnecting' : 'connecting');
      return;
    }
    // Refused by the server (unknown tenant, bad token): retrying would not help.
    this.#setState('offline');
    const data = err?.data && typeof err.data === 'object' ? err.data : {};
    this.#dispatch('refused', { code: data.code ?? 'refused', message: data.message ?? err?.message ?? 'Connection refused.' });
  }

  #onEstablished(socket, info) {
    this.#head = Number.isInteger(info?.latestSeq) ? info.latestSeq : null;
    this.#dispatch('established', info);
    if (this.#cursor !== null && this.#head !== null && this.#head < this.#cursor) {
      // The server's history went backwards (e.g. an in-memory store restarted):
      // our seqs mean nothing any more, so start again from a clean slate.
      this.#resetHistory();
      this.#dispatch('reset', {});
      socket.disconnect().connect();
      return;
    }
    if (this.#sentSince !== null && info?.recovered === false) {
      this.#dispatch('gap', { since: this.#sentSince, latestSeq: this.#head });
    }
    if (this.#sentSince !== null && socket.recovered) {
      // socket.io's own recovery: the missed events follow as event_created, not initial_events.
      this.#replay = { upTo: this.#head ?? this.#sentSince, added: 0 };
      this.#endReplayIfDone();
    }
  }

  #onInitialEvents(events) {
    this.#replay = null;
    const list = Array.isArray(events) ? events : [];
    const added = this.#add(list, 'initial');
    const highest = list.reduce((max, e) => Math.max(max, e.seq), this.#cursor ?? 0);
    this.#cursor = Math.max(highest, this.#head ?? 0);
    if (this.#sentSince !== null) this.#dispatch('resynced', { since: this.#sentSince, added: added.length });
    this.#sentSince = null;
  }

  #onEventCreated(event) {
    if (!event || !Number.isInteger(event.seq)) return;
    this.#noteArrival(event.seq);
    const added = this.#add([event], 'live');
    this.#cursor = Math.max(this.#cursor ?? 0, event.seq);
    if (this.#replay) {
      this.#replay.added += added.length;
      this.#endReplayIfDone();
    }
  }

  #endReplayIfDone() {
    if ((this.#cursor ?? 0) < this.#replay.upTo) return;
    this.#dispatch('resynced', { since: this.#sentSince, added: this.#replay.added });
    this.#replay = null;
    this.#sentSince = null;
  }

  #add(events, source) {
    const fresh = events.filter((e) => e && Number.isInteger(e.seq) && !this.#seen.has(e.seq));
    for (const e of fresh) this.#seen.add(e.seq);
    if (fresh.length) this.#dispatch('events', { events: fresh, source });
    return fresh;
  }

  #trackDelivery(seq, sentAt) {
    const arrivedAt = this.#arrivals.get(seq);
    if (arrivedAt === undefined) {
      this.#awaitingDelivery.set(seq, sentAt);
      return;
    }
    this.#arrivals.delete(seq);
    this.#dispatch('delivered', { seq, latencyMs: arrivedAt - sentAt });
  }

  #noteArrival(seq) {
    const now = performance.now();
    const sentAt = this.#awaitingDelivery.get(seq);
    if (sentAt !== undefined) {
      this.#awaitingDelivery.delete(seq);
      this.#dispatch('delivered', { seq, latencyMs: now - sentAt });
      return;
    }
    // The broadcast can beat the ack; remember it until the ack names the seq.
    if (this.#inFlight > 0) {
      this.#arrivals.set(seq, now);
      if (this.#arrivals.size > MAX_KEPT_ARRIVALS) this.#arrivals.delete(this.#arrivals.keys().next().value);
    }
  }

  #resetHistory() {
    this.#cursor = null;
    this.#sentSince = null;
    this.#head = null;
    this.#replay = null;
    this.#seen.clear();
    this.#awaitingDelivery.clear();
    this.#arrivals.clear();
  }

  #setState(state) {
    if (state === this.#state) return;
    this.#state = state;
    this.#dispatch('state', { state });
  }

  #dispatch(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/** A JWT's `exp` in epoch ms, read without verifying (the server verifies); null if unreadable. */
function jwtExpiry(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const bytes = Uint8Array.from(atob(part), (c) => c.charCodeAt(0));
    const { exp } = JSON.parse(new TextDecoder().decode(bytes));
    return Number.isFinite(exp) ? exp * 1000 : null;
  } catch {
    return null;
  }
}

function failure(code, message, error = {}) {
  return { ok: false, error: { ...error, code, message } };
}
