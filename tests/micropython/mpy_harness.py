"""Run the MicroPython gateway code in the real MicroPython WebAssembly port (Node.js).

`mpy.run(code)` runs a script through `harness.mjs` with the board code (`micropython/`) and the
fakes for `bluetooth`, `machine`, `network` and `socket` on `sys.path`, and returns its stdout.
Tests that need Node are skipped only when `node` is missing; the npm package is installed with
`npm ci` on first use if CI has not done it already.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BOARD = ROOT / "micropython"
FAKES = HERE / "fakes"
HARNESS = HERE / "harness.mjs"
PACKAGE = HERE / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"


class MicroPython:
    """Runs scripts in a fresh MicroPython instance per call."""

    def __init__(self, node: str, tmp: Path) -> None:
        self.node = node
        self.tmp = tmp
        self._n = 0

    def run(
        self,
        code: str,
        *,
        files: Mapping[str, bytes | Path] | None = None,
        board: Path | None = BOARD,
        heap: int | None = None,
        timeout: float = 60,
        check: bool = True,
    ) -> str:
        """Run `code`; `files` maps guest paths to bytes or host files. Returns stdout.

        `board` is the directory mounted as /app (the board code, or a directory of .mpy files);
        fakes are mounted first so they shadow nothing real (the port has none of those modules).
        """
        self._n += 1
        script = self.tmp / f"script{self._n}.py"
        script.write_text(code)
        args = [self.node, str(HARNESS), "--mount", f"{FAKES}:/fakes"]
        if board is not None:
            args += ["--mount", f"{board}:/app"]
        for guest, content in (files or {}).items():
            if isinstance(content, Path):
                host = content
            else:
                host = self.tmp / f"file{self._n}_{Path(guest).name}"
                host.write_bytes(content)
            args += ["--file", f"{host}:{guest}"]
        if heap is not None:
            args += ["--heap", str(heap)]
        args.append(str(script))
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=HERE, check=False)
        if check and proc.returncode != 0:
            out, err = proc.stdout[-4000:], proc.stderr[-4000:]
            pytest.fail(f"MicroPython exited {proc.returncode}\n--- stdout\n{out}\n--- stderr\n{err}")
        return proc.stdout

    def run_json(self, code: str, **kwargs: object) -> list[object]:
        """Run `code` and parse every stdout line that starts with `@` as JSON."""
        out = self.run(code, **kwargs)  # type: ignore[arg-type]
        return [json.loads(line[1:]) for line in out.splitlines() if line.startswith("@")]


def ensure_npm_package() -> None:
    if PACKAGE.is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("node is installed but npm is not: run `npm ci --prefix tests/micropython`")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--prefix", str(HERE)], check=True, timeout=300)
