"""`make demo`: the whole pipeline on this machine, on simulated tags.

Starts a private Mosquitto and InfluxDB on free loopback ports with their data under ./.demo/, runs
`cloud-ingest setup` and `cloud-ingest run`, and `edge-gw run --source simulate`. After ~30 s it shows
`edge-gw status`, the newest values per tag and the hourly rollups read back from InfluxDB. Ctrl-C stops
everything it started, by PID. `--seconds N` stops by itself after N seconds (used by the tests).

`--kafka` (`make demo KAFKA=1`): the Kafka path of docs/kafka.md instead of the plain receiver. A private Kafka broker
(tests/kafka_server.py, jars from `make install` or `scripts/install-deps.sh --demo --kafka`) also starts;
`cloud-ingest bridge` takes MQTT in and produces to Kafka, and `cloud-ingest run --kafka` consumes and writes to
InfluxDB. The view also shows the consumer group's lag per partition.
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
# cloud-ingest's [kafka] defaults (cloud/config.py), which the bridge produces to and the consumer group reads.
KAFKA_TOPIC, KAFKA_DLQ, KAFKA_GROUP, KAFKA_PARTITIONS = "ruuvi.readings", "ruuvi.dlq", "cloud-ingest", 6


def influx_query(influx: Influxd, q: str) -> list[dict[str, object]]:
    url = f"{influx.url}/query?" + urllib.parse.urlencode({"db": DB, "q": q})
    with urllib.request.urlopen(url, timeout=10) as r:
        result = json.loads(r.read())["results"][0]
    return list(result.get("series", []))


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def create_topics(bootstrap: str) -> None:
    """The two topics, as the kafka role makes them (the bridge would make missing ones too)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    have = admin.list_topics(timeout=30).topics
    new = [NewTopic(t, n, 1) for t, n in ((KAFKA_TOPIC, KAFKA_PARTITIONS), (KAFKA_DLQ, 1)) if t not in have]
    for f in admin.create_topics(new).values() if new else ():
        f.result(30)


def kafka_lag(bootstrap: str) -> str:
    """The consumer group's committed offset, the end of each partition and the difference (records not yet written
    to InfluxDB), read without joining the group."""
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": KAFKA_GROUP, "enable.auto.commit": False})
    try:
        parts = [TopicPartition(KAFKA_TOPIC, p) for p in range(KAFKA_PARTITIONS)]
        rows = [["partition", "committed", "end", "lag"]]
        total = 0
        for attempt in range(20):
            try:
                committed = c.committed(parts, timeout=10)
                break
            except KafkaException as e:
                # Just after the broker starts, the group coordinator is still loading: asked again, it answers.
                err = e.args[0]
                loading = err.code() in (KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                                         KafkaError.COORDINATOR_NOT_AVAILABLE)
                if not (loading or err.retriable()) or attempt == 19:
                    raise
                time.sleep(0.5)
        for tp in committed:
            _, end = c.get_watermark_offsets(tp, timeout=10)
            done = tp.offset if tp.offset >= 0 else 0
            total += end - done
            rows.append([str(tp.partition), str(tp.offset) if tp.offset >= 0 else "-", str(end), str(end - done)])
        return table(rows) + f"\ntotal lag: {total} records"
    except Exception as e:  # the view goes on without the lag
        return f"(lag not available: {e})"
    finally:
        c.close()


