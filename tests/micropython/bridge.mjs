// Exposes the MicroPython WebAssembly REPL on a loopback TCP port, so mpremote can talk to it:
//
//   node bridge.mjs [--mount HOST:GUEST]... [--file HOST:GUEST]... [--port N]
//   mpremote connect socket://127.0.0.1:N resume exec "..."
//
// Prints "listening <port>" once ready.  Bytes from the client go to the event-driven REPL one
// at a time; everything the port prints goes back to the client.  Two things mpremote needs are
// done here, because this REPL lacks them:
//  - the raw-paste probe (Ctrl-E 'A' Ctrl-A) is answered with "R\x00" ("not supported"), so
//    mpremote falls back to plain raw REPL instead of waiting forever;
//  - there is no soft reset banner, so only `resume` commands work (exec, run, ls, cat).
// `cp` and `mount` need a real board (see micropython/README.md).  One client at a time.
import { createServer } from "node:net";
import { parseArgs, start } from "./mpfs.mjs";

const args = parseArgs(process.argv.slice(2), { options: ["--port"] });
let client = null;
const send = (data) => {
  if (client) client.write(typeof data === "string" ? Buffer.from(data, "utf8") : data);
};
const mp = await start({ mounts: args.mounts, files: args.files, stdout: send, stderr: send });
mp.replInit();

const PROBE = Buffer.from([0x05, 0x41, 0x01]);
let queue = Promise.resolve();

const server = createServer((sock) => {
  if (client) {
    sock.end();
    return;
  }
  client = sock;
  sock.on("data", (chunk) => {
    let data = chunk;
    const at = data.indexOf(PROBE);
    if (at >= 0) {
      data = Buffer.concat([data.subarray(0, at), data.subarray(at + PROBE.length)]);
      send(Buffer.from("R\x00", "latin1"));
    }
    // Feed in order, one character at a time, each after the previous one finished.
    for (const byte of data) {
      queue = queue.then(() => mp.replProcessCharWithAsyncify(byte));
    }
  });
  const drop = () => {
    if (client === sock) client = null;
  };
  sock.on("close", drop);
  sock.on("error", drop);
});
server.listen(Number(args.options["--port"] ?? 0), "127.0.0.1", () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});
