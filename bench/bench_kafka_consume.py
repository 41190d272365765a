"""`cloud-ingest run --kafka` drain rate against InfluxDB's raw /write ceiling, in the same run (issue 11).

N readings (DF5-like points, 1000 series, as bench_influx_ceiling.py makes them) are produced to a private Kafka
broker first, as records of one reading or of one tag's readings per 5000-point write batch (what the bridge would
produce). Then 1 and 2 real `python -m cloud.cli run --kafka` processes (one consumer group per run, a fresh
database each) drain the topic into a private influxd; the rate is the readings over the time from the first written
point to the last (the group join before it is printed on its own). The ceiling is bench_influx_ceiling's
pre-encoded 5000-point batches with 1 and 2 writers on the same influxd.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_kafka_consume.py [--readings 1000000] [--record reading batch]
        [--consumers 1 2] [--ceiling-points 300000] [--profile] [--bare] [--variants ARGS ... [--repeat N]]

`--profile` runs the one-consumer drains under cProfile and prints the top functions by cumulative time.
`--bare` drains each case a second time with bench/kafka_bare_consumer.py (consume, decode, encode, POST; no dedup,
dead letters or ordered commits): the floor of a Python consumer on this machine, in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from bench_influx_ceiling import influx_ceiling, make_points  # noqa: E402
from confluent_kafka import Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from kafka_server import Kafka  # noqa: E402
from servers import Influxd, cpu_seconds  # noqa: E402

from cloud.kafka.records import Codec  # noqa: E402

PARTITIONS = 6
CHUNK = 5000  # points per produce call: one write batch of the bridge


def topic_name(record: str) -> str:
    return f"bench.{record}"


def produce(kafka: Kafka, n: int, record: str, start_ns: int) -> tuple[int, float]:
    """Produce n readings to bench.<record>; return (records, seconds)."""
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})  # kept: the result needs the client alive
    new = NewTopic(topic_name(record), num_partitions=PARTITIONS, replication_factor=1)
    admin.create_topics([new])[topic_name(record)].result(30)
    p = Producer({"bootstrap.servers": kafka.bootstrap, "enable.idempotence": True, "acks": "all",
                  "linger.ms": 20, "batch.size": 1_000_000, "compression.type": "lz4",
                  "queue.buffering.max.messages": 1_000_000})
    codec = Codec("json")
    records = 0
    t0 = time.perf_counter()
    for i in range(0, n, CHUNK):
        # 1000 series, 1 ms apart per series, continuing across chunks: every reading is its own point.
        pts = make_points(min(CHUNK, n - i), start_ns + (i // 1000) * 1_000_000)
        for j, pt in enumerate(pts):
            # make_points numbers from 0 in each call: without this, dedup would rightly take the next chunk's
            # points (same tag, sequence number and values) for copies of this one's.
            pt.fields["measurement_sequence_number"] = ((i + j) // 1000) % 65536
        for rec in codec.records(pts, record):
            while True:
                try:
                    p.produce(topic_name(record), key=rec.key, value=rec.value, headers=rec.headers)
                    break
                except BufferError:
                    p.poll(0.05)
            records += 1
        p.poll(0)
    assert p.flush(120) == 0
    return records, time.perf_counter() - t0


def written(status_files: list[Path]) -> int:
    total = 0
    for f in status_files:
        with contextlib.suppress(FileNotFoundError, ValueError):  # not written yet, or being replaced
            total += int(json.loads(f.read_bytes()).get("written", 0))
    return total


def drain(kafka: Kafka, influx: Influxd, workdir: Path, *, record: str, consumers: int, readings: int,
          profile: bool, extra: list[str], bare: bool = False, name: str = "", drop: bool = False) -> dict[str, float]:
    db = f"drain_{record}_{consumers}{'_bare' if bare else ''}{name}"
    q = urllib.parse.urlencode({"q": f'CREATE DATABASE "{db}"'}).encode()
    urllib.request.urlopen(f"{influx.url}/query", data=q, timeout=30).read()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUD_INGEST_")}
    env["PYTHONPATH"] = str(REPO)
    # A variant's NAME=value words go to the environment (e.g. PYTHONMALLOC=malloc), the rest to `run`.
    env_words = [w for w in extra if w.split("=", 1)[0].isupper() and "=" in w]
    env.update(w.split("=", 1) for w in env_words)
    extra = [w for w in extra if w not in env_words]
    procs = []
    status_files = []
    t_start = time.monotonic()
    for i in range(consumers):
        d = workdir / f"{db}-{i}"
        d.mkdir(parents=True)
        status_files.append(d / "status.json")
        prof = ["-m", "cProfile", "-o", str(d / "profile.out")] if profile else []
        args = [sys.executable, str(REPO / "bench" / "kafka_bare_consumer.py"), kafka.bootstrap, topic_name(record),
                f"bench-{db}", f"{influx.url}/{db}", str(d / "status.json"), str(i), str(consumers)] if bare else [
                sys.executable, *prof, "-m", "cloud.cli", "run", "--kafka", kafka.bootstrap,
                "--influx", f"{influx.url}/{db}", "--client-id", f"bench-{i + 1}",
                "--status-file", str(d / "status.json"), "--metrics-port", "0",
                "--set", f"kafka.topic={topic_name(record)}", "--set", f"kafka.group=bench-{db}",
                "--set", "rollups.enabled=false", "--set", "status.interval=0.2", *extra]
        with open(d / "consumer.log", "wb") as out:
            # PYTHONPATH=<another checkout> drains with that code (`python -m` looks in its cwd first).
            procs.append(subprocess.Popen(args, cwd=env["PYTHONPATH"], env=env, stdout=out, stderr=subprocess.STDOUT))
    t_first = None
    last, last_change = 0, t_start
    try:
        while True:
            n = written(status_files)
            now = time.monotonic()
            if n > 0 and t_first is None:
                t_first = now
            if n >= readings:
                break
            if n != last:
                last, last_change = n, now
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(f"a consumer exited: see {workdir}")
            if now - last_change > 60:
                raise RuntimeError(f"drain stalled for 60 s at {n} of {readings} written")
            time.sleep(0.05)
        t_done = time.monotonic()
        cpu_s = sum(cpu_seconds(p.pid) for p in procs)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(60)
    assert t_first is not None
    stored = stored_count(influx, db)
    if stored != readings:
        raise RuntimeError(f"{db}: {stored} points stored, {readings} expected")
    if drop:
        drop_database(influx, db)
    return {"rate": readings / (t_done - t_first), "join_s": t_first - t_start, "wall_s": t_done - t_start,
            "cpu_us": cpu_s / readings * 1e6}


def drop_database(influx: Influxd, db: str) -> None:
    """So that its compactions do not load the next drains (the ceiling moved by a third between A/B runs)."""
    q = urllib.parse.urlencode({"q": f'DROP DATABASE "{db}"'}).encode()
    urllib.request.urlopen(f"{influx.url}/query", data=q, timeout=120).read()


def stored_count(influx: Influxd, db: str) -> int:
    q = urllib.parse.urlencode({"q": 'SELECT count("temperature") FROM "ruuvi"', "db": db})
    with urllib.request.urlopen(f"{influx.url}/query?{q}", timeout=120) as r:
        res = json.loads(r.read())
    series = res["results"][0].get("series")
    return int(series[0]["values"][0][1]) if series else 0


def print_profile(workdir: Path) -> None:
    import pstats

    for f in sorted(workdir.glob("*-0/profile.out")):
        print(f"\n--- cProfile of {f.parent.name} (top 25 by tottime)")
        pstats.Stats(str(f)).sort_stats("tottime").print_stats(25)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readings", type=int, default=1_000_000)
    ap.add_argument("--record", nargs="+", default=["batch", "reading"], choices=["batch", "reading"])
    ap.add_argument("--consumers", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--ceiling-points", type=int, default=300_000)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--bare", action="store_true",
                    help="also drain with bench/kafka_bare_consumer.py: the floor of any Python consumer")
    ap.add_argument("--consumer-args", nargs="*", default=[], help="more `run` arguments, e.g. --log-level debug")
    ap.add_argument("--variants", nargs="+", metavar="ARGS",
                    help="A/B in one run: drain once per variant (each a quoted string of more `run` arguments and "
                         "NAME=value environment words, '' for none), taking turns, --repeat times, each against "
                         "the ceiling right before it")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--keep", type=Path, help="keep the consumers' logs, status and profiles in this (new) folder")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.keep:
            args.keep.mkdir(parents=True)
        files = args.keep or work
        # Kafka's default initial rebalance delay, as the Ansible role's broker has it (the test broker sets 0): two
        # consumers that start together then get one assignment, instead of one taking all six partitions for a
        # few seconds and a rebalance. The wait is in the printed group join, not in the rate.
        kafka = Kafka(work / "kafka", heap="512m", extra=["group.initial.rebalance.delay.ms=3000"]).start()
        influx = Influxd(work / "influxd").start()
        try:
            start_ns = time.time_ns() - 6 * 3600 * 10**9
            for record in args.record:
                records, secs = produce(kafka, args.readings, record, start_ns)
                print(f"produced {args.readings} readings as {records} {record} records in {secs:.1f} s "
                      f"({args.readings / secs:,.0f} readings/s)", flush=True)
            run = 0
            if args.variants:
                for record in args.record:
                    for n in args.consumers:
                        for i in range(args.repeat):
                            for v, variant in enumerate(args.variants):
                                run += 1
                                ceiling = influx_ceiling(f"{influx.url}/ceiling{run}w1", writers=1,
                                                         points=args.ceiling_points, start_ns=start_ns)
                                drop_database(influx, f"ceiling{run}w1")
                                r = drain(kafka, influx, files, record=record, consumers=n, readings=args.readings,
                                          profile=False, extra=[*args.consumer_args, *shlex.split(variant)],
                                          name=f"_v{v}_{i}", drop=True)
                                print(f"variant {variant or '(none)'!r} record={record} consumers={n}: "
                                      f"{r['rate']:,.0f} readings/s = {100 * r['rate'] / ceiling:.0f} % of the "
                                      f"1-writer ceiling ({ceiling:,.0f}); consumer CPU {r['cpu_us']:.1f} us/reading",
                                      flush=True)
                return
            for record in args.record:
                for n in args.consumers:
                    # The ceiling right before each drain: other jobs on the machine change it by 2x in minutes.
                    run += 1
                    ceilings = {}
                    for writers in (1, 2):
                        ceilings[writers] = influx_ceiling(f"{influx.url}/ceiling{run}w{writers}", writers=writers,
                                                           points=args.ceiling_points, start_ns=start_ns)
                        drop_database(influx, f"ceiling{run}w{writers}")
                    print(f"influx /write ceiling: {ceilings[1]:,.0f} points/s with 1 writer, {ceilings[2]:,.0f} "
                          f"with 2", flush=True)
                    for bare in (False, True) if args.bare else (False,):
                        r = drain(kafka, influx, files, record=record, consumers=n, readings=args.readings,
                                  profile=args.profile and n == 1 and not bare, extra=args.consumer_args, bare=bare,
                                  drop=True)
                        print(f"drain record={record} consumers={n}{' BARE' if bare else ''}: "
                              f"{r['rate']:,.0f} readings/s "
                              f"= {100 * r['rate'] / ceilings[1]:.0f} % of the 1-writer ceiling, "
                              f"{100 * r['rate'] / ceilings[2]:.0f} % of the 2-writer ceiling "
                              f"(group join {r['join_s']:.1f} s, wall {r['wall_s']:.1f} s; consumer CPU "
                              f"{r['cpu_us']:.1f} us/reading; {args.readings} points stored)", flush=True)
            if args.profile:
                print_profile(files)
        finally:
            influx.stop()
            kafka.stop()


if __name__ == "__main__":
    main()