def show(influx: Influxd, workdir: Path, kafka_bootstrap: str | None = None) -> None:
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
    if kafka_bootstrap:
        if (workdir / "bridge.status").exists():
            print("\n=== cloud-ingest bridge status", flush=True)
            subprocess.run(["cloud-ingest", "status", "--status-file", str(workdir / "bridge.status")], check=False)
        print(f"\n=== Kafka consumer lag (group {KAFKA_GROUP}, topic {KAFKA_TOPIC})")
        print(kafka_lag(kafka_bootstrap), flush=True)
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
    ap.add_argument("--kafka", action="store_true",
                    help="the Kafka path: MQTT -> cloud-ingest bridge -> Kafka -> cloud-ingest run --kafka -> InfluxDB")
    args = ap.parse_args()
    if args.kafka:
        for name, cmd in (("bridge", ["bridge", "--help"]), ("run --kafka", ["run", "--kafka", "x:1", "--help"])):
            if subprocess.run(["cloud-ingest", *cmd], capture_output=True, check=False).returncode != 0:
                print(f"this cloud-ingest has no `{name}` yet: the Kafka demo needs the bridge and the "
                      "consumer of issue 11 (docs/kafka.md)", file=sys.stderr)
                return 1
    workdir = REPO / ".demo"
    workdir.mkdir(exist_ok=True)
    # The simulated fleet sends the same measurements at every start (its stream depends only on the seed). The
    # receivers' dedup memory, kept across restarts in <status>.dedup.sqlite, would take every one of them for a
    # copy of the last run's and write nothing: it starts afresh. InfluxDB keeps the earlier runs' points.
    for memory in workdir.glob("*.dedup.sqlite*"):
        memory.unlink()
    procs: list[subprocess.Popen[bytes]] = []
    broker = Mosquitto(workdir / "mosquitto")
    influx = Influxd(workdir / "influxd")
    kafka = None
    if args.kafka:
        from kafka_server import Kafka

        shutil.rmtree(workdir / "kafka", ignore_errors=True)  # a fresh broker: its ports are new at every start
        kafka = Kafka(workdir / "kafka")
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
        names = ("cloud-ingest", "edge-gw", *(("cloud-ingest-bridge",) if kafka else ()))
        logs = {name: open(workdir / f"{name}.log", "ab") for name in names}  # noqa: SIM115
        if kafka is None:
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
        else:
            kafka.start()
            print(f"kafka pid {kafka.proc.pid} on {kafka.bootstrap}")  # type: ignore[union-attr]
            create_topics(kafka.bootstrap)
            # The consumer: Kafka -> InfluxDB. Settings outside the two commands' flags go through the environment
            # (CLOUD_INGEST_<SECTION>_<KEY>): the demo's broker, should it talk MQTT, under a client id of its own.
            env = {**os.environ, "CLOUD_INGEST_MQTT_URL": broker.url, "CLOUD_INGEST_MQTT_CLIENT_ID": "demo-consumer"}
            procs.append(
                subprocess.Popen(
                    ["cloud-ingest", "run", "--kafka", kafka.bootstrap, "--influx", influx_url,
                     "--status-file", str(workdir / "cloud-ingest.status")],
                    stdout=logs["cloud-ingest"], stderr=subprocess.STDOUT, env=env,
                )
            )
            # The bridge: MQTT -> Kafka, with its own status file and no second metrics port.
            env = {**os.environ, "CLOUD_INGEST_STATUS_FILE": str(workdir / "bridge.status"),
                   "CLOUD_INGEST_METRICS_PORT": "0"}
            procs.append(
                subprocess.Popen(
                    ["cloud-ingest", "bridge", "--mqtt", broker.url, "--kafka", kafka.bootstrap],
                    stdout=logs["cloud-ingest-bridge"], stderr=subprocess.STDOUT, env=env,
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
        if kafka is None:
            print(f"cloud-ingest pid {procs[0].pid}, edge-gw pid {procs[1].pid}; logs in {workdir}/")
        else:
            print(f"cloud-ingest run --kafka pid {procs[0].pid}, cloud-ingest bridge pid {procs[1].pid}, "
                  f"edge-gw pid {procs[2].pid}; logs in {workdir}/")
        deadline = time.monotonic() + (args.seconds if args.seconds is not None else float("inf"))
        next_show = time.monotonic() + min(30.0, (args.seconds or 60) / 2)
        while not stopping and time.monotonic() < deadline:
            for p in procs:
                if p.poll() is not None:
                    print(f"pid {p.pid} exited with {p.returncode}; see the logs in {workdir}/")
                    return 1
            if time.monotonic() >= next_show:
                show(influx, workdir, kafka.bootstrap if kafka else None)
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
        if kafka is not None:
            kafka.stop()
        servers = "mosquitto, influxd and kafka" if kafka else "mosquitto and influxd"
        print("stopped: " + ", ".join(str(p.pid) for p in procs) + f" and the private {servers}")


if __name__ == "__main__":
    sys.exit(main())
