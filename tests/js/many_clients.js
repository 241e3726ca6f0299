// Opens COUNT socket.io connections of one tenant in this one process and prints JSON lines:
//   {"connected": COUNT}                      once every socket has its initial_events
//   {"closed": COUNT, "systemMessages": [...]} once every socket was closed by the server,
//                                              with each socket's system_message levels
// Usage: node many_clients.js URL TENANT COUNT
"use strict";
const { io } = require("socket.io-client");

const [url, tenant, countArg] = process.argv.slice(2);
const count = Number(countArg);
const messages = Array.from({ length: count }, () => []);
let connected = 0;
let closed = 0;

for (let i = 0; i < count; i++) {
  const socket = io(url, {
    auth: { tenant },
    transports: ["websocket"],
    reconnection: false,
    forceNew: true,
  });
  socket.on("initial_events", () => {
    connected += 1;
    if (connected === count) console.log(JSON.stringify({ connected }));
  });
  socket.on("system_message", (msg) => messages[i].push(msg.level));
  socket.on("connect_error", (err) => {
    console.log(JSON.stringify({ error: err.message, data: err.data }));
    process.exit(1);
  });
  socket.on("disconnect", () => {
    closed += 1;
    if (closed === count) {
      console.log(JSON.stringify({ closed, systemMessages: messages }));
      process.exit(0);
    }
  });
}
