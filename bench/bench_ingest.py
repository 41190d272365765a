"""cloud-ingest end to end, in one run on one machine: InfluxDB's raw /write ceiling, then this receiver's
sustained MQTT -> InfluxDB rate for edge-format batches and for Ruuvi Gateway traffic (one reading per message),
each with its ratio to the ceiling, then the latency from receive time to queryable at a steady 5k readings/s.

Private Mosquitto (with cloud/mosquitto/cloud-ingest.conf) and influxd on free loopback ports; the receiver is the
real `cloud-ingest run` in its own process. Throughput runs pre-load the broker queue of the receiver's persistent
session, then start the receiver, so the publisher does not compete for the 2 cores while the receiver is timed.

    python bench/bench_ingest.py                      # defaults: 200k edge readings, 40k Ruuvi Gateway messages
    python bench/bench_ingest.py --edge 500000 --writers 2 --latency-seconds 20
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "cloud"), str(ROOT / "bench")]

import orjson  # noqa: E402
from bench_influx_ceiling import influx_ceiling  # noqa: E402
from servers import Influxd, Mosquitto, cpu_seconds  # noqa: E402
from test_receiver_support import Publisher, broker_settings, df5_payload, mac_bytes, mac_text, ruuvi_gw_message  # noqa: E402

from core import ruuvi  # noqa: E402
from edge.model import Reading  # noqa: E402
from edge.wire import encode_batch  # noqa: E402

S = 1_000_000_000


class ReceiverProcess:
    def __init__(self, workdir: Path, mqtt_port: int, influx_url: str, client_id: str, settings: dict[str, str],
                 tree: Path | None = None, command: list[str] | None = None):
        """`command`: another cloud-ingest command and its inputs instead of `run --mqtt <broker> --influx <url>`
        (e.g. `bridge --mqtt .. --kafka ..`); the status file, client id and settings are added the same."""
        self.workdir = workdir
        self.tree = tree  # run the receiver of another checkout (its cloud/ and core/), e.g. a baseline
        self.status_file = workdir / f"{client_id}.status.json"
        self.log = workdir / f"{client_id}.log"
        command = command or ["run", "--mqtt", f"mqtt://127.0.0.1:{mqtt_port}", "--influx", influx_url]
        self.args = [sys.executable, "-c", "from cloud.cli import main; main()", *command, "--client-id", client_id,
                     "--metrics-port", "0", "--status-file", str(self.status_file), "--log-level", "warning"]
        if command[0] == "run":
            self.args += ["--set", "rollups.enabled=false"]
        for k, v in settings.items():
            self.args += ["--set", f"{k}={v}"]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ReceiverProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUD_INGEST_")}
        if self.tree is not None:
            env["PYTHONPATH"] = str(self.tree)  # and cwd: `-c` puts the working directory first on sys.path
        with open(self.log, "ab") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.tree)
        deadline = time.monotonic() + 20
        while self.status() is None or not self.status()["mqtt_connected"]:  # type: ignore[index]
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"receiver did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.02)
        return self

    def status(self) -> dict[str, int] | None:
        try:
            return orjson.loads(self.status_file.read_bytes())  # type: ignore[no-any-return]
        except (FileNotFoundError, orjson.JSONDecodeError):
            return None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)
        self.status_file.unlink(missing_ok=True)


def readings_for(gw: int, tags: int, n: int, t0: int, seq0: int) -> list[Reading]:
    """n readings of `tags` tags of one gateway, decoded once per tag (the fields don't matter for speed)."""
    fields = {t: ruuvi.decode(df5_payload(0, mac_bytes(gw * 1000 + t))) for t in range(tags)}
    out = []
    for i in range(n):
        t = i % tags
        f = dict(fields[t])
        f["measurement_sequence_number"] = (seq0 + i // tags) % 65536
        out.append(Reading(mac=mac_text(gw * 1000 + t), time_ns=t0 + i * 1000, mono_ns=0, clock_synced=True,
                           rssi=-70, data_format=5, raw=b"\x05", fields=f))
    return out


def edge_messages(total: int, per_batch: int, gateways: int, t0: int) -> list[tuple[str, bytes]]:
    msgs = []
    per_gw = total // gateways
    for g in range(gateways):
        rs = readings_for(g, 100, per_gw, t0 + g, 0)
        for b in range(0, per_gw, per_batch):
            msgs.append((f"edge-gw/gw-{g}/batch", encode_batch(f"gw-{g}", b // per_batch, rs[b:b + per_batch])))
    return msgs


def sustained(workdir: Path, broker: Mosquitto, url: str, name: str, messages: list[tuple[str, bytes]],
              readings: int, settings: dict[str, str], receivers: int = 1, tree: Path | None = None,
              servers: dict[str, int] | None = None, qos: int = 1) -> tuple[float, dict[str, int], dict[str, float]]:
    """Readings/s from the receivers' start until the last write, the broker queue pre-loaded. Several receivers
    share the subscription (mqtt.shared_group). Also the CPU µs per reading of the receivers (summed, start-up not
    included: the CPU of a run that only connects is taken off) and of each of `servers` (name -> pid) meanwhile."""
    if receivers > 1:
        settings = {**settings, "mqtt.shared_group": name}
    rxs = [ReceiverProcess(workdir, broker.port, url, f"{name}-{k}", settings, tree) for k in range(receivers)]
    startup = []  # each receiver's CPU seconds from its spawn to connected, taken off its measured run below
    for rx in rxs:
        rx.start()  # the session exists now; the broker queues for it
        startup.append(cpu_seconds(rx.proc.pid))  # type: ignore[union-attr]
        rx.stop()
    pub = Publisher(broker.port, client_id=f"pub-{name}")
    pub.publish(messages, qos=qos, timeout=600)
    pub.close()
    cpu0 = {k: cpu_seconds(pid) for k, pid in (servers or {}).items()}
    for rx in rxs:
        rx.start()
    pids = {**(servers or {}), **{f"rx{k}": rx.proc.pid for k, rx in enumerate(rxs) if rx.proc is not None}}
    cpu0.update({f"rx{k}": startup[k] for k in range(len(rxs))})
    try:
        deadline = time.monotonic() + 600
        while True:
            sts = [rx.status() or {} for rx in rxs]
            total = {k: sum(st.get(k, 0) for st in sts) for k in ("written", "duplicates", "dead_letters",
                                                                   "inflight_messages")}
            if total["written"] + total["duplicates"] >= readings and total["inflight_messages"] == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: only {total['written']} of {readings} written")
            time.sleep(0.02)
        span = max(st["last_write_ns"] for st in sts) - min(st["started_ns"] for st in sts)
        used = {k: (cpu_seconds(pid) - cpu0[k]) / readings * 1e6 for k, pid in pids.items()}
        cpu = {k: v for k, v in used.items() if not k.startswith("rx")}
        cpu["receiver"] = sum(v for k, v in used.items() if k.startswith("rx"))
        return readings / (span / S), total, cpu
    finally:
        for rx in rxs:
            rx.stop()


class Stoppable(Protocol):
    def stop(self) -> None: ...


def latency(workdir: Path, broker: Mosquitto, influxd: Influxd, db: str, rate: int, seconds: float,
            settings: dict[str, str], start: Callable[[], Stoppable] | None = None) -> list[float]:
    """Publish `rate` readings/s in edge batches stamped with the send time; poll InfluxDB for new points and
    return, per point, seconds from its receive time (time_ns) to the poll that first saw it. `start` starts what
    carries them to InfluxDB (default: one receiver with `settings`)."""
    url = f"{influxd.url}/{db}"
    rx = start() if start is not None else ReceiverProcess(workdir, broker.port, url, "latency", settings).start()
    pub = Publisher(broker.port, client_id="pub-latency")
    gateways, tags, tick = 10, 100, 0.02
    per_tick = max(1, int(rate * tick))
    per_gw_tick = max(1, per_tick // gateways)
    fields = {t: ruuvi.decode(df5_payload(0, mac_bytes(t))) for t in range(gateways * tags)}
    stop = threading.Event()
    sent = [0]

    def publish() -> None:
        next_t = time.monotonic()
        seq = 0
        while not stop.is_set():
            now = time.time_ns()
            msgs = []
            for g in range(gateways):
                rs = []
                for k in range(per_gw_tick):
                    t = g * tags + (seq + k) % tags
                    f = dict(fields[t])
                    f["measurement_sequence_number"] = seq % 65536
                    # Unique, increasing in publish order: the poll below asks only for times after the last seen.
                    rs.append(Reading(mac=mac_text(t), time_ns=now + g * per_gw_tick + k, mono_ns=0,
                                      clock_synced=True, rssi=-70, data_format=5, raw=b"\x05", fields=f))
                msgs.append((f"edge-gw/gw-{g}/batch", encode_batch(f"gw-{g}", seq, rs)))
                sent[0] += len(rs)
            seq += 1
            for topic, payload in msgs:
                pub.client.publish(topic, payload, qos=1)
            next_t += tick
            time.sleep(max(0.0, next_t - time.monotonic()))

    # A write becomes visible series by series, not all at once, so "every point after the newest seen" would
    # miss some. Sample 5 tags per gateway instead and track each one's newest time.
    sample = [mac_text(g * tags + k) for g in range(gateways) for k in range(5)]
    where = "mac =~ /^(" + "|".join(m.replace(":", "\\:") for m in sample) + ")$/"
    seen: list[float] = []
    feeder = threading.Thread(target=publish)
    start_ns = time.time_ns()
    feeder.start()
    last = dict.fromkeys(sample, start_ns)
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end + 3:
            if time.monotonic() > end:
                stop.set()
            q = urllib.parse.urlencode({"db": db, "epoch": "ns", "q": f'SELECT "rssi" FROM "ruuvi" WHERE {where} '
                                        f"AND time > {min(last.values())} GROUP BY mac"})
            with urllib.request.urlopen(f"{influxd.url}/query?{q}", timeout=10) as r:
                res = orjson.loads(r.read())
            seen_at = time.time_ns()
            for series in res["results"][0].get("series", []):
                mac = series["tags"]["mac"]
                for t, _ in series["values"]:
                    if t > last[mac]:
                        seen.append((seen_at - t) / S)
                        last[mac] = t
            time.sleep(0.01)
    finally:
        stop.set()
        feeder.join()
        pub.close()
        rx.stop()
    q = urllib.parse.urlencode({"db": db, "q": f'SELECT count("rssi") FROM "ruuvi" WHERE {where}'})
    with urllib.request.urlopen(f"{influxd.url}/query?{q}", timeout=10) as r:
        stored = orjson.loads(r.read())["results"][0]["series"][0]["values"][0][1]
    if len(seen) != stored or not seen:
        raise RuntimeError(f"latency run: saw {len(seen)} of {stored} sampled points ({sent[0]} sent in all)")
    return seen


def setting(text: str) -> tuple[str, str]:
    """An argparse type for KEY=VALUE receiver settings (`--set`): dict(args.x) gives the settings."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def cpu_text(cpu: dict[str, float]) -> str:
    return "CPU µs per reading: " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(cpu.items()))


def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=1000)[int(p * 10) - 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ceiling-points", type=int, default=200_000)
    ap.add_argument("--ceiling-writers", type=int, default=1,
                    help="concurrent writers of the ceiling (1: the figure the issues' targets were set against)")
    ap.add_argument("--edge", type=int, default=200_000, help="edge-format readings (500 per message)")
    ap.add_argument("--ruuvi", type=int, default=40_000, help="Ruuvi Gateway messages (one reading each)")
    ap.add_argument("--ruuvi-qos", type=int, default=1, choices=(0, 1),
                    help="QoS of the Ruuvi Gateway messages (real gateways publish at QoS 0 since firmware 1.15)")
    ap.add_argument("--writers", type=int, default=1, help="receiver batch.writers")
    ap.add_argument("--receivers", type=int, default=2,
                    help="also run this many receivers in a shared subscription group on edge traffic (1 = skip)")
    ap.add_argument("--baseline", type=Path, help="also run the Ruuvi Gateway traffic through the receiver of this "
                    "checkout (e.g. `git worktree add /tmp/base main`), right after this tree's, for a before/after")
    ap.add_argument("--set", dest="extra", action="append", default=[], type=setting, metavar="KEY=VALUE",
                    help="a receiver setting for every run (repeatable), e.g. mqtt.receive_maximum=10000")
    ap.add_argument("--baseline-set", dest="baseline_extra", action="append", default=[], type=setting,
                    metavar="KEY=VALUE",
                    help="a receiver setting of the baseline run only (repeatable; with or without --baseline)")
    ap.add_argument("--latency-rate", type=int, default=5000)
    ap.add_argument("--latency-seconds", type=float, default=10.0)
    ap.add_argument("--latency-interval", default="0.1", help="batch.max_interval for the latency run")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        influxd = Influxd(work / "influxd").start()
        broker = Mosquitto(work / "mosquitto", extra=broker_settings()).start()
        try:
            base = f"{influxd.url}"
            influxd.query('CREATE DATABASE "ingest"', method="POST")
            influxd.query('CREATE DATABASE "ruuvigw"', method="POST")
            influxd.query('CREATE DATABASE "latency"', method="POST")
            ceiling = influx_ceiling(f"{base}/ceiling", points=args.ceiling_points, writers=args.ceiling_writers)
            print(f"InfluxDB raw /write ceiling (pre-encoded 5000-point gzip batches, {args.ceiling_writers} "
                  f"writer{'s' if args.ceiling_writers > 1 else ''}): {ceiling:,.0f} points/s")

            t0 = time.time_ns() - 3600 * S
            msgs = edge_messages(args.edge, 500, 10, t0)
            common = {"batch.writers": str(args.writers), "dedup.max_entries": "1000000",
                      **dict(args.extra)}
            servers = {"influxd": influxd.proc.pid, "mosquitto": broker.proc.pid}
            rate, st, cpu = sustained(work, broker, f"{base}/ingest", "edge", msgs, args.edge, common,
                                      servers=servers)
            print(f"cloud-ingest, edge-format batches (500 readings/message, {len(msgs)} messages): {rate:,.0f} "
                  f"readings/s = {rate / ceiling:.0%} of the ceiling (written {st['written']}, duplicates "
                  f"{st['duplicates']}, dead letters {st['dead_letters']}); {cpu_text(cpu)}")

            t1 = time.time_ns() // S - 1800
            rmsgs = [ruuvi_gw_message("C8:25:2D:8E:9C:2C", i % 1000, i // 1000, t1 + i // 1000)
                     for i in range(args.ruuvi)]
            rrate, rst, rcpu = sustained(work, broker, f"{base}/ruuvigw", "ruuvigw", rmsgs, args.ruuvi, common,
                                         servers=servers, qos=args.ruuvi_qos)
            print(f"cloud-ingest, Ruuvi Gateway traffic (1 reading/message, QoS {args.ruuvi_qos}, {args.ruuvi} "
                  "messages): "
                  f"{rrate:,.0f} readings/s = {rrate / ceiling:.0%} of the ceiling (written {rst['written']}); "
                  f"{cpu_text(rcpu)}")
            if args.baseline is not None or args.baseline_extra:
                influxd.query('CREATE DATABASE "ruuvigw_base"', method="POST")
                bsettings = {**common, **dict(args.baseline_extra)}
                brate, bst, bcpu = sustained(work, broker, f"{base}/ruuvigw_base", "ruuvigw-base", rmsgs,
                                             args.ruuvi, bsettings, servers=servers, qos=args.ruuvi_qos,
                                             tree=args.baseline.resolve() if args.baseline else None)
                what = " ".join([str(args.baseline or "this tree"), *(f"{k}={v}" for k, v in args.baseline_extra)])
                print(f"  the same through the baseline receiver ({what}): {brate:,.0f} readings/s = "
                      f"{brate / ceiling:.0%} of the ceiling (written {bst['written']}); {cpu_text(bcpu)}; this "
                      f"tree is {rrate / brate:.2f}x the baseline's rate at "
                      f"{rcpu['receiver'] / bcpu['receiver']:.2f}x its receiver CPU per reading")

            if args.receivers > 1:
                influxd.query('CREATE DATABASE "ingest2"', method="POST")
                msgs2 = edge_messages(args.edge, 500, 10, t0 + 1800 * S)
                rate2, st2, _ = sustained(work, broker, f"{base}/ingest2", "shared", msgs2, args.edge, common,
                                          receivers=args.receivers)
                print(f"cloud-ingest x{args.receivers} in one shared subscription group, edge-format batches: "
                      f"{rate2:,.0f} readings/s = {rate2 / ceiling:.0%} of the ceiling (written {st2['written']})")

            # The machine is shared and noisy: measure the ceiling again and compare with the higher of the two.
            again = influx_ceiling(f"{base}/ceiling2", points=args.ceiling_points, writers=args.ceiling_writers)
            best = max(ceiling, again)
            print(f"InfluxDB raw /write ceiling, measured again: {again:,.0f} points/s; against the higher one the "
                  f"receiver reaches {rate / best:.0%} (edge format) and {rrate / best:.0%} (Ruuvi Gateway)")

            # One writer: with two, a later batch can become visible before an earlier one, and the poll below,
            # which asks each series for times after the newest it saw, would miss points.
            lat_settings = {**common, "batch.writers": "1", "batch.max_interval": args.latency_interval}
            seen = latency(work, broker, influxd, "latency", args.latency_rate, args.latency_seconds, lat_settings)
            print(f"latency receive time -> queryable at {args.latency_rate} readings/s for "
                  f"{args.latency_seconds:g} s (batch.max_interval={args.latency_interval} s, "
                  f"{len(seen)} sampled points of 50 tags, InfluxDB polled every ~10 ms): "
                  f"p50 {pct(seen, 50) * 1000:.0f} ms, "
                  f"p99 {pct(seen, 99) * 1000:.0f} ms, max {max(seen) * 1000:.0f} ms")
        finally:
            broker.stop()
            influxd.stop()


if __name__ == "__main__":
    main()
