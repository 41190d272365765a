"""How the firmware tests build the host core (firmware/host/Makefile), shared by conftest.py and the tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HOST = REPO / "firmware" / "host"


def make(build: Path, *args: str) -> Path:
    """Runs the host Makefile into `build`; a compiler warning is an error there (-Werror), so it fails here."""
    cmd = ["make", "-C", str(HOST), f"BUILD={build}", "-j2", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return build
