// Many socket.io-client@4 sockets in one node process, for the delivery tests
// (tests/js_swarm.py). Each socket reconnects by itself (socket.io's defaults, with short
// delays) and keeps the list an application would show: `initial_events` replaces it,
// every `event_created` is appended. No recovery code of its own: socket.io-client's
// connection state recovery does the rest.
//
//   node swarm.mjs '{"urls": ["http://127.0.0.1:PORT", ...], "count": N, "options": {...}}'
//
// Socket i connects to urls[i % urls.length]. stdout, one JSON object per line:
//   {"type": "connect", "client", "recovered", "connects"}
//   {"type": "connect_error", "client", "message", "data"}
//   {"type": "disconnect", "client", "reason"}
//   {"type": "established", "client", "data"}             connection_established
//   {"type": "initial", "client", "seqs", "offset"}         initial_events (seqs, trailing arg)
//   {"type": "event", "client", "seq", "offset"}            event_created, with "verbose": true
//   {"type": "system", "client", "message", "level"}        system_message
//   {"type": "report", "clients": [{client, held, last, connects, recovered, badOffsets, connected}]}
// stdin, one JSON command per line:
//   {"op": "drop", "client", "url"?}   close the transport of a connected socket (socket.io
//                                      reconnects); with "url", the reconnect goes there
//   {"op": "report", "held"?: false}   every socket's state; without its list when held is false
//   {"op": "exit"}
import { io } from "socket.io-client";
import { print, runCommands } from "./commands.mjs";

const spec = JSON.parse(process.argv[2] ?? "{}");

const clients = Array.from({ length: spec.count ?? 1 }, (_, index) => {
  const state = { held: [], connects: 0, recovered: 0, badOffsets: 0 };
  const url = spec.urls[index % spec.urls.length];
  const socket = io(url, {
    forceNew: true,
    reconnectionDelay: 50,
    reconnectionDelayMax: 250,
    ...spec.options,
  });
  state.socket = socket;
  socket.on("connect", () => {
    state.connects += 1;
    if (socket.recovered) state.recovered += 1;
    print({ type: "connect", client: index, recovered: Boolean(socket.recovered), connects: state.connects });
  });
  socket.on("connect_error", (err) =>
    print({ type: "connect_error", client: index, message: err.message, data: err.data ?? null }),
  );
  socket.on("disconnect", (reason) => print({ type: "disconnect", client: index, reason }));
  socket.on("connection_established", (data) => print({ type: "established", client: index, data }));
  socket.on("initial_events", (events, offset) => {
    state.held = events.map((e) => e.seq);
    print({ type: "initial", client: index, seqs: state.held, offset: offset ?? null });
  });
  socket.on("system_message", ({ message, level }) =>
    print({ type: "system", client: index, message, level }),
  );
  socket.on("event_created", (event, offset) => {
    state.held.push(event.seq);
    if (offset !== String(event.seq)) state.badOffsets += 1;
    if (spec.verbose) print({ type: "event", client: index, seq: event.seq, offset: offset ?? null });
  });
  return state;
});

const commands = {
  drop({ client, url }) {
    // A cut of a live connection. engine.close() on a connection still opening would leave
    // socket.io's Manager waiting for its 20 s connect timeout, which no network does.
    if (!clients[client].socket.connected) return;
    const manager = clients[client].socket.io;
    if (url !== undefined) manager.uri = url;
    manager.engine?.close();
  },
  report({ held = true }) {
    print({
      type: "report",
      clients: clients.map((state, client) => ({
        client,
        ...(held ? { held: state.held } : {}),
        last: state.held.at(-1) ?? null,
        connects: state.connects,
        recovered: state.recovered,
        badOffsets: state.badOffsets,
        connected: state.socket.connected,
      })),
    });
  },
  exit() {
    for (const state of clients) state.socket.disconnect();
    process.exit(0);
  },
};

// The parent closing our stdin means the test is over.
runCommands(commands, () => commands.exit());
