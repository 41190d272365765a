"""Build and deploy the MicroPython (ESP32) gateway in `micropython/`: mpy-cross over every board module, and the
mpremote command line that copies the build and a `config.json` to a board and resets it.

`edge-gw mpy build` and `edge-gw mpy deploy` call these; `make mpy` runs the build.
"""

from __future__ import annotations

import importlib.util
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

BOARD_DIR = Path(__file__).resolve().parent.parent / "micropython"
DEFAULT_MARCH = "xtensawin"  # ESP32 and ESP32-S3; ESP32-C3 is "rv32imc"
# The board runs main.py as source (it never imports main.mpy); manifest.py is build metadata, not a module.
SOURCE_ONLY = ("main.py",)
NOT_MODULES = ("manifest.py", "boot.py")


class MpyError(RuntimeError):
    """mpy-cross or mpremote failed, or the board sources or config are missing or invalid."""


def board_modules(source_dir: Path = BOARD_DIR) -> list[Path]:
    """The board modules that are compiled, in name order."""
    if not source_dir.is_dir():
        msg = f"MicroPython sources not found in {source_dir} (run from a checkout of edge-gw)"
        raise MpyError(msg)
    return sorted(p for p in source_dir.glob("*.py") if p.name not in SOURCE_ONLY + NOT_MODULES)


def _tool(name: str, module: str) -> list[str]:
    # The console script if it is on PATH, else the same package through this interpreter.
    found = shutil.which(name)
    return [found] if found else [sys.executable, "-m", module]


def build(
    out_dir: Path,
    march: str | None = DEFAULT_MARCH,
    *,
    source_dir: Path = BOARD_DIR,
    mpy_cross: list[str] | None = None,
) -> list[Path]:
    """Compile every board module to `out_dir/<name>.mpy` and copy main.py; returns the files written.

    The board code is plain bytecode, so the files are the same for every `march` (mpy-cross records the
    architecture only when a module holds native code); `march` matters once a function uses
    `@micropython.native` or viper. `march=None` leaves the option out. Stale .mpy files of modules that no longer
    exist are removed, so a deploy of `out_dir` copies exactly the current build.
    """
    modules = board_modules(source_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cross = mpy_cross or _tool("mpy-cross", "mpy_cross")
    written: list[Path] = []
    for src in modules:
        target = out_dir / (src.stem + ".mpy")
        cmd = [*cross, "-o", str(target), "-s", src.name]
        if march:
            cmd.append(f"-march={march}")
        cmd.append(str(src))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
        except OSError as e:
            msg = f"cannot run mpy-cross ({shlex.join(cross)}): {e}"
            raise MpyError(msg) from None
        if proc.returncode != 0:
            # One line for the CLI: drop the "Traceback" header, keep the place and the error.
            text = (proc.stderr or proc.stdout).strip().splitlines()
            detail = " ".join(line.strip() for line in text if not line.startswith("Traceback"))
            msg = f"mpy-cross failed on {src.name}: {detail}"
            raise MpyError(msg)
        written.append(target)
    for name in SOURCE_ONLY:
        shutil.copyfile(source_dir / name, out_dir / name)
        written.append(out_dir / name)
    keep = {p.name for p in written}
    for stale in out_dir.glob("*.mpy"):
        if stale.name not in keep:
            stale.unlink()
    return written


def check_config(config: Path, source_dir: Path = BOARD_DIR) -> dict[str, object]:
    """Validate a board config.json with the board's own validator (micropython/config.py runs on CPython too)."""
    spec = importlib.util.spec_from_file_location("_board_config", source_dir / "config.py")
    if spec is None or spec.loader is None:
        msg = f"cannot load {source_dir / 'config.py'}"
        raise MpyError(msg)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        cfg: dict[str, object] = module.load(str(config))
    except module.ConfigError as e:
        raise MpyError(str(e)) from None
    return cfg


def deploy_files(build_dir: Path) -> list[Path]:
    files = sorted(build_dir.glob("*.mpy")) + [build_dir / n for n in SOURCE_ONLY if (build_dir / n).is_file()]
    if not any(f.suffix == ".mpy" for f in files):
        msg = f"no .mpy files in {build_dir}: run `edge-gw mpy build` (or `make mpy`) first"
        raise MpyError(msg)
    return files


def deploy_command(port: str, config: Path, build_dir: Path) -> list[list[str]]:
    """The mpremote command lines that install the build and `config` (as :config.json) on the board at `port`
    and reset it. One chained mpremote call, so the board is reset only if every copy succeeded."""
    files = [str(f) for f in deploy_files(build_dir)]
    return [
        ["mpremote", "connect", port, "cp", *files, ":", "+", "cp", str(config), ":config.json", "+", "reset"],
    ]


def deploy(port: str, config: Path, build_dir: Path) -> None:
    """Validate `config`, then run `deploy_command`. Raises MpyError with mpremote's message on failure."""
    check_config(config)
    for cmd in deploy_command(port, config, build_dir):
        argv = _tool("mpremote", "mpremote") + cmd[1:]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)
        except OSError as e:
            msg = f"cannot run mpremote: {e}"
            raise MpyError(msg) from None
        if proc.returncode != 0:
            msg = f"mpremote failed ({shlex.join(cmd)}): {(proc.stderr or proc.stdout).strip()}"
            raise MpyError(msg)
