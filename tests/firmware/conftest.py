"""Builds of the firmware's portable core (firmware/host/Makefile) shared by the firmware tests.

Each build goes to a temporary directory, never into the source tree. gcc and make are required (CI installs them);
the fuzz build needs clang with its runtime (Debian: `clang libclang-rt-14-dev`) and is skipped without it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HOST = REPO / "firmware" / "host"


def make(build: Path, *args: str) -> Path:
    """Runs the host Makefile into `build`; a compiler warning is an error there (-Werror), so it fails here."""
    cmd = ["make", "-C", str(HOST), f"BUILD={build}", "-j2", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return build


@pytest.fixture(scope="session")
def host_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """gcc, -Wall -Wextra -Werror (+ -Wshadow -Wconversion ...), C99: unit tests, ruuvi_decode, wire_batch, sizes."""
    return make(tmp_path_factory.mktemp("fw-gcc"), "CC=gcc", "all")


@pytest.fixture(scope="session")
def san_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same programs under -fsanitize=address,undefined (aborting on the first report)."""
    return make(tmp_path_factory.mktemp("fw-san"), "CC=gcc", "SAN=1", "all")


@pytest.fixture(scope="session")
def fuzz_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("clang") is None:
        pytest.skip("clang not installed (Debian: apt-get install clang libclang-rt-14-dev)")
    return make(tmp_path_factory.mktemp("fw-fuzz"), "fuzz") / "fuzz"
