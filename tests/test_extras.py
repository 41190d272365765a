"""The extras: a Pi installs `edge-gw[gateway]`, the cloud host `edge-gw[cloud]`; each pulls only its own libraries,
and the other daemon's CLI says what to install in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def closure(extra: str) -> set[str]:
    """The distributions pip would install for `.[extra]` on a machine that has nothing (resolved, not installed)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", "-",
         "--disable-pip-version-check", f".[{extra}]"],
        cwd=REPO, capture_output=True, text=True, check=False, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"pip could not resolve .[{extra}]: {proc.stderr[-2000:]}")
    report = json.loads(proc.stdout)
    return {item["metadata"]["name"].lower().replace("_", "-") for item in report["install"]}


def test_the_gateway_extra_pulls_no_cloud_libraries() -> None:
    names = closure("gateway")
    assert {"bleak", "paho-mqtt", "click", "orjson", "prometheus-client"} <= names
    assert not names & {"gmqtt", "influxdb-client", "sqlite-utils", "numpy", "pytest", "mypy", "ruff", "ansible-core",
                        "matplotlib"}, names


def test_the_cloud_extra_pulls_no_bluetooth() -> None:
    names = closure("cloud")
    assert {"gmqtt", "influxdb-client", "click", "orjson", "prometheus-client"} <= names
    assert not names & {"bleak", "dbus-fast", "pytest", "mypy", "ruff"}, names


@pytest.mark.parametrize(("prog", "missing", "extra", "args"), [
    ("edge", "paho", "gateway", ["run", "--gateway-id", "gw-1", "--source", "simulate", "--count", "1"]),
    ("cloud", "gmqtt", "cloud", ["run", "--status-file", "/tmp/edge-gw-test-extras/s.json"]),
])
def test_a_missing_extra_is_one_line(tmp_path: Path, prog: str, missing: str, extra: str, args: list[str]) -> None:
    code = (f"import sys; sys.modules[{missing!r}] = None; "  # as if the extra were not installed
            f"from {prog}.cli import main; sys.argv[0] = 'x'; main()")
    proc = subprocess.run([sys.executable, "-c", code, *args, *(["--db", str(tmp_path / "b.db")]
                                                                 if prog == "edge" else [])],
                          capture_output=True, text=True, check=False, timeout=60, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    name = "edge-gw" if prog == "edge" else "cloud-ingest"
    assert proc.stderr.strip().splitlines()[-1] == (
        f"Error: {name} needs the '{extra}' extra, which is not installed (no module {missing!r}): "
        f"pip install 'edge-gw[{extra}]'"), proc.stderr
    assert "Traceback" not in proc.stderr
