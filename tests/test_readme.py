"""The README's quick start and install commands, run as written, in a clean clone, with Debian's own python3.

`PATH=/usr/bin:/bin` keeps any other Python (pyenv, the CI venv) out of reach, so PEP 668 applies as on a fresh
Debian 12 or Raspberry Pi OS: a `pip install` outside a virtual environment would be refused.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
STOCK = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}

pytestmark = pytest.mark.slow


def section(title: str) -> str:
    start = README.index(title)
    end = README.find("\n#", start + len(title))
    return README[start:end]


def code_lines(text: str) -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    return [ln.split("#")[0].strip() for b in blocks for ln in b.splitlines() if ln.split("#")[0].strip()]


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not Path("/usr/bin/python3").exists():
        pytest.skip("no Debian python3")
    dest = tmp_path_factory.mktemp("readme") / "edge-gw"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(dest)], check=True, timeout=120)
    # The clone is HEAD; a working tree with changes lays them over it, so that its tests run its own files.
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-com", "--exclude-standard", "-z"],
                           capture_output=True, check=True).stdout
    present = b"\0".join(f for f in files.split(b"\0") if f and (REPO / f.decode()).is_file())
    subprocess.run(f"tar --null -T - -cf - | tar -xf - -C {dest}", shell=True, cwd=REPO, input=present, check=True)
    return dest


def test_the_quick_start_is_make_demo_and_make_test() -> None:
    assert code_lines(section("## Quick start")) == ["make demo", "make test"]


def test_make_demo_as_written_on_a_stock_python(clone: Path) -> None:
    """`make demo` makes the venv with Debian's python3, installs into it, and runs the whole pipeline; it shows the
    status and the values read back from InfluxDB, and Ctrl-C stops everything it started."""
    log = clone / "demo.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["make", "demo"], cwd=clone, env=STOCK, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 900
        while b"=== cloud-ingest status" not in log.read_bytes():
            assert proc.poll() is None, log.read_text(errors="replace")[-4000:]
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-4000:]
            time.sleep(1)
        time.sleep(3)
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal goes to the whole foreground group
        proc.wait(60)
    text = log.read_text(errors="replace")
    assert "externally-managed-environment" not in text
    assert (clone / ".venv" / "bin" / "python").resolve().is_relative_to("/usr")  # the system's python3
    assert "=== edge-gw status" in text and "daemon running" in text
    values = text.split("=== newest values per tag (InfluxDB, raw)")[1].split("===")[0]
    assert len(re.findall(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5} ", values, re.M)) >= 4, values
    assert "Traceback" not in text, text[-4000:]
    # Everything it started is gone: no broker, database or daemon left on the demo's folder.
    left = subprocess.run(["pgrep", "-f", str(clone / ".demo")], capture_output=True, text=True, check=False)
    assert left.stdout.strip() == "", left.stdout


@pytest.fixture
def no_state_left() -> Iterator[None]:
    """As root the README's commands use /var/lib/edge-gw: remove it afterwards if the test made it."""
    made = Path("/var/lib/edge-gw")
    existed = made.exists()
    yield
    if not existed and os.geteuid() == 0:
        shutil.rmtree(made, ignore_errors=True)


def test_the_bluetooth_install_as_written(clone: Path, tmp_path: Path, no_state_left: None) -> None:
    """The README's Pi install: a venv with the gateway extra only; `run` without BlueZ says so in one line."""
    lines = code_lines(section("### With a real Bluetooth adapter"))
    assert lines[0].startswith("sudo apt-get install -y python3-venv")
    env = {**STOCK, "HOME": str(tmp_path)}
    results = []
    for line in lines[1:]:
        cmd = line.replace("~", str(tmp_path))
        results.append(subprocess.run(["bash", "-c", cmd], cwd=clone, env=env, capture_output=True, text=True,
                                      check=False, timeout=600))
    venv, install, run, status = results
    assert venv.returncode == 0 and install.returncode == 0, venv.stderr + install.stderr[-3000:]
    site = next((tmp_path / "edge-gw-venv" / "lib").glob("python3*/site-packages"))
    installed = {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}
    assert {"bleak", "paho_mqtt", "edge_gw"} <= installed and not installed & {"gmqtt", "influxdb_client"}
    # No D-Bus system bus here: one line, and the hint.
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1].startswith("Error: Bluetooth is not available"), run.stderr
    assert "--source simulate" in run.stderr and "Traceback" not in run.stderr
    # The buffer went to the state folder (root: /var/lib/edge-gw), which `status` then reads.
    where = Path("/var/lib/edge-gw") if os.geteuid() == 0 else tmp_path / ".local/state/edge-gw"
    assert where.is_dir()
    assert status.returncode == 0, status.stderr
    assert f"db {where / 'buffer.db'}" in status.stdout
