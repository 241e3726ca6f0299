// Drives the real socket.io-client@4 for the Python tests (tests/js_client.py).
//
//   node client.mjs '{"url": "http://127.0.0.1:PORT", "options": {...io() options...}}'
//
// stdout: one JSON object per line, in the order things happen:
//   {"type": "connect", "id", "recovered", "transport"}
//   {"type": "connect_error", "message", "data"}
//   {"type": "disconnect", "reason"}
//   {"type": "event", "event": NAME, "args": [...]}      every server event (onAny)
//   {"type": "ack", "ref": REF, "args": [...]}           the answer to an "emit" command
//   {"type": "error", "message"}                         a command this script cannot run
// stdin: one JSON command per line:
//   {"op": "emit", "event", "args": [...], "ref"}        with an ack callback when ref is set
//   {"op": "disconnect"}
//   {"op": "connect", "auth": {...}}                     reconnect, optionally with a new auth
//   {"op": "exit"}
import { io } from "socket.io-client";
import { print, runCommands } from "./commands.mjs";

const spec = JSON.parse(process.argv[2] ?? "{}");

const socket = io(spec.url, { reconnection: false, ...spec.options });

socket.on("connect", () =>
  print({
    type: "connect",
    id: socket.id,
    recovered: socket.recovered,
    transport: socket.io.engine.transport.name,
  }),
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
