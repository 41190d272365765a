"""The gateway at a real load: N tags at one advert per second each, for minutes, and what `edge-gw run` costs.

    python bench/bench_load.py                         # 200 tags, 200 adverts/s, 600 s, simulated tags
    python bench/bench_load.py --seconds 60            # shorter
    python bench/bench_load.py --source bleak          # the real bleak path against the fake BlueZ (see below)

The chain is the real one: `edge-gw run` -> a private Mosquitto (the shipped broker settings) -> a real
`cloud-ingest run` -> a private influxd, with the gateway in its default `uplink.confirm = "cloud"` mode, so it
also handles the receiver's confirmations and deletes from its buffer, as in production. Every `--sample` seconds
it reads /proc/<pid>/stat (utime + stime) and /proc/<pid>/status (VmRSS, VmHWM) of the gateway process. The first
`--warmup` seconds (imports, the first buffer pages, the dedup table filling) are left out of the steady figures.

Printed: CPU % of one core over the steady window (CPU seconds / wall seconds), the spread of the per-sample CPU %
(p50, p90, max), steady RSS (median VmRSS over the steady window), peak RSS (VmHWM at the end), and that the
readings arrived (committed to the gateway buffer vs stored in InfluxDB). The receiver's, broker's and influxd's
own CPU are printed for context; they would not run on the gateway.

`--source bleak` runs the gateway's own BLE source (bleak, BlueZ's D-Bus API) against the fake BlueZ of the tests
(tests/edge/fakebluez.py: bluezoo on a private dbus-daemon), with a feeder process that makes every fake tag
advertise a fresh DF5 payload once per second. It needs dbus-daemon and bluezoo (installed for the BLE tests).

Not a test: the VM is shared; the load average at start and end is printed.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
for _p in (REPO, REPO / "tests"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import orjson  # noqa: E402
from servers import Influxd, Mosquitto, free_port  # noqa: E402

from bench.e2e.procs import (  # noqa: E402
    Receiver,
    broker_settings,
    clean_env,
    committed_total,
    cpu_seconds,
    gateway_cmd,
    influx_count,
    loadavg,
)


def status_kb(pid: int, key: str) -> int:
    """A `key:` line of /proc/<pid>/status in kB (VmRSS, VmHWM); 0 once the process is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def adverts_received(metrics_port: int) -> float:
    """The gateway's own count of adverts handed over by its source (Prometheus endpoint)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("edge_gw_adverts_received_total "):
                return float(line.split()[1])
    return 0.0


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else 0.0


def measure(proc: subprocess.Popen[bytes], seconds: float, sample: float, warmup: float,
            others: dict[str, int], metrics_port: int) -> dict[str, Any]:
    """Sample the gateway's CPU time and RSS until `seconds` have passed; the steady window starts after `warmup`."""
    pid = proc.pid
    t0 = time.monotonic()
    samples: list[tuple[float, float, int]] = []  # (monotonic, cpu seconds, VmRSS kB)
    others_start: dict[str, float] = {}
    adverts_start = 0.0
    while True:
        now = time.monotonic()
        if proc.poll() is not None:
            raise RuntimeError(f"edge-gw run exited with {proc.returncode}")
        samples.append((now, cpu_seconds(pid), status_kb(pid, "VmRSS")))
        if not others_start and now - t0 >= warmup:
            others_start = {name: cpu_seconds(p) for name, p in others.items()}
            adverts_start = adverts_received(metrics_port)
        if now - t0 >= seconds:
            break
        time.sleep(min(sample, max(0.0, seconds - (now - t0))))
    steady = [s for s in samples if s[0] - t0 >= warmup]
    (ta, ca, _), (tb, cb, _) = steady[0], steady[-1]
    per = [100 * (b[1] - a[1]) / (b[0] - a[0]) for a, b in itertools.pairwise(steady)]
    wall = tb - ta
    adverts = adverts_received(metrics_port) - adverts_start
    return {
        "adverts_steady": int(adverts), "adverts_per_s": round(adverts / wall, 1),
        "seconds_total": round(samples[-1][0] - t0, 1), "steady_seconds": round(wall, 1), "samples": len(steady),
        "cpu_s_steady": round(cb - ca, 2), "cpu_pct": round(100 * (cb - ca) / wall, 3),
        "cpu_pct_p50": round(pct(per, 0.5), 2), "cpu_pct_p90": round(pct(per, 0.9), 2),
        "cpu_pct_max": round(max(per), 2), "cpu_s_total": round(samples[-1][1], 2),
        "rss_kb_steady_median": int(statistics.median(s[2] for s in steady)),
        "rss_kb_steady_min": min(s[2] for s in steady), "rss_kb_steady_max": max(s[2] for s in steady),
        "rss_kb_peak_vmhwm": status_kb(pid, "VmHWM"),
        "others_cpu_pct": {name: round(100 * (cpu_seconds(p) - others_start.get(name, 0.0)) / wall, 2)
                           for name, p in others.items()},
    }


