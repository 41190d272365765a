// Shared by harness.mjs and bridge.mjs: load the MicroPython WebAssembly port and copy host
// directories and files into its in-memory filesystem.
import { readFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";

// Parses --mount HOST:GUEST, --file HOST:GUEST and the flags named in `flags` (value-less) and
// `options` (with a value); returns {mounts, files, flags, options, rest}.
export function parseArgs(argv, { flags = [], options = [] } = {}) {
  const out = { mounts: [], files: [], flags: new Set(), options: {}, rest: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--mount" || a === "--file") {
      const spec = argv[++i] ?? "";
      const cut = spec.lastIndexOf(":");
      if (cut <= 0) throw new Error(`bad ${a} ${spec}: expected HOST:GUEST`);
      (a === "--mount" ? out.mounts : out.files).push([spec.slice(0, cut), spec.slice(cut + 1)]);
    } else if (flags.includes(a)) {
      out.flags.add(a);
    } else if (options.includes(a)) {
      out.options[a] = argv[++i];
    } else {
      out.rest.push(a);
    }
  }
  return out;
}

export async function start({ mounts, files, heapsize = 8 * 1024 * 1024, stdout, stderr }) {
  // The initial heap; this port grows it on demand (split heap), so memory tests measure
  // gc.mem_alloc() deltas rather than gc.mem_free().  Unbuffered output: chunks go out as
  // they come, so long lines are never split.
  const mp = await loadMicroPython({ heapsize, linebuffer: false, stdout, stderr });
  const mkdirs = (path) => {
    let cur = "";
    for (const part of path.split("/").filter(Boolean)) {
      cur += "/" + part;
      try {
        mp.FS.mkdir(cur);
      } catch {
        // already there
      }
    }
  };
  const copyTree = (host, guest) => {
    mkdirs(guest);
    for (const name of readdirSync(host)) {
      if (name === "__pycache__" || name === "node_modules") continue;
      const src = join(host, name);
      if (statSync(src).isDirectory()) copyTree(src, `${guest}/${name}`);
      else mp.FS.writeFile(`${guest}/${name}`, readFileSync(src));
    }
  };
  for (const [host, guest] of mounts) copyTree(host, guest);
  for (const [host, guest] of files) {
    mkdirs(guest.slice(0, guest.lastIndexOf("/")));
    mp.FS.writeFile(guest, readFileSync(host));
  }
  mp.runPython(`import sys\nsys.path[:0] = ${JSON.stringify(mounts.map(([, g]) => g))}\ndel sys`);
  return mp;
}
