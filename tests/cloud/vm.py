"""A private VictoriaMetrics (Debian's `victoria-metrics`) for the InfluxDB 2.x write path: it accepts
influxdb-client's /api/v2/write (ignoring org, bucket and token). Free loopback port, temp dir, stopped by PID."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from servers import free_port, have, stop_pid


@dataclass
class VictoriaMetrics:
    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> VictoriaMetrics:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / "vm.log", "ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [
                    "victoria-metrics",
                    f"-httpListenAddr=127.0.0.1:{self.port}",
                    f"-storageDataPath={self.workdir / 'data'}",
                    "-retentionPeriod=100y",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((self.workdir / "vm.log").read_text(errors="replace")[-2000:])
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(f"{self.url}/health", timeout=0.5) as r,
            ):
                if r.status == 200:
                    return self
            time.sleep(0.05)
        raise RuntimeError("victoria-metrics did not answer /health")

    def stop(self) -> None:
        stop_pid(self.proc)
        self.proc = None

    def export(self, match: str) -> list[dict[str, Any]]:
        """All series matching a PromQL selector, after a force flush: [{"metric": {...}, "values", "timestamps"}]."""
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/internal/force_flush"), timeout=10).close()
        data = urllib.parse.urlencode({"match[]": match}).encode()
        with urllib.request.urlopen(f"{self.url}/api/v1/export", data=data, timeout=10) as r:
            return [json.loads(line) for line in r.read().splitlines() if line.strip()]


@pytest.fixture
def victoria(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    if not have("victoria-metrics"):
        pytest.skip("victoria-metrics is not installed (apt-get install victoria-metrics)")
    vm = VictoriaMetrics(tmp_path / "vm").start()
    try:
        yield vm
    finally:
        vm.stop()
