"""Processes of the end-to-end benchmark: the gateway and receiver CLIs as subprocesses, a peak-RSS monitor, and
small InfluxDB/status readers. Servers (Mosquitto, influxd) come from tests/servers.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[2]
for _p in (REPO, REPO / "tests", REPO / "tests" / "cloud"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from test_receiver_support import broker_settings  # noqa: E402

from bench.bench_pipeline import vm_hwm_kb  # noqa: E402

__all__ = ["PeakRss", "Receiver", "Receivers", "broker_settings", "clean_env", "committed_total", "cpu_seconds",
           "gateway_cmd", "influx_count", "influx_query", "loadavg", "vm_hwm_kb"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, from /proc/<pid>/stat; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class PeakRss:
    """Polls VmHWM and CPU time of named processes every 100 ms (VmHWM is itself a peak and CPU time only grows,
    so polling only has to catch the process before it exits). Keeps the highest value per name."""

    def __init__(self) -> None:
        self.peaks_kb: dict[str, int] = {}
        self.cpu_s: dict[str, float] = {}
        self._pids: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def watch(self, name: str, pid: int) -> None:
        with self._lock:
            self._pids[name] = pid
        self._sample()

    def _sample(self) -> None:
        with self._lock:
            for name, pid in self._pids.items():
                self.peaks_kb[name] = max(self.peaks_kb.get(name, 0), vm_hwm_kb(pid))
                self.cpu_s[name] = max(self.cpu_s.get(name, 0.0), cpu_seconds(pid))

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            self._sample()

    def stop(self) -> dict[str, int]:
        self._sample()
        self._stop.set()
        self._thread.join()
        return dict(self.peaks_kb)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any EDGE_GW_/CLOUD_INGEST_ settings of the caller's shell, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_GW_", "CLOUD_INGEST_"))}
    env.update(extra)
    return env


class Receiver:
    """`cloud-ingest run` in its own process, with a fast status file to watch its counters."""

    def __init__(self, workdir: Path, mqtt_url: str, influx_url: str, settings: dict[str, str],
                 client_id: str = "bench-e2e", shared_group: str = "") -> None:
        self.client_id = client_id
        self.status_file = workdir / f"{client_id}.status.json"
        self.log = workdir / f"{client_id}.log"
        # Every receiver keeps its own dedup journal (members of a shared group must never share one); named
        # explicitly rather than left to the default next to the status file, so retire() uses the same one.
        common = ["--mqtt", mqtt_url, "--influx", influx_url, "--client-id", client_id,
                  "--set", f"dedup.state_file={workdir / f'{client_id}.dedup.sqlite'}"]
        if shared_group:
            common += ["--shared-group", shared_group]
        for k, v in settings.items():
            common += ["--set", f"{k}={v}"]
        cli = [sys.executable, "-c", "from cloud.cli import main; main()"]
        self.args = [*cli, "run", *common, "--metrics-port", "0", "--status-file", str(self.status_file),
                     "--log-level", "warning", "--set", "status.interval=0.1"]
        self.retire_args = [*cli, "retire", *common, "--idle", "0.5"]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Receiver:
        self.status_file.unlink(missing_ok=True)
        with open(self.log, "ab") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT, env=clean_env())
        deadline = time.monotonic() + 30
        while not (self.status() or {}).get("mqtt_connected"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"receiver did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)
        return self

    def status(self) -> dict[str, Any] | None:
        try:
            return orjson.loads(self.status_file.read_bytes())  # type: ignore[no-any-return]
        except (FileNotFoundError, orjson.JSONDecodeError):
            return None

    def written(self) -> int:
        return int((self.status() or {}).get("written", 0))

    def idle(self) -> bool:
        st = self.status() or {}
        return st.get("inflight_messages") == 0 and st.get("queue_points") == 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)

    def retire(self) -> None:
        """End the stopped receiver's persistent session (`cloud-ingest retire`): otherwise Mosquitto keeps
        queueing its share of a shared group, or a full copy of a plain subscription, in later phases."""
        with open(self.log, "ab") as out:
            subprocess.run(self.retire_args, stdout=out, stderr=subprocess.STDOUT, env=clean_env(), check=True,
                           timeout=120)


class Receivers:
    """The receivers of one phase: one plain `cloud-ingest run`, or N members of one shared subscription group
    (each its own client id, status file and dedup journal). Counters are summed over the members."""

    def __init__(self, members: list[Receiver]) -> None:
        self.members = members

    def start(self) -> Receivers:
        try:
            for rx in self.members:
                rx.start()
        except BaseException:
            self.stop()
            raise
        return self

    def statuses(self) -> list[dict[str, Any] | None]:
        return [rx.status() for rx in self.members]

    def written(self) -> int:
        return sum(rx.written() for rx in self.members)

    def idle(self) -> bool:
        return all(rx.idle() for rx in self.members)

    def check_running(self) -> None:
        for rx in self.members:
            if rx.proc is not None and rx.proc.poll() is not None:
                raise RuntimeError(f"receiver {rx.client_id} exited with {rx.proc.returncode}")

    def stop(self) -> None:
        for rx in self.members:
            rx.stop()

    def retire(self) -> None:
        for rx in self.members:
            rx.retire()


def gateway_cmd(gateway_id: str, mqtt_url: str, db: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "edge.cli", "run", "--gateway-id", gateway_id, "--mqtt", mqtt_url, "--db", str(db),
            "--source", "simulate", "--assume-synced", "--log-level", "warning", *extra]


def committed_total(db: Path) -> int:
    """Readings ever committed to a gateway buffer (AUTOINCREMENT ids)."""
    import sqlite3

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'readings'").fetchone()
    finally:
        conn.close()
    return int(row[0]) if row else 0


def influx_query(base_url: str, q: str, db: str = "ruuvi") -> dict[str, Any]:
    query = urllib.parse.urlencode({"db": db, "epoch": "ns", "q": q})
    with urllib.request.urlopen(f"{base_url}/query?{query}", timeout=60) as r:
        return orjson.loads(r.read())  # type: ignore[no-any-return]


def influx_count(base_url: str, gateway_regex: str) -> int:
    """Points stored for gateways matching the regex (raw retention policy; temperature is in every format the
    simulator sends)."""
    res = influx_query(base_url, f'SELECT count("temperature") FROM "ruuvi" WHERE "gateway" =~ /{gateway_regex}/')
    series = res["results"][0].get("series")
    return int(series[0]["values"][0][1]) if series else 0


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages, as /proc/loadavg prints them."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])
