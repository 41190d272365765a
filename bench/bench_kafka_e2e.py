"""The Kafka path end to end, in one run on one machine: MQTT -> `cloud-ingest bridge` -> Kafka -> `cloud-ingest run
--kafka` -> InfluxDB, against InfluxDB's raw /write ceiling measured in the same run.

1. The ceiling (bench_influx_ceiling.py), before the first drain and after each one; a drain's ratio uses the
   higher of the ceilings right before and right after it (this VM's speed moves by minutes), and the run's
   highest too.
2. Drains: N readings (edge-gw batches of 500 from 10 gateways x 100 tags) pre-loaded into the bridge's persistent
   MQTT session; then the consumers and the bridge start, and the clock runs from the bridge's start to the last
   consumer write. Once with one consumer, once with two in one group; each phase has its own Kafka topic and
   database, so neither sees the other's records.
3. Latency at a steady rate (default 5k readings/s): from each reading's receive time to the poll of InfluxDB that
   first sees it, through the bridge, Kafka and one consumer (bench_ingest.latency).

Private Mosquitto (the shipped snippet), Kafka 4.4 (tests/kafka_server.py) and influxd on free loopback ports; the
daemons are the real commands in their own processes.

    python bench/bench_kafka_e2e.py                       # 1M readings per drain, 10 s of latency
    python bench/bench_kafka_e2e.py --readings 200000 --record batch --encoding avro
    python bench/bench_kafka_e2e.py --record batch --consumers 2 --compare kafka.assignment=range --latency-seconds 3
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "cloud"), str(ROOT / "bench")]

from bench_influx_ceiling import influx_ceiling  # noqa: E402
from bench_ingest import ReceiverProcess, edge_messages, latency, pct, setting  # noqa: E402
from kafka_server import Kafka  # noqa: E402
from servers import Influxd, Mosquitto, cpu_seconds  # noqa: E402
from test_receiver_support import Publisher, broker_settings  # noqa: E402

S = 1_000_000_000


class Pipeline:
    """One bridge and `consumers` consumers of one Kafka topic, writing to one database."""

    def __init__(self, work: Path, broker: Mosquitto, kafka: Kafka, influx_url: str, name: str, consumers: int,
                 settings: dict[str, str], bridge_settings: dict[str, str] | None = None) -> None:
        kafka_settings = {**settings, "kafka.topic": f"ruuvi.readings.{name}", "kafka.group": f"ingest-{name}"}
        self.bridge = ReceiverProcess(work, broker.port, influx_url, f"bridge-{name}",
                                      {**kafka_settings, **(bridge_settings or {})}, command=[
            "bridge", "--mqtt", f"mqtt://127.0.0.1:{broker.port}", "--kafka", kafka.bootstrap])
        self.consumers = [
            ReceiverProcess(work, broker.port, influx_url, f"consumer-{name}-{k}", kafka_settings,
                            command=["run", "--kafka", kafka.bootstrap, "--influx", influx_url])
            for k in range(consumers)]

    def prepare(self) -> Pipeline:
        """Start and stop the bridge once: its persistent MQTT session exists (the broker queues for it) and it
        created the Kafka topics, which the consumers need to subscribe."""
        self.bridge.start().stop()
        return self

    def start(self) -> Pipeline:
        try:
            for c in self.consumers:
                c.start()
            self.bridge.start()
        except BaseException:
            self.stop()  # none of them outlives a failed start
            raise
        return self

    def stop(self) -> None:
        self.bridge.stop()
        for c in self.consumers:
            c.stop()


def pids(procs: dict[str, subprocess.Popen[bytes] | None]) -> dict[str, int]:
    return {name: p.pid for name, p in procs.items() if p is not None}


def cpu_of(procs: dict[str, int]) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in procs.items()}


def drain(work: Path, broker: Mosquitto, kafka: Kafka, influxd: Influxd, name: str, readings: int, consumers: int,
          settings: dict[str, str], t0: int, bridge_settings: dict[str, str] | None = None,
          ) -> tuple[float, int, dict[str, float]]:
    """Readings/s from the bridge's start to the last consumer write, the points written, and each process's CPU
    µs per reading over that span (the consumers' summed; the daemons' start-up not included)."""
    influxd.query(f'CREATE DATABASE "{name}"', method="POST")
    p = Pipeline(work, broker, kafka, f"{influxd.url}/{name}", name, consumers, settings, bridge_settings)
    p.prepare()
    pub = Publisher(broker.port, client_id=f"pub-{name}")
    pub.publish(edge_messages(readings, 500, 10, t0), timeout=900)
    pub.close()
    p.start()
    procs = pids({"influxd": influxd.proc, "kafka": kafka.proc, "mosquitto": broker.proc, "bridge": p.bridge.proc,
                  **{f"consumer{k}": c.proc for k, c in enumerate(p.consumers)}})
    before = cpu_of(procs)
    try:
        deadline = time.monotonic() + 1800
        progress, moved = -1, time.monotonic()
        while True:
            sts = [c.status() or {} for c in p.consumers]
            written = sum(st.get("written", 0) + st.get("duplicates", 0) for st in sts)
            if written >= readings:
                break
            if written != progress:
                progress, moved = written, time.monotonic()
            if time.monotonic() > deadline or time.monotonic() - moved > 120:
                b = p.bridge.status() or {}
                raise RuntimeError(f"{name}: only {written} of {readings} written, none for 120 s; the bridge "
                                   f"received {b.get('received_readings')} readings and holds "
                                   f"{b.get('inflight_messages')} messages unacknowledged")
            time.sleep(0.05)
        after = cpu_of(procs)
        bridge = p.bridge.status() or {}
        span = max(st["last_write_ns"] for st in sts) - bridge["started_ns"]
        cpu = {n: (after[n] - before[n]) / readings * 1e6 for n in procs if not n.startswith("consumer")}
        cpu["consumers"] = sum(after[n] - before[n] for n in procs if n.startswith("consumer")) / readings * 1e6
        return readings / (span / S), written, cpu
    finally:
        p.stop()


def ceiling_of(influxd: Influxd, db: str, points: int) -> float:
    """InfluxDB's raw /write ceiling now, printed with influxd's CPU per point."""
    assert influxd.proc is not None
    cpu0 = cpu_seconds(influxd.proc.pid)
    ceiling = influx_ceiling(f"{influxd.url}/{db}", points=points)
    influx_us = (cpu_seconds(influxd.proc.pid) - cpu0) / points * 1e6
    print(f"InfluxDB raw /write ceiling: {ceiling:,.0f} points/s; influxd's CPU {influx_us:.1f} µs per point "
          f"= {ceiling * influx_us / 1e6:.2f} cores")
    return ceiling


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readings", type=int, default=1_000_000)
    ap.add_argument("--ceiling-points", type=int, default=200_000)
    ap.add_argument("--record", default="reading", help="kafka.record: reading or batch")
    ap.add_argument("--encoding", default="json", help="kafka.encoding: json or avro")
    ap.add_argument("--latency-rate", type=int, default=5000)
    ap.add_argument("--latency-seconds", type=float, default=10.0)
    ap.add_argument("--latency-interval", default="0.1", help="batch.max_interval of bridge and consumer")
    ap.add_argument("--skip-drain", action="store_true")
    ap.add_argument("--consumers", default="1,2", help="the drains: consumers in the group, comma-separated")
    ap.add_argument("--set", dest="extra", action="append", default=[], type=setting, metavar="KEY=VALUE",
                    help="a setting of bridge and consumers (repeatable)")
    ap.add_argument("--bridge-set", dest="bridge_extra", action="append", default=[], type=setting,
                    metavar="KEY=VALUE", help="a setting of the bridge only (repeatable)")
    ap.add_argument("--compare", action="append", default=[], type=setting, metavar="KEY=VALUE",
                    help="run each drain again right after with this setting too (repeatable), for an A/B")
    args = ap.parse_args()
    settings = {"kafka.record": args.record, "kafka.encoding": args.encoding, "kafka.partitions": "6",
                "dedup.max_entries": "2000000", **dict(args.extra)}
    compare = dict(args.compare)

    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        influxd = Influxd(work / "influxd").start()
        broker = Mosquitto(work / "mosquitto", extra=broker_settings()).start()
        kafka = Kafka(work / "kafka", heap="1g").start()
        try:
            assert influxd.proc is not None
            t0 = time.time_ns() - 6 * 3600 * S
            ceilings = [ceiling_of(influxd, "ceiling0", args.ceiling_points)]
            runs = [(int(n), "", settings) for n in args.consumers.split(",")] if not args.skip_drain else []
            if compare:
                label = " ".join(f"{k}={v}" for k, v in args.compare)
                runs = [r for n, _, st in runs for r in ((n, "", st), (n, f", {label}", {**st, **compare}))]
            results: list[tuple[str, float]] = []
            for k, (n, label, st) in enumerate(runs):
                rate, written, cpu = drain(work, broker, kafka, influxd, f"drain{k}", args.readings, n, st,
                                           t0 + (k + 1) * 3600 * S, dict(args.bridge_extra))
                name = f"{n} consumer(s){label}"
                results.append((name, rate))
                print(f"drain of {args.readings:,} readings MQTT -> bridge -> Kafka -> {n} consumer(s) -> "
                      f"InfluxDB ({args.record} records, {args.encoding}{label}): {rate:,.0f} readings/s "
                      f"(written {written:,})")
                print("  CPU µs per reading: " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items())
                      + f"; all {sum(cpu.values()):.1f} = {rate * sum(cpu.values()) / 1e6:.2f} cores")
                ceilings.append(ceiling_of(influxd, f"ceiling{k + 1}", args.ceiling_points))
            for k, (name, rate) in enumerate(results):
                near = max(ceilings[k], ceilings[k + 1])
                print(f"  {name}: {rate / near:.0%} of the higher ceiling right before and after it ({near:,.0f}), "
                      f"{rate / max(ceilings):.0%} of the run's highest ({max(ceilings):,.0f})")

            influxd.query('CREATE DATABASE "latency"', method="POST")
            lat = {**settings, "batch.max_interval": args.latency_interval, "batch.writers": "1"}
            url = f"{influxd.url}/latency"
            bridge_lat = dict(args.bridge_extra)  # --bridge-set holds in every phase, this one too
            seen = latency(work, broker, influxd, "latency", args.latency_rate, args.latency_seconds, lat,
                           start=lambda: Pipeline(work, broker, kafka, url, "latency", 1, lat,
                                                  bridge_lat).prepare().start())
            print(f"latency receive time -> queryable through bridge, Kafka and 1 consumer at {args.latency_rate} "
                  f"readings/s for {args.latency_seconds:g} s (batch.max_interval={args.latency_interval} s on "
                  f"both, {len(seen)} sampled points): p50 {pct(seen, 50) * 1000:.0f} ms, p99 "
                  f"{pct(seen, 99) * 1000:.0f} ms, max {max(seen) * 1000:.0f} ms")
        finally:
            kafka.stop()
            broker.stop()
            influxd.stop()


if __name__ == "__main__":
    main()
