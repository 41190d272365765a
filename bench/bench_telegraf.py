"""cloud-ingest against Telegraf (mqtt_consumer -> influxdb), in one run, on one private Mosquitto and one influxd.

Two workloads, each with the same readings for both tools:
- flat: flat sensor JSON (cloud/formats/flat.py), one reading per message, QoS 1, a persistent session on both sides
  (Telegraf: `persistent_session = true`, a fixed client_id, `qos = 1`, json_v2 parser);
- batch: 500 readings per message. Telegraf reads InfluxDB line protocol (`data_format = "influx"`); cloud-ingest
  has no line-protocol input, so it reads the same readings as edge-gw batches (docs/wire-format.md), 500 a message.
  Both write the same points.

Each tool gets its best window of unacknowledged messages: cloud-ingest `mqtt.receive_maximum` (--window, default
20000, its default), Telegraf `max_undelivered_messages` (--telegraf-window, default 2000: on (a) Telegraf measured
24.6k, 32.3k, 24.1k, 23.9k and 19.5k readings/s at 1000, 2000, 5000, 10000 and 20000). Both write 5000 points at a
time, or half their window if that is fewer (cloud-ingest's rule, batch.max_points and batch.max_messages; Telegraf
`metric_batch_size`).
Each run pre-loads the broker queue of the tool's persistent session, then starts the tool, so that the publisher
does not compete for the 2 cores while the tool is timed.

Reported per tool and workload:
- readings/s: from the tool's start to the last reading queryable in InfluxDB (polled every 0.1 s; the tool's own
  start-up is included, about 0.4 s more for cloud-ingest's Python than for Telegraf's Go binary);
- CPU seconds per 100k readings: utime + stime of the tool's process from /proc/<pid>/stat, start-up included;
- loss on SIGKILL: the tool is killed when about 40 % of the readings are queryable, started again, and the set of
  (mac, time) in InfluxDB is compared with the set sent: lost = sent - stored.

Telegraf comes from `bash bench/telegraf_setup.sh` (a custom build in ~/.cache/edge-gw-bench/bin).

    python bench/bench_telegraf.py                         # 100k flat messages, 200k readings in batches
    python bench/bench_telegraf.py --flat 50000 --batch 100000 --skip-kill
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "cloud"), str(ROOT / "bench")]

import orjson  # noqa: E402
from bench_influx_ceiling import influx_ceiling  # noqa: E402
from bench_ingest import ReceiverProcess, edge_messages  # noqa: E402
from servers import Influxd, Mosquitto, cpu_seconds  # noqa: E402
from test_receiver_support import Publisher, broker_settings  # noqa: E402

from cloud.formats import edge_batch  # noqa: E402
from cloud.lineproto import Encoder  # noqa: E402

S = 1_000_000_000
CACHE = Path(os.environ.get("EDGE_GW_BENCH_CACHE", Path.home() / ".cache" / "edge-gw-bench"))
TELEGRAF = CACHE / "bin" / "telegraf"
SENSORS = 100

Key = tuple[str, int]  # (mac tag, time in ns)


# ---- the messages -------------------------------------------------------------------------------------------------

def flat_messages(n: int, t0_ns: int) -> tuple[list[tuple[str, bytes]], set[Key]]:
    """n flat JSON readings of SENSORS sensors, each with its own microsecond timestamp."""
    msgs, keys = [], set()
    for i in range(n):
        sensor = f"s{i % SENSORS:03d}"
        t_ns = t0_ns // 1000 * 1000 + i * 1000  # whole microseconds: what the timestamp string can say
        seconds, micros = divmod(t_ns // 1000, 1_000_000)
        dt = datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros)
        body = {"sensor_id": sensor, "temperature": 20.0 + (i % 500) / 100, "humidity": 40.25,
                "pressure": 100044.0 + i % 7, "location": "attic", "timestamp": dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
        msgs.append((f"sensors/{sensor}", orjson.dumps(body)))
        keys.add((sensor, t_ns))
    return msgs, keys


def batch_messages(n: int, t0_ns: int) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]], set[Key]]:
    """The same n readings as edge-gw batches (cloud-ingest) and as line protocol (Telegraf), 500 per message."""
    edge = edge_messages(n, 500, 10, t0_ns)
    enc = Encoder()
    lp, keys = [], set()
    for topic, payload in edge:
        points = edge_batch.parse(topic, payload).points
        lp.append((f"lp/{topic.split('/')[1]}", enc.encode(points)))
        keys.update((p.tags["mac"], p.time_ns) for p in points)
    return edge, lp, keys


# ---- the tools ----------------------------------------------------------------------------------------------------

def telegraf_config(mqtt_port: int, influx_url: str, db: str, workload: str, window: int) -> str:
    common = f"""
