"""Every dashboard in cloud/grafana/ against Grafana's own schema.

The Grafana server cannot be installed here, so the check is the strict unmarshal that Grafana's schema generates
into grafana-foundation-sdk (Go, v0.0.22): tests/grafana/schemacheck. It rejects unknown fields, wrong types and
missing required fields, in the dashboard and in each panel type's options and field config. It does not check the
InfluxDB queries' shape (the SDK has no schema for the influxdb datasource's queries); test_dashboards.py runs every
panel query on a real influxd instead.

The checker is built once from the Go module proxy with the `go` on PATH and cached under ~/.cache/edge-gw-tests,
keyed by a hash of its sources, so a cold run pays one `go build` (about 15 s on 2 cores) and later runs none.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow  # the first `go build` of the SDK takes about 15 s

REPO = Path(__file__).resolve().parents[2]
CHECKER = REPO / "tests" / "grafana" / "schemacheck"
DASHBOARDS = sorted((REPO / "cloud" / "grafana").glob("*.json"))


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edge-gw-tests"


@pytest.fixture(scope="module")
def schemacheck() -> Path:
    """The checker binary, built once per version of its sources."""
    go = shutil.which("go")
    assert go, "the Go toolchain (go) is needed to build tests/grafana/schemacheck"
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "main.go"):
        digest.update((CHECKER / name).read_bytes())
    binary = cache_dir() / f"schemacheck-{digest.hexdigest()[:16]}"
    if not binary.exists():
        binary.parent.mkdir(parents=True, exist_ok=True)
        tmp = binary.with_suffix(f".tmp{os.getpid()}")
        subprocess.run([go, "build", "-o", str(tmp), "."], cwd=CHECKER, check=True, timeout=280,
                       env=os.environ | {"CGO_ENABLED": "0"})
        os.replace(tmp, binary)  # atomic: a parallel run sees either no binary or a whole one
    return binary


def check(binary: Path, *paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary), *map(str, paths)], check=False, capture_output=True, text=True, timeout=60)


def test_every_shipped_dashboard_is_checked() -> None:
    assert {"air-quality.json", "fleet-overview.json", "tag-detail.json"} <= {p.name for p in DASHBOARDS}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_matches_grafanas_schema(schemacheck: Path, path: Path) -> None:
    out = check(schemacheck, path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout == f"ok {path}\n"


def broken(tmp_path: Path, name: str, change: Any) -> Path:
    """A copy of fleet-overview.json (it has stat, timeseries and table panels) with one deliberate fault."""
    d = json.loads((REPO / "cloud" / "grafana" / "fleet-overview.json").read_text())
    change(d)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(d, indent=2))
    return path


def panel(d: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(p for p in d["panels"] if p["type"] == kind)


def test_broken_copies_are_rejected_each_for_its_fault(schemacheck: Path, tmp_path: Path) -> None:
    unknown = broken(tmp_path, "unknown", lambda d: d.update(refreshInterval="1m"))
    wrong = broken(tmp_path, "wrong-type", lambda d: panel(d, "table")["gridPos"].update(w="12"))
    missing = broken(tmp_path, "missing", lambda d: panel(d, "timeseries")["options"]["legend"].pop("displayMode"))
    for path, fault in ((unknown, "unexpected field 'refreshInterval'"),
                        (wrong, ".gridPos.w: json: cannot unmarshal string"),
                        (missing, ".options.legend.displayMode: required field is missing from input")):
        out = check(schemacheck, path)
        assert out.returncode == 1, (path.name, out.stdout)
        assert out.stdout.startswith(f"FAIL {path}: ")
        assert fault in out.stdout, (path.name, out.stdout)
        # One fault, one error: the rest of the copy is still valid.
        assert len(out.stdout.strip().splitlines()) == 1, out.stdout


def test_one_bad_file_fails_the_run_and_the_others_still_pass(schemacheck: Path, tmp_path: Path) -> None:
    bad = broken(tmp_path, "bad", lambda d: panel(d, "stat")["options"].update(wideLayout="yes"))
    out = check(schemacheck, DASHBOARDS[0], bad)
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert lines[0] == f"ok {DASHBOARDS[0]}"
    assert lines[1].startswith(f"FAIL {bad}: ") and "wideLayout" in lines[1]
