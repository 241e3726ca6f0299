// Drives the real socket.io-client@4 for the Python tests (tests/js_client.py).
//
//   node client.mjs '{"url": "http://127.0.0.1:PORT", "options": {...io() options...},
//                     "package": "socket.io-client-4.0"}'
//
// `package` is the npm name to import: "socket.io-client" (the default, the current
// release) or one of the older releases that package.json installs under an alias.
//
// stdout: one JSON object per line, in the order things happen:
//   {"type": "connect", "id", "recovered", "transport"}
//   {"type": "connect_error", "message", "data"}
//   {"type": "disconnect", "reason"}
//   {"type": "upgrade", "transport"}                     the transport was upgraded
//   {"type": "event", "event": NAME, "args": [...]}      every server event (onAny)
//   {"type": "ack", "ref": REF, "args": [...]}           the answer to an "emit" command
//   {"type": "error", "message"}                         a command this script cannot run
// stdin: one JSON command per line:
//   {"op": "emit", "event", "args": [...], "ref"}        with an ack callback when ref is set
//   {"op": "disconnect"}
//   {"op": "drop"}                                       cut the transport (the client
//                                                        reconnects if `reconnection` is on)
//   {"op": "connect", "auth": {...}}                     reconnect, optionally with a new auth
//   {"op": "exit"}
import { print, runCommands } from "./commands.mjs";

const spec = JSON.parse(process.argv[2] ?? "{}");
const { io } = await import(spec.package ?? "socket.io-client");

const socket = io(spec.url, { reconnection: false, ...spec.options });

socket.on("connect", () =>
  print({
    type: "connect",
    id: socket.id,
    recovered: socket.recovered,
    transport: socket.io.engine.transport.name,
  }),
);
// The engine of each (re)connection; polling -> websocket shows as an "upgrade" line.
socket.io.on("open", () =>
  socket.io.engine.on("upgrade", (transport) => print({ type: "upgrade", transport: transport.name })),
);
socket.on("connect_error", (err) =>
  print({ type: "connect_error", message: err.message, data: err.data ?? null }),
);
socket.on("disconnect", (reason) => print({ type: "disconnect", reason }));
socket.onAny((event, ...args) => print({ type: "event", event, args }));

const commands = {
  emit({ event, args = [], ref }) {
    if (ref === undefined) {
      socket.emit(event, ...args);
    } else {
      socket.emit(event, ...args, (...answer) => print({ type: "ack", ref, args: answer }));
    }
  },
  disconnect() {
    socket.disconnect();
  },
  drop() {
    // A network cut, not a goodbye: socket.io keeps the session (pid, offset) to recover.
    socket.io.engine.close();
  },
  connect({ auth }) {
    if (auth !== undefined) socket.auth = auth;
    socket.connect();
  },
  exit() {
    socket.disconnect();
    process.exit(0);
  },
};

// The parent closing our stdin means the test is over.
runCommands(commands, () => {
  socket.disconnect();
  process.exit(0);
});