[agent]
  interval = "1s"
  flush_interval = "1s"
  flush_jitter = "0s"
  metric_batch_size = {min(5000, window // 2) if workload == "flat" else 5000}
  metric_buffer_limit = 200000
  omit_hostname = true
  debug = true

[[outputs.influxdb]]
  urls = ["{influx_url}"]
  database = "{db}"
  skip_database_creation = true
  # Like cloud-ingest's influx.gzip = "auto" to an InfluxDB on this host: neither tool compresses on loopback.
  content_encoding = "identity"

[[inputs.mqtt_consumer]]
  servers = ["tcp://127.0.0.1:{mqtt_port}"]
  client_id = "telegraf-{db}"
  persistent_session = true
  qos = 1
  max_undelivered_messages = {window}
  topic_tag = ""
"""
    if workload == "batch":
        return common + '  topics = ["lp/+"]\n  data_format = "influx"\n'
    return common + """  topics = ["sensors/+"]
  data_format = "json_v2"
  [inputs.mqtt_consumer.tags]
    data_format = "flat"
  [[inputs.mqtt_consumer.json_v2]]
    measurement_name = "ruuvi"
    timestamp_path = "timestamp"
    timestamp_format = "2006-01-02T15:04:05.999999999Z07:00"
    [[inputs.mqtt_consumer.json_v2.tag]]
      path = "sensor_id"
      rename = "mac"
    [[inputs.mqtt_consumer.json_v2.tag]]
      path = "location"
    [[inputs.mqtt_consumer.json_v2.field]]
      path = "temperature"
      type = "float"
    [[inputs.mqtt_consumer.json_v2.field]]
      path = "humidity"
      type = "float"
    [[inputs.mqtt_consumer.json_v2.field]]
      path = "pressure"
      type = "float"
"""


class Tool:
    name = ""
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None: ...

    def create_session(self) -> None: ...

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(60)


class TelegrafTool(Tool):
    name = "Telegraf 1.39"

    def __init__(self, workdir: Path, config: str, db: str) -> None:
        self.conf = workdir / f"telegraf-{db}.conf"
        self.conf.write_text(config)
        self.log = workdir / f"telegraf-{db}.log"

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([str(TELEGRAF), "--config", str(self.conf)], stdout=out,
                                         stderr=subprocess.STDOUT)

    def create_session(self) -> None:
        mark = self.log.stat().st_size if self.log.exists() else 0
        self.start()
        deadline = time.monotonic() + 20
        while b"Connected" not in self.log.read_bytes()[mark:]:
            if time.monotonic() > deadline or (self.proc is not None and self.proc.poll() is not None):
                raise RuntimeError(f"telegraf did not connect: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)
        time.sleep(0.5)  # the SUBSCRIBE follows the CONNACK
        self.stop()


class IngestTool(Tool):
    name = "cloud-ingest"

    def __init__(self, workdir: Path, mqtt_port: int, influx_url: str, db: str, window: int,
                 tree: Path | None = None) -> None:
        settings = {"mqtt.receive_maximum": str(window), "dedup.max_entries": "1000000"}
        self.rx = ReceiverProcess(workdir, mqtt_port, f"{influx_url}/{db}", f"ci-{db}", settings, tree)

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUD_INGEST_")}
        if self.rx.tree is not None:
            env["PYTHONPATH"] = str(self.rx.tree)
        with open(self.rx.log, "ab") as out:
            self.proc = self.rx.proc = subprocess.Popen(self.rx.args, stdout=out, stderr=subprocess.STDOUT, env=env,
                                                        cwd=self.rx.tree)

    def create_session(self) -> None:
        self.rx.start().stop()


# ---- measuring ----------------------------------------------------------------------------------------------------

def query(influxd: Influxd, db: str, q: str) -> list[dict[str, object]]:
    qs = urllib.parse.urlencode({"db": db, "epoch": "ns", "q": q})
    with urllib.request.urlopen(f"{influxd.url}/query?{qs}", timeout=30) as r:
        res = orjson.loads(r.read())["results"][0]
    return res.get("series", [])  # type: ignore[no-any-return]


def count(influxd: Influxd, db: str, field: str) -> int:
    series = query(influxd, db, f'SELECT count("{field}") FROM "ruuvi"')
    return int(series[0]["values"][0][1]) if series else 0  # type: ignore[index]


def stored_keys(influxd: Influxd, db: str, field: str) -> set[Key]:
    keys: set[Key] = set()
    for s in query(influxd, db, f'SELECT "{field}" FROM "ruuvi" GROUP BY "mac"'):
        mac = s["tags"]["mac"]  # type: ignore[index]
        keys.update((mac, int(v[0])) for v in s["values"])  # type: ignore[attr-defined]
    return keys


@dataclass
class Result:
    rate: float
    cpu_per_100k: float
    missing: int = 0  # never stored in the throughput run
    rate99: float = 0.0  # readings/s up to 99 % stored: what a last batch stuck on its timer does not skew
    lost: int | None = None
    extra: int | None = None


def preload(broker: Mosquitto, tool: Tool, messages: list[tuple[str, bytes]], tag: str) -> None:
    tool.create_session()
    pub = Publisher(broker.port, client_id=f"pub-{tag}")
    for i in range(0, len(messages), 10_000):  # paho refuses (ERR_QUEUE_SIZE) 100k queued at once
        pub.publish(messages[i:i + 10_000], timeout=300)
    pub.close()


def throughput(influxd: Influxd, broker: Mosquitto, tool: Tool, db: str, field: str,
               messages: list[tuple[str, bytes]], readings: int) -> Result:
    preload(broker, tool, messages, db)
    t0 = time.monotonic()
    tool.start()
    assert tool.proc is not None
    try:
        last, since, cpu, t99 = -1, time.monotonic(), 0.0, 0.0
        while (n := count(influxd, db, field)) < readings:
            if n != last:
                last, since, cpu = n, time.monotonic(), cpu_seconds(tool.proc.pid)
                if not t99 and n >= 0.99 * readings:
                    t99 = since
            if time.monotonic() - since > 20 or tool.proc.poll() is not None:
                break  # some readings never came: timed up to the last one that did, and reported as missing
            time.sleep(0.1)
        else:
            since, cpu = time.monotonic(), cpu_seconds(tool.proc.pid)
    finally:
        tool.stop()
    rate99 = 0.99 * readings / ((t99 or since) - t0)
    return Result(n / (since - t0), cpu / n * 100_000, missing=readings - n, rate99=rate99)


def kill_loss(influxd: Influxd, broker: Mosquitto, tool: Tool, db: str, field: str,
              messages: list[tuple[str, bytes]], keys: set[Key]) -> tuple[int, int]:
    """SIGKILL the tool at about 40 % stored, start it again, wait until nothing more comes: (lost, extra)."""
    preload(broker, tool, messages, db)
    tool.start()
    assert tool.proc is not None
    try:
        deadline = time.monotonic() + 600
        while count(influxd, db, field) < 0.4 * len(keys):
            if time.monotonic() > deadline or tool.proc.poll() is not None:
                raise RuntimeError(f"{tool.name}: did not reach 40 % before the kill")
            time.sleep(0.02)
        tool.stop(signal.SIGKILL)
        at_kill = count(influxd, db, field)
        tool.start()
        last, stable_since = -1, time.monotonic()
        while time.monotonic() - stable_since < 5 and time.monotonic() < deadline:
            n = count(influxd, db, field)
            if n != last:
                last, stable_since = n, time.monotonic()
            if n >= len(keys):
                break
            time.sleep(0.2)
    finally:
        tool.stop()
    got = stored_keys(influxd, db, field)
    print(f"    {tool.name}: killed with {at_kill} of {len(keys)} stored; after the restart {len(got)}", flush=True)
    return len(keys - got), len(got - keys)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flat", type=int, default=100_000, help="flat JSON messages, one reading each")
    ap.add_argument("--batch", type=int, default=200_000, help="readings in messages of 500")
    ap.add_argument("--kill-flat", type=int, default=40_000, help="flat messages for the SIGKILL runs")
    ap.add_argument("--skip-kill", action="store_true")
    ap.add_argument("--ceiling-points", type=int, default=200_000)
    ap.add_argument("--window", type=int, default=20_000, help="cloud-ingest's window (mqtt.receive_maximum)")
    ap.add_argument("--telegraf-window", type=int, default=2000, help="Telegraf's max_undelivered_messages")
    ap.add_argument("--ingest-tree", type=Path, help="run cloud-ingest from this checkout (e.g. a baseline)")
    args = ap.parse_args()
    if not TELEGRAF.exists():
        sys.exit(f"{TELEGRAF} is missing: run `bash bench/telegraf_setup.sh` first")
    version = subprocess.run([str(TELEGRAF), "--version"], capture_output=True, text=True, check=True).stdout.strip()

    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        influxd = Influxd(work / "influxd").start()
        broker = Mosquitto(work / "mosquitto", extra=broker_settings()).start()
        try:
            url = influxd.url
            ceiling = influx_ceiling(f"{url}/ceiling", points=args.ceiling_points)
            print(f"{version}; InfluxDB raw /write ceiling: {ceiling:,.0f} points/s", flush=True)
            base_ns = time.time_ns() - 6 * 3600 * S

            def tools(db: str, workload: str) -> list[Tool]:
                influxd.query(f'CREATE DATABASE "tg_{db}"', method="POST")
                influxd.query(f'CREATE DATABASE "ci_{db}"', method="POST")
                tg = telegraf_config(broker.port, url, f"tg_{db}", workload, args.telegraf_window)
                return [TelegrafTool(work, tg, f"tg_{db}"),
                        IngestTool(work, broker.port, url, f"ci_{db}", args.window, args.ingest_tree)]

            results: dict[tuple[str, str], Result] = {}
            # (a) flat JSON, one reading per message.
            msgs, _ = flat_messages(args.flat, base_ns)
            for tool in tools("flat", "flat"):
                db = "tg_flat" if isinstance(tool, TelegrafTool) else "ci_flat"
                results[("flat", tool.name)] = r = throughput(influxd, broker, tool, db, "temperature", msgs,
                                                              args.flat)
                print(f"(a) flat JSON, 1 reading/message, {tool.name}: {r.rate:,.0f} readings/s "
                      f"({r.rate / ceiling:.0%} of the ceiling; up to 99 % stored: {r.rate99:,.0f}/s = "
                      f"{r.rate99 / ceiling:.0%}), {r.cpu_per_100k:.2f} CPU s per 100k"
                      + (f"; {r.missing} NEVER STORED" if r.missing else ""), flush=True)
            # (b) 500 readings per message.
            edge, lp, _ = batch_messages(args.batch, base_ns + 3600 * S)
            for tool in tools("batch", "batch"):
                is_tg = isinstance(tool, TelegrafTool)
                db = "tg_batch" if is_tg else "ci_batch"
                results[("batch", tool.name)] = r = throughput(influxd, broker, tool, db, "temperature",
                                                               lp if is_tg else edge, args.batch)
                print(f"(b) 500 readings/message ({'line protocol' if is_tg else 'edge-gw batches'}), {tool.name}: "
                      f"{r.rate:,.0f} readings/s ({r.rate / ceiling:.0%} of the ceiling), "
                      f"{r.cpu_per_100k:.2f} CPU s per 100k" + (f"; {r.missing} NEVER STORED" if r.missing else ""),
                      flush=True)

            if not args.skip_kill:
                kmsgs, kkeys = flat_messages(args.kill_flat, base_ns + 2 * 3600 * S)
                for tool in tools("kill", "flat"):
                    db = "tg_kill" if isinstance(tool, TelegrafTool) else "ci_kill"
                    lost, extra = kill_loss(influxd, broker, tool, db, "temperature", kmsgs, kkeys)
                    results[("flat", tool.name)].lost, results[("flat", tool.name)].extra = lost, extra
                    print(f"SIGKILL mid-stream (flat JSON, {len(kkeys)} readings), {tool.name}: lost {lost}, "
                          f"unexpected {extra}", flush=True)

            tg, ci = results[("flat", TelegrafTool.name)], results[("flat", IngestTool.name)]
            tb, cb = results[("batch", TelegrafTool.name)], results[("batch", IngestTool.name)]
            print(f"ratios cloud-ingest / Telegraf: (a) flat readings/s {ci.rate / tg.rate:.2f}x (up to 99 % "
                  f"stored {ci.rate99 / tg.rate99:.2f}x), CPU per reading "
                  f"{ci.cpu_per_100k / tg.cpu_per_100k:.2f}x; (b) batches readings/s {cb.rate / tb.rate:.2f}x, "
                  f"CPU per reading {cb.cpu_per_100k / tb.cpu_per_100k:.2f}x")
        finally:
            broker.stop()
            influxd.stop()


if __name__ == "__main__":
    main()
