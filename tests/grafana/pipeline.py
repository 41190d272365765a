"""A real influxd and VictoriaMetrics filled by the real pipeline, once per session, for the dashboard queries.

- cloud-ingest (`cloud-ingest setup`, then `cloud-ingest run`) reads a private Mosquitto and writes a private influxd.
- Live data: the real `edge-gw run --source simulate` publishes to that broker (10 virtual tags, one a Ruuvi Air).
- History: three days of wire-format batches (docs/wire-format.md) built with edge.wire from the same virtual tags,
  published as a gateway whose clock was right but whose uplink was down; cloud-ingest's late-data re-runs then
  compute the hourly and daily rollups for them, as they would after a real outage.
- VictoriaMetrics scrapes cloud-ingest's and edge-gw's /metrics every second, for the PromQL panels.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import plot_dashboards as pd
from servers import Influxd, Mosquitto, _wait_tcp, free_port, have, stop_pid

LIVE_GATEWAY = "gw-live-1"
HISTORY_GATEWAY = "gw-history-1"
TAGS, SEED = 10, 1
HISTORY_DAYS = 3
HISTORY_STEP_S = 600


@dataclass
class Filled:
    sources: pd.Sources
    df5_mac: str
    air_mac: str
    workdir: Path
    history_readings: int


def _py(module: str) -> list[str]:
    return [sys.executable, "-c", f"from {module} import main; main()"]


def _history_batches(now_ns: int) -> tuple[list[bytes], int]:
    from core.ruuvi import decode
    from edge.model import Reading
    from edge.sources.simulate import Fleet
    from edge.wire import encode_batch

    fleet = Fleet(TAGS, SEED)
    for tag in fleet.tags:
        # The live gateway runs the same fleet (same seed): its first measurements would carry the history's first
        # sequence numbers and values, and the receiver's dedup would rightly drop them as one measurement heard by
        # two gateways whenever both arrive within its window (on a loaded machine, they do).
        tag.seq = (tag.seq + 30_000) % (0xFFFFFF if tag.air else 0xFFFF)
    step = HISTORY_STEP_S * 1_000_000_000
    start = now_ns - HISTORY_DAYS * 86400 * 1_000_000_000
    readings: list[Reading] = []
    t = start - start % step
    while t < now_ns - 15 * 60 * 1_000_000_000:  # stop before the live data starts
        for tag in fleet.tags:
            tag.measure(fleet.rng)
            a = tag.advert
            readings.append(Reading(a.mac, t, 0, True, a.rssi, a.payload[0], a.payload, decode(a.payload)))
        t += step
    starts = range(0, len(readings), 500)
    batches = [encode_batch(HISTORY_GATEWAY, i, readings[n:n + 500]) for i, n in enumerate(starts)]
    return batches, len(readings)


def _publish(url_port: int, batches: list[bytes]) -> None:
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=HISTORY_GATEWAY)
    c.connect("127.0.0.1", url_port)
    c.loop_start()
    try:
        infos = [c.publish(f"edge-gw/{HISTORY_GATEWAY}/batch", b, qos=1) for b in batches]
        for info in infos:
            info.wait_for_publish(30)
    finally:
        c.loop_stop()
        c.disconnect()


def _count(db: Influxd, q: str) -> int:
    rows = db.query(q, "ruuvi")["results"][0].get("series", [])
    return int(rows[0]["values"][0][1]) if rows else 0


@pytest.fixture(scope="session")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Filled]:
    for binary in ("influxd", "mosquitto", "victoria-metrics"):
        if not have(binary):
            pytest.skip(f"{binary} is not installed")
    work = tmp_path_factory.mktemp("grafana")
    procs: list[subprocess.Popen[bytes]] = []
    db = Influxd(work / "influxd").start()
    broker = Mosquitto(work / "mosquitto").start()
    try:
        setup = subprocess.run([*_py("cloud.cli"), "setup", "--influx", f"{db.url}/ruuvi"], capture_output=True,
                               text=True, check=False, timeout=60)
        assert setup.returncode == 0, setup.stderr
        ingest_metrics, edge_metrics, vm_port = free_port(), free_port(), free_port()
        with open(work / "cloud-ingest.log", "ab") as log:  # the child keeps its own descriptor
            ingest = subprocess.Popen(
                [*_py("cloud.cli"), "run", "--mqtt", broker.url, "--influx", f"{db.url}/ruuvi", "--metrics-port",
                 str(ingest_metrics), "--status-file", str(work / "status.json"), "--set", "batch.max_interval=200ms",
                 "--set", "rollups.settle=1s"], stdout=log, stderr=subprocess.STDOUT)
        procs.append(ingest)
        _wait_tcp(ingest_metrics, ingest, work / "cloud-ingest.log", timeout=20)

        scrape = work / "scrape.yml"
        scrape.write_text(
            "scrape_configs:\n"
            f"  - job_name: cloud-ingest\n    scrape_interval: 1s\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{ingest_metrics}']\n"
            f"  - job_name: edge-gw\n    scrape_interval: 1s\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{edge_metrics}']\n")
        with open(work / "vm.log", "ab") as vm_log:  # the child keeps its own descriptor
            vm = subprocess.Popen(
                ["victoria-metrics", f"-httpListenAddr=127.0.0.1:{vm_port}", f"-storageDataPath={work / 'vm'}",
                 "-retentionPeriod=1", f"-promscrape.config={scrape}", "-search.latencyOffset=0s",
                 "-search.disableCache"], stdout=vm_log, stderr=subprocess.STDOUT)
        procs.append(vm)
        _wait_tcp(vm_port, vm, work / "vm.log", timeout=20)

        # The live gateway runs for the whole session, so the 15 s-step PromQL range queries see its metrics.
        with open(work / "edge-gw.log", "ab") as gw_log:  # the child keeps its own descriptor
            gw = subprocess.Popen(
                [*_py("edge.cli"), "run", "--mqtt", broker.url, "--gateway-id", LIVE_GATEWAY, "--db",
                 str(work / "buffer.db"), "--source", "simulate", "--tags", str(TAGS), "--seed", str(SEED),
                 "--rate", "40", "--assume-synced", "--metrics-port", str(edge_metrics)],
                stdout=gw_log, stderr=subprocess.STDOUT)
        procs.append(gw)
        _wait_tcp(edge_metrics, gw, work / "edge-gw.log", timeout=20)

        batches, history = _history_batches(time.time_ns())
        # One message that is not JSON: cloud-ingest dead-letters it, which feeds the DLQ-rate panel.
        _publish(broker.port, [*batches, b"{not json"])

        # Every history reading written, the late-data rollups re-run for its finished hours and days, live data
        # flowing, and enough scrapes that a Grafana-like 15 s step finds samples. About 30 s alone; the bound is for
        # a machine the other test workers load.
        deadline = time.monotonic() + 240
        ready: dict[str, bool] = {}
        per_gateway = 'SELECT count("rssi") FROM "raw"."ruuvi" WHERE "gateway" = \'{}\''
        vm_url = f"http://127.0.0.1:{vm_port}"
        min_daily_rows = TAGS * (HISTORY_DAYS - 1)
        while time.monotonic() < deadline:
            ready = {
                "history": _count(db, per_gateway.format(HISTORY_GATEWAY)) == history,
                "live": _count(db, per_gateway.format(LIVE_GATEWAY)) > 0,
                "daily": _count(db, 'SELECT count("count_rssi") FROM "rollups"."ruuvi_1d"') >= min_daily_rows,
                "prometheus": all(pd.has_data(pd.run_prometheus(vm_url, q, pd.TimeRange("10m"), 15.0))
                                  for q in ("cloud_ingest_lag_last_seconds", "edge_gw_buffer_rows",
                                            "rate(cloud_ingest_dead_letters_total[1m])")),
            }
            if all(ready.values()):
                break
            time.sleep(1)
        assert all(ready.values()), (ready, _count(db, per_gateway.format(HISTORY_GATEWAY)), history,
                                     (work / "cloud-ingest.log").read_text()[-3000:])

        from edge.sources.simulate import Fleet

        tags = Fleet(TAGS, SEED).tags
        yield Filled(pd.Sources(db.url, f"http://127.0.0.1:{vm_port}"), tags[0].mac,
                     next(t.mac for t in tags if t.air), work, history)
    finally:
        # Signal everything first, then wait: each one's shutdown (edge-gw's final commit, cloud-ingest's last write
        # and rollup flush) overlaps the others' instead of adding up.
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            stop_pid(p)
        broker.stop()
        db.stop()

