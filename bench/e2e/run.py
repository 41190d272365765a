"""End-to-end benchmark: simulated tags -> `edge-gw run` -> Mosquitto -> `cloud-ingest run` -> influxd.

    python -m bench.e2e                 # or: python bench/e2e/run.py ; --help for the sizes
    python -m bench.e2e --quick         # small sizes, to check that it works (figures meaningless)

One run prints:
1. sustained readings/s from simulated tags to InfluxDB: `--gateways` gateways simulating 1000 tags each as fast as
   they can (`--rate 0`), counted in InfluxDB; the rate is points stored / (time all were written - receive time of
   the first point);
2. p50/p99 latency from receive time (the point's timestamp, set at the gateway) to queryable, at
   `--latency-rate` readings/s, with default settings and with low-latency settings (receiver
   `batch.max_interval`, gateway `store.commit_interval`). InfluxDB is polled for per-10-ms-bucket counts; every
   newly counted point gets "poll time - bucket middle";
3. the drain time of a backlog of `--backlog` readings: a gateway buffer filled with the broker unreachable
   (`edge-gw run --rate 0 --count ...`), then `edge-gw flush`, timed until every reading is in InfluxDB; once with
   `uplink.confirm = "broker"` (delete on PUBACK) and once with "cloud" (delete on cloud-ingest's confirmation), in
   the same run, and the ratio of the two;
4. peak RSS (VmHWM) and CPU time of every process (servers: over the whole run).

`--receivers N` (default 1) runs the sustained and drain phases with N `cloud-ingest run` processes in one shared
subscription group (`--shared-group bench-e2e`; each its own client id, status file and dedup journal); their
`written` counters are summed, and each figure says how many receivers produced it. The latency phase keeps one
receiver. With N > 1 every receiver's session is retired (`cloud-ingest retire`) after its phase, so that no stopped
session goes on taking a share (or a copy) of a later phase's traffic.

Not a test. Everything runs on this machine's cores together (the VM is shared; figures vary, see the load average
printed at start and end). All servers are private, on loopback, in a temporary directory, and stopped by PID.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
for p in (REPO, REPO / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import orjson  # noqa: E402
from servers import Influxd, Mosquitto, free_port  # noqa: E402

from bench.e2e.procs import (  # noqa: E402
    PeakRss,
    Receiver,
    Receivers,
    broker_settings,
    clean_env,
    committed_total,
    gateway_cmd,
    influx_count,
    influx_query,
    loadavg,
)

ADVERTS_PER_READING = 2.5  # the simulator sends each measurement 2 or 3 times; a Ruuvi Air's DF6 copy is dropped
NS = 1_000_000_000
BUCKET_NS = 10_000_000


# Every gateway of a run simulates its own fleet (its own seed, so its own MACs): the receiver's cross-gateway
# dedup, whose memory now survives restarts, would otherwise drop one phase's readings as copies of another's.


@dataclass
class Bench:
    work: Path
    broker: Mosquitto
    influxd: Influxd
    peaks: PeakRss
    results: dict[str, Any] = field(default_factory=dict)
    receivers: int = 1  # in the throughput phases (sustained, drain)

    @property
    def influx_url(self) -> str:
        return f"{self.influxd.url}/ruuvi"

    def receiver(self, name: str, settings: dict[str, str], n: int = 1) -> Receivers:
        """One plain receiver (client id bench-e2e, as before --receivers existed), or `n` members of the shared
        group bench-e2e. The names under which their peak RSS and CPU are kept go to the phase's results."""
        if n == 1:
            members = [Receiver(self.work, self.broker.url, self.influx_url, settings)]
        else:
            members = [Receiver(self.work, self.broker.url, self.influx_url, settings, client_id=f"bench-e2e-{i}",
                                shared_group="bench-e2e") for i in range(1, n + 1)]
        group = Receivers(members).start()
        for i, rx in enumerate(members, 1):
            assert rx.proc is not None
            label = name if n == 1 else f"{name}, {i}/{n}"
            self.peaks.watch(f"cloud-ingest run [{label}]", rx.proc.pid)
        return group

    def receiver_names(self, name: str, n: int) -> list[str]:
        return [f"cloud-ingest run [{name}]"] if n == 1 else [f"cloud-ingest run [{name}, {i}/{n}]"
                                                             for i in range(1, n + 1)]

    def done_with(self, rx: Receivers) -> None:
        """Stop the phase's receivers; with --receivers > 1 also end their sessions (see the module doc)."""
        rx.stop()
        if self.receivers > 1:
            rx.retire()

    def spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with open(self.work / f"{name.replace(' ', '_')}.log", "ab") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env or clean_env())
        self.peaks.watch(name, proc.pid)
        return proc


