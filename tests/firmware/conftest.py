"""Builds of the firmware's portable core (firmware/host/Makefile) shared by the firmware tests.

Each build goes to a temporary directory, never into the source tree. gcc and make are required (CI installs them);
the fuzz build needs clang with its runtime (Debian: `clang libclang-rt-14-dev`) and is skipped without it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from firmware_build import make


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
