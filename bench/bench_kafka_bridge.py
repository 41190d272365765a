"""`cloud-ingest bridge` on its own: how fast it drains a pre-loaded MQTT queue into Kafka, per record kind (one
record per reading, or per tag and write batch) and encoding (JSON, Avro), all four in the same run.

One private Mosquitto and one private Kafka 4.x broker (tests/servers.py, tests/kafka_server.py) serve every variant.
For each one, the bridge (a real `cloud-ingest bridge` process, its own client id and topic) subscribes once and
stops; a paho publisher then queues N readings for its session as edge-gw batches (100 readings of 1000 tags per
message); then the bridge starts again and drains them. The clock runs from the first reading it reports produced
(its status file, read every 50 ms) to the last, so the process start, the topic check and the connection are not
counted; CPU is the bridge process's user + system time over the whole run (start included).

    python bench/bench_kafka_bridge.py                  # 200,000 readings per variant
    python bench/bench_kafka_bridge.py --readings 500000
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent / "tests" / "cloud"))

from kafka_server import Kafka  # noqa: E402
from servers import Mosquitto, cpu_seconds, stop_pid  # noqa: E402
from test_receiver_support import Publisher, edge_batch, reading  # noqa: E402

VARIANTS = [("reading", "json"), ("reading", "avro"), ("batch", "json"), ("batch", "avro")]
PER_MESSAGE = 100
TAGS = 1000


def bridge(mq: Mosquitto, kafka: Kafka, tmp: Path, record: str, encoding: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUD_INGEST_")}
    args = ["bridge", "--mqtt", mq.url, "--kafka", kafka.bootstrap, "--client-id", f"bench-{record}-{encoding}",
            "--metrics-port", "0", "--status-file", str(tmp / "status.json"),
            "--set", f"kafka.record={record}", "--set", f"kafka.encoding={encoding}",
            "--set", f"kafka.topic=bench.{record}.{encoding}",
            "--set", f"kafka.dlq_topic=bench.dlq.{record}.{encoding}",
            "--set", "kafka.partitions=6", "--set", "status.interval=0.05", "--set", "dedup.enabled=false"]
    out = open(tmp / "bridge.log", "ab")  # noqa: SIM115 - the child keeps its own descriptor
    with out:
        return subprocess.Popen([sys.executable, "-c", "from cloud.cli import main; main()", *args],
                                stdout=out, stderr=subprocess.STDOUT, env=env)


def status(tmp: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((tmp / "status.json").read_bytes()))
    except (OSError, ValueError):
        return {}


def wait(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def run_variant(mq: Mosquitto, kafka: Kafka, tmp: Path, record: str, encoding: str, n: int) -> dict[str, float]:
    tmp.mkdir()
    log = tmp / "bridge.log"
    p = bridge(mq, kafka, tmp, record, encoding)  # subscribes once: the session exists, the broker queues for it
    wait(lambda: log.exists() and b"subscribed to" in log.read_bytes(), 60, "bridge subscribed")
    stop_pid(p, signal.SIGTERM, 30)
    (tmp / "status.json").unlink()
    t0 = int(time.time()) - 3600
    pub = Publisher(mq.port, client_id=f"bench-pub-{record}-{encoding}")
    msgs = []
    for m in range(n // PER_MESSAGE):
        rs = [reading((m * PER_MESSAGE + i) % TAGS, m, (t0 + m) * 1_000_000_000 + i * 1000) for i in range(PER_MESSAGE)]
        msgs.append(("edge-gw/gw-bench/batch", edge_batch("gw-bench", m + 1, rs)))
    pub.publish(msgs, timeout=300)
    pub.close()
    p = bridge(mq, kafka, tmp, record, encoding)
    first_t, first_n = 0.0, 0
    while True:
        written = status(tmp).get("written", 0)
        now = time.perf_counter()
        if written and not first_t:
            first_t, first_n = now, written
        if written >= n:
            break
        if p.poll() is not None:
            raise RuntimeError(f"bridge exited: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    cpu = cpu_seconds(p.pid)
    stop_pid(p, signal.SIGTERM, 30)
    seconds = now - first_t
    return {"rate": (n - first_n) / seconds, "seconds": seconds, "cpu_per_100k": cpu / n * 100_000}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readings", type=int, default=200_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        mq = Mosquitto(tmp / "mq").start()
        kafka = Kafka(tmp / "kafka", heap="512m").start()
        try:
            print(f"{args.readings:,} readings per variant, {PER_MESSAGE} per MQTT message, {TAGS} tags, 6 partitions")
            for record, encoding in VARIANTS:
                r = run_variant(mq, kafka, tmp / f"{record}-{encoding}", record, encoding, args.readings)
                print(f"record={record:<8} encoding={encoding:<5} {r['rate']:>9,.0f} readings/s "
                      f"({r['seconds']:.2f} s), bridge CPU {r['cpu_per_100k']:.2f} s per 100k readings, "
                      f"load average {os.getloadavg()[0]:.1f}", flush=True)
        finally:
            kafka.stop()
            mq.stop()


if __name__ == "__main__":
    main()
