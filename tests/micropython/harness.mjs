// Runs a Python script inside the official MicroPython WebAssembly port (npm
// @micropython/micropython-webassembly-pyscript), the way pytest needs it:
//
//   node harness.mjs [--mount HOSTDIR:GUESTDIR]... [--file HOSTFILE:GUESTFILE]... [--heap BYTES] [--wait] SCRIPT.py
//
// Every mounted guest directory is put on sys.path in the order given, so mount the
// fakes (bluetooth, machine, network, socket) before the board code.  Files are
// copied into the port's in-memory filesystem; nothing the script writes reaches the host.
// A script may use top-level await.  Node exits when the script ends, even if gateway tasks
// still loop forever; with --wait it stays while tasks have timers (board-style code that
// only calls asyncio.run).  Exit status: 0 on success, 1 on any uncaught Python exception
// (also inside a task), 2 on a usage error.
import { readFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";

function usage(msg) {
  process.stderr.write(`harness: ${msg}\n`);
  process.exit(2);
}

const mounts = [];
const files = [];
let heapsize = 8 * 1024 * 1024;
let script = null;
let wait = false;
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (a === "--mount" || a === "--file") {
    const spec = argv[++i] ?? usage(`${a} needs HOST:GUEST`);
    const cut = spec.lastIndexOf(":");
    if (cut <= 0) usage(`bad ${a} ${spec}`);
    (a === "--mount" ? mounts : files).push([spec.slice(0, cut), spec.slice(cut + 1)]);
  } else if (a === "--heap") {
    heapsize = Number(argv[++i]);
  } else if (a === "--wait") {
    wait = true;
  } else if (script === null) {
    script = a;
  } else {
    usage(`unexpected argument ${a}`);
  }
}
if (script === null) usage("no script given");

// The initial heap; this port grows it on demand (split heap), so memory tests measure
// gc.mem_alloc() deltas rather than gc.mem_free().
const mp = await loadMicroPython({
  heapsize,
  // Unbuffered: chunks go out as they come, so long lines are never split.
  linebuffer: false,
  stdout: (data) => process.stdout.write(data),
  stderr: (data) => process.stderr.write(data),
});

function mkdirs(path) {
  let cur = "";
  for (const part of path.split("/").filter(Boolean)) {
    cur += "/" + part;
    try {
      mp.FS.mkdir(cur);
    } catch {
      // already there
    }
  }
}

function copyTree(host, guest) {
  mkdirs(guest);
  for (const name of readdirSync(host)) {
    if (name === "__pycache__" || name === "node_modules") continue;
    const src = join(host, name);
    if (statSync(src).isDirectory()) copyTree(src, `${guest}/${name}`);
    else mp.FS.writeFile(`${guest}/${name}`, readFileSync(src));
  }
}

for (const [host, guest] of mounts) copyTree(host, guest);
for (const [host, guest] of files) {
  mkdirs(guest.slice(0, guest.lastIndexOf("/")));
  mp.FS.writeFile(guest, readFileSync(host));
}

// The port's asyncio runs on the JS event loop and has no asyncio.run().  Board code
// calls asyncio.run(main()), so give it one that starts the task and records failure;
// Node stays alive while the task has timers pending.
const prelude = `
import sys
sys.path[:0] = ${JSON.stringify(mounts.map(([, g]) => g))}
import asyncio
if not hasattr(asyncio, "run"):
    async def _guard(coro):
        try:
            return await coro
        except BaseException as e:
            sys.print_exception(e)
            import js
            js.process.exitCode = 1
    asyncio.run = lambda coro: asyncio.create_task(_guard(coro))
del sys
`;

try {
  mp.runPython(prelude);
  // runPythonAsync allows a top-level await in test scripts.
  await mp.runPythonAsync(readFileSync(script, "utf8"));
} catch (e) {
  // A PythonError's message is the MicroPython traceback; print only that, not the JS stack.
  process.stderr.write(String(e && e.message ? e.message : e) + "\n");
  process.exitCode = 1;
}
if (!wait) process.exit();