def wait_written(rx: Receivers, target: int, procs: list[subprocess.Popen[bytes]], timeout: float,
                 trace: list[tuple[int, int]] | None = None) -> int:
    """Block until the receivers together have written `target` points; return time.time_ns() of that moment.
    `trace` gets (time_ns, points written by all) every 20 ms."""
    deadline = time.monotonic() + timeout
    while (written := rx.written()) < target:
        if trace is not None:
            trace.append((time.time_ns(), written))
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out: receivers wrote {written} of {target}")
        rx.check_running()
        for p in procs:
            if p.poll() not in (None, 0):
                raise RuntimeError(f"{p.args!r} exited with {p.returncode}")
        time.sleep(0.02)
    done_ns = time.time_ns()
    if trace is not None:
        trace.append((done_ns, written))
    return done_ns


def steady_rate(trace: list[tuple[int, int]], base: int, total: int) -> int:
    """Points/s between 10 % and 90 % of `total` written: the rate without start-up and the last partial batch."""
    lo = next(t for t, w in trace if w - base >= total // 10)
    hi_at = [(t, w) for t, w in trace if w - base >= total * 9 // 10]
    if not hi_at:
        return 0
    lo_w = next(w for t, w in trace if t == lo)
    return round((hi_at[0][1] - lo_w) / ((hi_at[0][0] - lo) / NS))


def sustained(b: Bench, gateways: int, adverts: int, rx_settings: dict[str, str]) -> None:
    rx = b.receiver("sustained", rx_settings, b.receivers)
    trace: list[tuple[int, int]] = []
    try:
        base = rx.written()
        dbs = [b.work / f"sus-{i}.db" for i in range(gateways)]
        procs = [b.spawn(f"edge-gw run [sustained, sus-{i}]",
                         gateway_cmd(f"sus-{i}", b.broker.url, dbs[i], "--tags", "1000", "--rate", "0",
                                     "--count", str(adverts), "--seed", str(i + 1), "--drain", "600"))
                 for i in range(gateways)]
        while any(p.poll() is None for p in procs):
            trace.append((time.time_ns(), rx.written()))
            time.sleep(0.02)
        if any(p.returncode != 0 for p in procs):
            raise RuntimeError(f"a gateway failed: {[p.returncode for p in procs]}")
        committed = sum(committed_total(db) for db in dbs)
        done_ns = wait_written(rx, base + committed, [], 300, trace)
        statuses = rx.statuses()
    finally:
        b.done_with(rx)
    stored = influx_count(b.influxd.url, "^sus-")
    first = influx_query(b.influxd.url, "SELECT first(\"temperature\") FROM \"ruuvi\" WHERE \"gateway\" =~ /^sus-/")
    first_ns = int(first["results"][0]["series"][0]["values"][0][0])
    secs = (done_ns - first_ns) / NS
    b.results["sustained"] = {"receivers": b.receivers, "receiver_names": b.receiver_names("sustained", b.receivers),
                              "written_per_receiver": [st.get("written", 0) if st else 0 for st in statuses],
                              "gateways": gateways, "adverts": adverts * gateways, "committed": committed,
                              "stored": stored, "seconds": round(secs, 2), "readings_per_s": round(stored / secs),
                              "steady_readings_per_s": steady_rate(trace, base, committed),
                              "receiver_settings": rx_settings}


def latency(b: Bench, label: str, seed: int, rx_settings: dict[str, str], gw_env: dict[str, str], rate: int,
            seconds: float) -> None:
    rx = b.receiver(f"latency {label}", rx_settings)
    gw = f"lat-{label}"
    db = b.work / f"{gw}.db"
    adverts_rate = rate * ADVERTS_PER_READING
    start_ns = time.time_ns()
    proc = b.spawn(f"edge-gw run [latency {label}]",
                   gateway_cmd(gw, b.broker.url, db, "--tags", "1000", "--seed", str(seed), "--rate",
                               f"{adverts_rate:g}", "--count", str(int(adverts_rate * seconds)), "--drain", "120"),
                   env=clean_env(**gw_env))
    counted: dict[int, int] = {}
    samples: list[tuple[int, float]] = []  # (bucket start, seconds from receive time to queryable)
    polls = 0
    poll_started = time.monotonic()
    q = (f"SELECT count(\"temperature\") FROM \"ruuvi\" WHERE \"gateway\" = '{gw}' AND time >= {start_ns} "
         f"GROUP BY time({BUCKET_NS // 1_000_000}ms) fill(none)")
    try:
        finished = 0
        while finished < 2:  # two polls after everything is written and acknowledged: nothing is left to see
            if proc.poll() is not None:
                if proc.returncode != 0:
                    raise RuntimeError(f"gateway exited with {proc.returncode}")
                if rx.idle() and sum(counted.values()) >= committed_total(db):
                    finished += 1
            res = influx_query(b.influxd.url, q)
            seen_ns = time.time_ns()
            polls += 1
            for series in res["results"][0].get("series", []):
                for t, c in series["values"]:
                    new = c - counted.get(t, 0)
                    if new > 0:
                        counted[t] = c
                        samples.extend([(t, (seen_ns - t - BUCKET_NS // 2) / NS)] * new)
            time.sleep(0.02)
            if time.monotonic() - poll_started > seconds + 120:
                raise RuntimeError(f"latency run did not finish: {sum(counted.values())} points counted of "
                                   f"{committed_total(db)} committed (receiver status {rx.statuses()})")
        poll_s = (time.monotonic() - poll_started) / polls
    finally:
        b.done_with(rx)
    committed = committed_total(db)
    stored = influx_count(b.influxd.url, f"^{gw}$")
    first = min(t for t, _ in samples)
    last = max(t for t, _ in samples)
    # Steady state: the first 2 s are start-up (connect, first commits), and the last 2 s end in a partial batch
    # that waits for the receiver's timer (10 s by default), which a continuous stream never does.
    steady = sorted(s for t, s in samples if first + 2 * NS <= t <= last - 2 * NS)
    q100 = statistics.quantiles(steady, n=100, method="inclusive")
    b.results[f"latency_{label}"] = {
        "receiver_settings": rx_settings, "gateway_env": gw_env, "committed": committed, "stored": stored,
        "readings_per_s": round(committed / ((last - first) / NS)), "points_measured": len(steady),
        "p50_ms": round(q100[49] * 1000), "p99_ms": round(q100[98] * 1000), "max_ms": round(steady[-1] * 1000),
        "poll_period_ms": round(poll_s * 1000),
    }


def drain(b: Bench, backlog: int, rx_settings: dict[str, str], confirm: str) -> None:
    """Drain a backlog with `edge-gw flush` in one confirm mode: "cloud" deletes on cloud-ingest's confirmation,
    "broker" on the PUBACK. Each mode has its own gateway id and fleet (seed), so dedup keeps them apart."""
    name = f"drain-{confirm}"
    db = b.work / f"{name}.db"
    # The default 512 MiB cap would drop part of a 1M backlog.
    env = clean_env(EDGE_GW_STORE_MAX_BYTES="8GiB", EDGE_GW_UPLINK_CONFIRM=confirm)
    adverts = int(backlog * ADVERTS_PER_READING * 1.02)
    t = time.monotonic()
    fill = b.spawn(f"edge-gw run [{name}, fill with the broker unreachable]",
                   gateway_cmd(name, f"mqtt://127.0.0.1:{free_port()}", db, "--tags", "1000", "--seed",
                               str(201 if confirm == "cloud" else 202), "--rate", "0", "--count", str(adverts)),
                   env=env)
    if fill.wait(900) != 0:
        raise RuntimeError(f"fill exited with {fill.returncode}")
    fill_s = time.monotonic() - t
    committed = committed_total(db)
    report = orjson.loads(subprocess.run([sys.executable, "-m", "edge.cli", "status", "--json", "--db", str(db)],
                                         check=True, capture_output=True, env=env).stdout)
    buffered, dropped = report["buffer"]["rows"], report["dropped"]
    rx = b.receiver(name, rx_settings, b.receivers)
    trace: list[tuple[int, int]] = []
    try:
        base = rx.written()
        t0 = time.time_ns()
        flush = b.spawn(f"edge-gw flush [{name}]",
                        [sys.executable, "-m", "edge.cli", "flush", "--db", str(db), "--mqtt", b.broker.url,
                         "--gateway-id", name, "--timeout", "900"], env=env)
        stored_ns = wait_written(rx, base + buffered, [flush], 900, trace)
        statuses = rx.statuses()
        if flush.wait(900) != 0:
            raise RuntimeError(f"flush exited with {flush.returncode}")
        acked_ns = time.time_ns()  # upper bound: flush exits once the last confirmation (or PUBACK) emptied it
    finally:
        b.done_with(rx)
    stored = influx_count(b.influxd.url, f"^{name}$")
    secs = (stored_ns - t0) / NS
    b.results[f"drain_{confirm}"] = {"confirm": confirm, "receivers": b.receivers,
                          "receiver_names": b.receiver_names(name, b.receivers),
                          "written_per_receiver": [st.get("written", 0) if st else 0 for st in statuses],
                          "adverts": adverts, "fill_seconds": round(fill_s, 1), "committed": committed,
                          "buffered": buffered, "dropped": dropped, "stored": stored,
                          "flush_exit_seconds": round((acked_ns - t0) / NS, 2), "seconds": round(secs, 2),
                          "readings_per_s": round(stored / secs),
                          "steady_readings_per_s": steady_rate(trace, base, buffered), "receiver_settings": rx_settings}


def per_receiver(r: dict[str, Any], phase: dict[str, Any]) -> str:
    """'N receiver(s): written, peak RSS and CPU of each', for the line of a throughput figure."""
    parts = [f"{w:,} written, {r['peak_rss_kb'].get(name, 0) / 1024:.1f} MiB peak RSS, "
             f"{r['cpu_s'].get(name, 0.0):.1f} s CPU"
             for name, w in zip(phase["receiver_names"], phase["written_per_receiver"], strict=True)]
    n = phase["receivers"]
    return f"{n} receiver{'s' if n > 1 else ''}: " + "; ".join(parts)


def report(r: dict[str, Any]) -> None:
    print(f"\nload average at start {r['load_start']}, at end {r['load_end']} (2 shared cores)")
    if "sustained" in r:
        s = r["sustained"]
        print(f"sustained [{s['receivers']} receiver(s)]: {s['readings_per_s']:,} readings/s into InfluxDB, "
              f"first receive time to last write "
              f"({s['stored']:,} stored of {s['committed']:,} committed by {s['gateways']} gateways in "
              f"{s['seconds']} s; "
              f"{s['steady_readings_per_s']:,}/s between 10 and 90 % written; receiver {s['receiver_settings']})")
        print(f"  {per_receiver(r, s)}")
    for label in ("default", "low"):
        if f"latency_{label}" not in r:
            continue
        lat = r[f"latency_{label}"]
        print(f"latency [{label}] at {lat['readings_per_s']:,} readings/s: p50 {lat['p50_ms']} ms, p99 "
              f"{lat['p99_ms']} ms, max {lat['max_ms']} ms ({lat['points_measured']:,} points; stored "
              f"{lat['stored']:,} of {lat['committed']:,}; poll every {lat['poll_period_ms']} ms; receiver "
              f"{lat['receiver_settings'] or 'defaults'}, gateway {lat['gateway_env'] or 'defaults'})")
    for confirm in ("broker", "cloud"):
        d = r.get(f"drain_{confirm}")
        if not d:
            continue
        print(f"drain, confirm={confirm} [{d['receivers']} receiver(s)]: {d['stored']:,} of {d['buffered']:,} "
              f"buffered readings in InfluxDB after {d['seconds']} s = "
              f"{d['readings_per_s']:,} readings/s ({d['steady_readings_per_s']:,}/s between 10 and 90 %; flush "
              f"exited after {d['flush_exit_seconds']} s, when the buffer was empty; buffer filled in "
              f"{d['fill_seconds']} s; dropped {d['dropped']}; receiver {d['receiver_settings']})")
        print(f"  {per_receiver(r, d)}")
    if "drain_cloud" in r and "drain_broker" in r:
        c, k = r["drain_cloud"], r["drain_broker"]
        print(f"drain, cloud mode / broker mode: {c['readings_per_s'] / k['readings_per_s']:.1%} (stored in InfluxDB), "
              f"{k['flush_exit_seconds'] / c['flush_exit_seconds']:.1%} (flush until the buffer was empty)")
    print("peak RSS (VmHWM) and CPU time (user + system) of each process:")
    for name, kb in r["peak_rss_kb"].items():
        print(f"  {name:<55} {kb / 1024:8.1f} MiB {r['cpu_s'].get(name, 0.0):8.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gateways", type=int, default=2, help="gateways in the sustained run (default 2)")
    ap.add_argument("--adverts", type=int, default=1_000_000, help="adverts per gateway in the sustained run")
    ap.add_argument("--latency-rate", type=int, default=5000, help="readings/s in the latency runs")
    ap.add_argument("--latency-seconds", type=float, default=15.0)
    ap.add_argument("--low-interval", default="100ms", help="receiver batch.max_interval, low-latency run")
    ap.add_argument("--low-commit", default="20ms", help="gateway store.commit_interval, low-latency run")
    ap.add_argument("--backlog", type=int, default=1_000_000, help="readings in the drain run")
    ap.add_argument("--set", dest="throughput_set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="extra cloud-ingest setting for the sustained and drain runs (repeatable)")
    ap.add_argument("--receivers", type=int, default=1,
                    help="cloud-ingest processes in one shared group for the sustained and drain runs (default 1)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, to check the script")
    ap.add_argument("--only", help="comma-separated phases to run: sustained, latency, drain (default all)")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    ap.add_argument("--keep", type=Path, help="copy the logs of every process into this folder at the end")
    args = ap.parse_args()
    if args.receivers < 1:
        ap.error("--receivers must be at least 1")
    if args.quick:
        args.adverts, args.latency_seconds, args.backlog = 50_000, 4.0, 50_000
    phases = set(args.only.split(",")) if args.only else {"sustained", "latency", "drain"}
    results: dict[str, Any] = {"load_start": loadavg(), "receivers": args.receivers}
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        work = Path(tmp)
        peaks = PeakRss()
        broker = Mosquitto(work / "mosquitto", extra=broker_settings()).start()
        influxd = Influxd(work / "influxd").start()
        assert broker.proc is not None and influxd.proc is not None
        peaks.watch("mosquitto", broker.proc.pid)
        peaks.watch("influxd", influxd.proc.pid)
        b = Bench(work, broker, influxd, peaks, results, args.receivers)
        try:
            subprocess.run([sys.executable, "-c", "from cloud.cli import main; main()", "setup", "--influx",
                            b.influx_url], check=True, capture_output=True, env=clean_env())
            # Throughput runs use the low-latency receiver setting too: under load, size and window close the
            # batches anyway, and the default 10 s timer would only add a wait for the very last partial batch.
            fast = {"batch.max_interval": args.low_interval, **dict(kv.split("=", 1) for kv in args.throughput_set)}
            if "sustained" in phases:
                print(f"[{time.strftime('%H:%M:%S')}] sustained ...", flush=True)
                sustained(b, args.gateways, args.adverts, fast)
            if "latency" in phases:
                print(f"[{time.strftime('%H:%M:%S')}] latency, default settings ...", flush=True)
                latency(b, "default", 101, {}, {}, args.latency_rate, args.latency_seconds)
                print(f"[{time.strftime('%H:%M:%S')}] latency, low-latency settings ...", flush=True)
                latency(b, "low", 102, {"batch.max_interval": args.low_interval},
                        {"EDGE_GW_STORE_COMMIT_INTERVAL": args.low_commit}, args.latency_rate, args.latency_seconds)
            if "drain" in phases:
                for confirm in ("broker", "cloud"):
                    print(f"[{time.strftime('%H:%M:%S')}] drain, confirm={confirm} ...", flush=True)
                    drain(b, args.backlog, fast, confirm)
        finally:
            results["peak_rss_kb"] = peaks.stop()
            results["cpu_s"] = {name: round(v, 1) for name, v in peaks.cpu_s.items()}
            broker.stop()
            influxd.stop()
            if args.keep:
                args.keep.mkdir(parents=True, exist_ok=True)
                logs = [*work.glob("*.log"), work / "mosquitto" / "mosquitto.log", work / "influxd" / "influxd.log"]
                for log in logs:
                    if log.exists():
                        shutil.copy(log, args.keep / log.name)
    results["load_end"] = loadavg()
    report(results)
    if args.json:
        args.json.write_text(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
