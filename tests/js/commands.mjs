// The stdin side of the node scripts driven by the Python tests: one JSON object per line,
// `{"op": NAME, ...}`, run as `commands[NAME](command)`; stdout gets one JSON object per line.
import { createInterface } from "node:readline";

export const print = (line) => process.stdout.write(JSON.stringify(line) + "\n");

/** Run each command line; call `onClose` when the parent closes stdin (the test is over). */
export function runCommands(commands, onClose) {
  const input = createInterface({ input: process.stdin });
  input.on("line", (text) => {
    if (!text.trim()) return;
    const command = JSON.parse(text);
    const run = commands[command.op];
    if (run === undefined) print({ type: "error", message: `unknown op ${command.op}` });
    else run(command);
  });
  input.on("close", onClose);
}