def buffered(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM readings").fetchone()[0])
    finally:
        conn.close()


def wait_metrics(proc: subprocess.Popen[bytes], port: int, timeout: float = 30.0) -> None:
    """Wait until the gateway serves its metrics, i.e. it has started."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            adverts_received(port)
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("edge-gw run did not start (no metrics endpoint)") from None
            time.sleep(0.1)


def wait_stored(influx_url: str, target: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    got = influx_count(influx_url, "^load$")
    while got < target and time.monotonic() < deadline:
        time.sleep(0.5)
        got = influx_count(influx_url, "^load$")
    return got


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"source": args.source, "tags": args.tags, "rate": args.rate,
                               "load_start": loadavg(), "cpu_model": cpu_model()}
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        work = Path(tmp)
        broker = Mosquitto(work / "mosquitto", extra=broker_settings()).start()
        influxd = Influxd(work / "influxd").start()
        cleanup: list[Any] = [broker.stop, influxd.stop]
        try:
            influx_url = f"{influxd.url}/ruuvi"
            subprocess.run([sys.executable, "-c", "from cloud.cli import main; main()", "setup", "--influx",
                            influx_url], check=True, capture_output=True, env=clean_env())
            rx = Receiver(work, broker.url, influx_url, {"batch.max_interval": "1s"}).start()
            cleanup.insert(0, rx.stop)
            db = work / "load.db"
            env = clean_env()
            metrics_port = free_port()
            if args.source == "simulate":
                cmd = gateway_cmd("load", broker.url, db, "--tags", str(args.tags), "--rate", str(args.rate))
            else:
                from bench.load_bleak import start_fake_bluez
                cmd, env, stop_bluez = start_fake_bluez(work, broker.url, db, args.tags, args.rate)
                cleanup.insert(0, stop_bluez)
            cmd += ["--metrics-port", str(metrics_port)]
            with open(work / "edge-gw.log", "ab") as log:
                gw = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
            try:
                assert broker.proc is not None and influxd.proc is not None and rx.proc is not None
                others = {"cloud-ingest run": rx.proc.pid, "mosquitto": broker.proc.pid, "influxd": influxd.proc.pid}
                wait_metrics(gw, metrics_port)
                results["gateway"] = measure(gw, args.seconds, args.sample, args.warmup, others, metrics_port)
            finally:
                gw.terminate()
                gw.wait(60)
            committed = committed_total(db)
            left = buffered(db)  # sent at the next start; not expected in InfluxDB now
            stored = wait_stored(influxd.url, committed - left, 60)
            results["delivery"] = {"committed": committed, "left_in_buffer": left, "stored": stored,
                                   "readings_per_s": round(committed / results["gateway"]["seconds_total"], 1)}
            if args.keep:
                log_text = (work / "edge-gw.log").read_text()
                args.keep.write_text(log_text)
        finally:
            for stop in cleanup:
                stop()
    results["load_end"] = loadavg()
    return results


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"


def report(r: dict[str, Any]) -> None:
    g, d = r["gateway"], r["delivery"]
    print(f"source {r['source']}: {r['tags']} tags, {r['rate']:g} adverts/s, {g['seconds_total']} s "
          f"({g['steady_seconds']} s steady, {g['samples']} samples); {r['cpu_model']}, {os.cpu_count()} cores")
    print(f"load average: start {r['load_start']}, end {r['load_end']}")
    print(f"edge-gw run CPU: {g['cpu_pct']:.3f} % of one core ({g['cpu_s_steady']} CPU s over the steady window); "
          f"per sample p50 {g['cpu_pct_p50']} %, p90 {g['cpu_pct_p90']} %, max {g['cpu_pct_max']} %")
    print(f"edge-gw run RSS: steady median {g['rss_kb_steady_median'] / 1024:.1f} MiB "
          f"(min {g['rss_kb_steady_min'] / 1024:.1f}, max {g['rss_kb_steady_max'] / 1024:.1f}), "
          f"peak (VmHWM) {g['rss_kb_peak_vmhwm'] / 1024:.1f} MiB")
    print(f"adverts received by the gateway over the steady window: {g['adverts_steady']} "
          f"({g['adverts_per_s']}/s)")
    print(f"delivered: {d['committed']} readings committed ({d['readings_per_s']}/s), {d['stored']} in InfluxDB, "
          f"{d['left_in_buffer']} left in the buffer at stop")
    print("others, CPU % of one core over the steady window: "
          + ", ".join(f"{k} {v} %" for k, v in g["others_cpu_pct"].items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", choices=["simulate", "bleak"], default="simulate")
    ap.add_argument("--tags", type=int, default=200)
    ap.add_argument("--rate", type=float, help="adverts/s in total (default: one per tag per second)")
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--warmup", type=float, default=30.0, help="seconds left out of the steady figures")
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between /proc samples")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    ap.add_argument("--keep", type=Path, help="copy the gateway's log to this file")
    args = ap.parse_args()
    if args.rate is None:
        args.rate = float(args.tags)
    r = run(args)
    report(r)
    if args.json:
        args.json.write_text(orjson.dumps(r, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
