"""Helpers of the `run --kafka` tests: readings produced straight to the real broker with the records contract
(cloud/kafka/records.py), consumers started as real `python -m cloud.cli run --kafka` processes, and the exact set
of points read back from the real InfluxDB."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka_server import Kafka
from servers import Influxd
from test_kafka_broker import producer

from cloud.kafka.records import Codec
from cloud.model import Point

REPO = Path(__file__).resolve().parents[2]
TOPIC = "ruuvi.readings"
DLQ = "ruuvi.dlq"
DB = "ruuvi"

# (mac, time_ns, seq): what identifies one stored point, and one field to show it is the right one.
Key = tuple[str, int, int]


def create_topics(kafka: Kafka, partitions: int = 4) -> None:
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    topics = [NewTopic(TOPIC, num_partitions=partitions, replication_factor=1),
              NewTopic(DLQ, num_partitions=1, replication_factor=1)]
    for future in admin.create_topics(topics).values():
        future.result(timeout=30)


def readings(n: int, tags: int = 50, start_ns: int | None = None) -> list[Point]:
    """n readings of `tags` tags, each tag's 1 ms apart; the seq field says which reading a point is."""
    start = start_ns if start_ns is not None else time.time_ns() - 3600 * 10**9
    return [Point("ruuvi", {"mac": mac(i % tags), "gateway": "gw-1"},
                  {"temperature": 20.0 + (i % 500) / 100, "humidity": 45.5, "seq": i},
                  start + (i // tags) * 1_000_000)
            for i in range(n)]


def mac(i: int) -> str:
    return f"cb:b8:33:4c:{i // 256:02x}:{i % 256:02x}"


def keys(points: Iterable[Point]) -> set[Key]:
    out = set()
    for p in points:
        seq = p.fields["seq"]
        assert isinstance(seq, int)
        out.add((p.tags["mac"], p.time_ns, seq))
    return out


def produce(kafka: Kafka, points: list[Point], *, kind: str = "reading", encoding: str = "json",
            p: Producer | None = None) -> int:
    """Produce the points as records (keyed by MAC, as the bridge does); wait for every acknowledgement."""
    prod = p or producer(kafka)
    codec = Codec(encoding)
    n = 0
    for rec in codec.records(points, kind):
        while True:
            try:
                prod.produce(TOPIC, key=rec.key, value=rec.value, headers=rec.headers)
                break
            except BufferError:
                prod.poll(0.05)
        n += 1
    assert prod.flush(60) == 0
    return n


@dataclass
class Consumer:
    """A `cloud-ingest run --kafka` process."""

    name: str
    proc: subprocess.Popen[bytes]
    workdir: Path

    @property
    def status_file(self) -> Path:
        return self.workdir / "status.json"

    @property
    def log(self) -> Path:
        return self.workdir / "consumer.log"

    def status(self) -> dict[str, Any]:
        try:
            return json.loads(self.status_file.read_bytes())  # type: ignore[no-any-return]
        except (FileNotFoundError, ValueError):
            return {}

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


def start_consumer(kafka: Kafka, influx_url: str, workdir: Path, name: str, *settings: str,
                   metrics_port: int = 0, bootstrap: str | None = None) -> Consumer:
    """`bootstrap`: another listener of `kafka` than its PLAINTEXT one (kafka.secure_bootstrap)."""
    workdir.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "cloud.cli", "run", "--kafka", bootstrap or kafka.bootstrap, "--influx", influx_url,
            "--client-id", name, "--status-file", str(workdir / "status.json"), "--metrics-port", str(metrics_port)]
    for s in ("log.level=info", "status.interval=0.2", "influx.backoff_max=0.5", "batch.max_interval=0.3",
              "rollups.enabled=false", "kafka.session_timeout=6", "kafka.revoke_timeout=5", *settings):
        args += ["--set", s]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env = {k: v for k, v in env.items() if not k.startswith("CLOUD_INGEST_")}
    with open(workdir / "consumer.log", "ab") as out:
        proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    return Consumer(name, proc, workdir)


def stored(influxd: Influxd) -> list[Key]:
    """Every stored point (with repeats, if a series held one twice, which InfluxDB cannot: that is the check)."""
    q = urllib.parse.urlencode({"q": 'SELECT "seq", "mac" FROM "ruuvi"', "db": DB, "epoch": "ns"})
    with urllib.request.urlopen(f"{influxd.url}/query?{q}", timeout=30) as r:
        res = json.loads(r.read())
    out: list[Key] = []
    for s in res["results"][0].get("series", []):
        out.extend((row[2], row[0], row[1]) for row in s["values"])
    return out


def count(influxd: Influxd) -> int:
    q = urllib.parse.urlencode({"q": 'SELECT count("seq") FROM "ruuvi"', "db": DB})
    try:
        with urllib.request.urlopen(f"{influxd.url}/query?{q}", timeout=30) as r:
            res = json.loads(r.read())
    except OSError:
        return -1
    series = res["results"][0].get("series")
    return int(series[0]["values"][0][1]) if series else 0


def metrics(port: int) -> dict[str, float]:
    """The consumer's Prometheus samples, `name{labels}` -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def assert_exact(influxd: Influxd, expected: set[Key]) -> None:
    """0 lost and 0 duplicate points: the stored rows are exactly the expected set, each once."""
    rows = stored(influxd)
    got = set(rows)
    assert len(rows) == len(got), f"{len(rows) - len(got)} duplicate rows"
    lost = expected - got
    extra = got - expected
    assert not lost and not extra, f"lost {len(lost)} (e.g. {sorted(lost)[:3]}), extra {len(extra)}"
    assert count(influxd) == len(expected)

