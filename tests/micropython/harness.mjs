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
import { readFileSync } from "node:fs";
import { parseArgs, start } from "./mpfs.mjs";

let args;
try {
  args = parseArgs(process.argv.slice(2), { flags: ["--wait"], options: ["--heap"] });
  if (args.rest.length !== 1) throw new Error("expected exactly one SCRIPT.py");
} catch (e) {
  process.stderr.write(`harness: ${e.message}\n`);
  process.exit(2);
}

const mp = await start({
  mounts: args.mounts,
  files: args.files,
  heapsize: Number(args.options["--heap"] ?? 8 * 1024 * 1024),
  stdout: (data) => process.stdout.write(data),
  stderr: (data) => process.stderr.write(data),
});

// The port's asyncio runs on the JS event loop and has no asyncio.run().  Board code
// calls asyncio.run(main()), so give it one that starts the task and records failure.
const prelude = `
import asyncio
if not hasattr(asyncio, "run"):
    async def _guard(coro):
        try:
            return await coro
        except BaseException as e:
            import sys, js
            sys.print_exception(e)
            js.process.exitCode = 1
    asyncio.run = lambda coro: asyncio.create_task(_guard(coro))
`;

try {
  mp.runPython(prelude);
  // runPythonAsync allows a top-level await in test scripts.
  await mp.runPythonAsync(readFileSync(args.rest[0], "utf8"));
} catch (e) {
  // A PythonError's message is the MicroPython traceback; print only that, not the JS stack.
  process.stderr.write(String(e && e.message ? e.message : e) + "\n");
  process.exitCode = 1;
}
if (!args.flags.has("--wait")) process.exit();
