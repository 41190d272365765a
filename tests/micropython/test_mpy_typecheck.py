"""The board code type-checks with mypy against micropython-esp32-stubs (installed by micropython/install-stubs.sh
into micropython/typings, outside the app's environment), and that check does catch a misuse of the ESP32 API."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mpy_harness import BOARD

TYPINGS = BOARD / "typings"


@pytest.fixture(scope="module")
def typings() -> Path:
    if not (TYPINGS / "machine.pyi").is_file():
        subprocess.run(["bash", str(BOARD / "install-stubs.sh")], check=True, timeout=300)
    return TYPINGS


def mypy(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_board_code_type_checks_against_the_esp32_stubs(typings: Path) -> None:
    r = mypy(BOARD)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("Success: no issues found in 10 source files")


def test_the_check_catches_esp32_api_misuse(typings: Path, tmp_path: Path) -> None:
    for f in [*BOARD.glob("*.py"), BOARD / "mypy.ini"]:
        shutil.copy(f, tmp_path)
    (tmp_path / "typings").symlink_to(typings)
    net = tmp_path / "net.py"
    line = len(net.read_text().splitlines()) + 4
    with net.open("a") as f:
        f.write("\n\ndef planted():\n    return time.ticks_ms(5), time.ticks_diff(1)\n")
    r = mypy(tmp_path)
    assert r.returncode == 1
    errors = [e for e in r.stdout.splitlines() if ": error: " in e]
    assert len(errors) == 2, r.stdout
    assert errors[0] == f'net.py:{line}: error: Too many arguments for "ticks_ms"  [call-arg]'
    assert errors[1].startswith(f'net.py:{line}: error: No overload variant of "ticks_diff" matches argument type')
