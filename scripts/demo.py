"""`make demo`: the whole pipeline on this machine, on simulated tags.

Starts a private Mosquitto and InfluxDB on free loopback ports with their data under ./.demo/, runs
`cloud-ingest setup` and `cloud-ingest run`, and `edge-gw run --source simulate`. After ~30 s it shows
`edge-gw status`, the newest values per tag and the hourly rollups read back from InfluxDB. Ctrl-C stops
everything it started, by PID. `--seconds N` stops by itself after N seconds (used by the tests).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from servers import Influxd, Mosquitto  # noqa: E402

DB = "ruuvi"


def influx_query(influx: Influxd, q: str) -> list[dict[str, object]]:
    url = f"{influx.url}/query?" + urllib.parse.urlencode({"db": DB, "q": q})
    with urllib.request.urlopen(url, timeout=10) as r:
        result = json.loads(r.read())["results"][0]
    return list(result.get("series", []))


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def show(influx: Influxd, workdir: Path) -> None:
    print("\n=== edge-gw status", flush=True)
    subprocess.run([sys.executable, "-m", "edge.cli", "status", "--db", str(workdir / "edge.db")], check=False)
    print("\n=== newest values per tag (InfluxDB, raw)")
    series = influx_query(
        influx,
        'SELECT last("temperature"), last("humidity"), last("pressure"), '
        'last("battery_voltage"), last("co2") FROM "ruuvi" GROUP BY "mac"',
    )
    rows = [["mac", "temperature °C", "humidity %", "pressure Pa", "battery mV", "co2 ppm"]]
    for s in series:
        v = s["values"][0]  # type: ignore[index]
        rows.append([s["tags"]["mac"], *("" if x is None else str(x) for x in v[1:])])  # type: ignore[index]
    print(table(rows) if len(rows) > 1 else "(no data yet)")
    print("\n=== cloud-ingest status", flush=True)
    subprocess.run(["cloud-ingest", "status", "--status-file", str(workdir / "cloud-ingest.status")], check=False)
    # The hourly continuous query fills in an hour once it has ended; recompute the current hour so the demo
    # shows it after 30 s (the receiver does the same for late data).
    subprocess.run(
        ["cloud-ingest", "setup", "--influx", f"{influx.url}/{DB}", "--backfill", "1"], check=True, capture_output=True
    )
    print("\n=== hourly rollups (InfluxDB, rollups.ruuvi_1h)")
    series = influx_query(
        influx,
        'SELECT "mean_temperature", "min_temperature", "max_temperature", '
        '"count_temperature" FROM "rollups"."ruuvi_1h" GROUP BY "mac" ORDER BY time DESC LIMIT 1',
    )
    rows = [["mac", "hour", "mean °C", "min °C", "max °C", "count"]]
    for s in series:
        v = s["values"][0]  # type: ignore[index]
        rows.append([s["tags"]["mac"], str(v[0]), *(f"{x:.2f}" if isinstance(x, float) else str(x) for x in v[1:])])  # type: ignore[index]
    print(table(rows) if len(rows) > 1 else "(no rollups yet)")
    if shutil.which("grafana-server"):
        print("\nGrafana: provision cloud/grafana/ (see ansible/roles/grafana) and open http://localhost:3000")
    else:
        print(
            "\nGrafana is not installed here. With Grafana, add an InfluxDB datasource for "
            f"{influx.url} database '{DB}' and import the dashboards in cloud/grafana/."
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=None, help="stop by itself after this long")
    ap.add_argument("--tags", type=int, default=8)
    ap.add_argument("--rate", type=float, default=40.0)
    args = ap.parse_args()
    workdir = REPO / ".demo"
    workdir.mkdir(exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    broker = Mosquitto(workdir / "mosquitto")
    influx = Influxd(workdir / "influxd")
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        broker.start()
        influx.start()
        print(f"mosquitto pid {broker.proc.pid} on {broker.url}; influxd pid {influx.proc.pid} on {influx.url}")  # type: ignore[union-attr]
        influx_url = f"{influx.url}/{DB}"
        subprocess.run(["cloud-ingest", "setup", "--influx", influx_url], check=True)
        logs = {name: open(workdir / f"{name}.log", "ab") for name in ("cloud-ingest", "edge-gw")}  # noqa: SIM115
        procs.append(
            subprocess.Popen(
                [
                    "cloud-ingest",
                    "run",
                    "--mqtt",
                    broker.url,
                    "--influx",
                    influx_url,
                    "--status-file",
                    str(workdir / "cloud-ingest.status"),
                ],
                stdout=logs["cloud-ingest"],
                stderr=subprocess.STDOUT,
            )
        )
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "edge.cli",
                    "run",
                    "--source",
                    "simulate",
                    "--tags",
                    str(args.tags),
                    "--rate",
                    str(args.rate),
                    "--gateway-id",
                    "demo-gw",
                    "--mqtt",
                    broker.url,
                    "--db",
                    str(workdir / "edge.db"),
                    "--assume-synced",
                ],
                stdout=logs["edge-gw"],
                stderr=subprocess.STDOUT,
            )
        )
        print(f"cloud-ingest pid {procs[0].pid}, edge-gw pid {procs[1].pid}; logs in {workdir}/")
        deadline = time.monotonic() + (args.seconds if args.seconds is not None else float("inf"))
        next_show = time.monotonic() + min(30.0, (args.seconds or 60) / 2)
        while not stopping and time.monotonic() < deadline:
            for p in procs:
                if p.poll() is not None:
                    print(f"pid {p.pid} exited with {p.returncode}; see the logs in {workdir}/")
                    return 1
            if time.monotonic() >= next_show:
                show(influx, workdir)
                print("\n(Ctrl-C stops everything; the view refreshes every 30 s)", flush=True)
                next_show = time.monotonic() + 30
            time.sleep(0.2)
        return 0
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()
        broker.stop()
        influx.stop()
        print("stopped: " + ", ".join(str(p.pid) for p in procs) + " and the private mosquitto and influxd")


if __name__ == "__main__":
    sys.exit(main())
