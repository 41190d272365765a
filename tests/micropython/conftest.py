"""Fixtures for the MicroPython tests; the runner itself is in mpy_harness.py."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from mpy_harness import MicroPython, ensure_npm_package


@pytest.fixture(scope="session")
def node() -> str:
    path = shutil.which("node")
    if path is None:
        pytest.skip("node is not installed (needed for the MicroPython WebAssembly port)")
    ensure_npm_package()
    return path


@pytest.fixture
def mpy(node: str, tmp_path: Path) -> Iterator[MicroPython]:
    yield MicroPython(node, tmp_path)
