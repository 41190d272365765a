"""The real pipeline for the fault suite: simulated `edge-gw run` gateways -> Mosquitto (with the shipped
cloud-ingest.conf settings) -> `cloud-ingest run` -> influxd, all as processes stopped by PID.

How "committed at the gateway" is known exactly:
- `sqlite_sequence` of `readings` in each gateway's buffer is the number of readings ever committed: ids come from
  AUTOINCREMENT, are handed out in order, never reused, and roll back with an uncommitted transaction. So a kill -9
  that loses in-memory readings also takes back their ids, and ids 1..N are exactly the committed readings.
- A gateway only ever publishes rows of its buffer, so every reading a persistent-session subscriber sees on
  `edge-gw/<id>/batch` is a committed one. After `edge-gw flush` has emptied the buffer, the subscriber's set of
  distinct (mac, measurement sequence, time_ns) per gateway must therefore hold exactly N - dropped identities; the
  suite asserts that count, which makes that set the committed set (not a sample of it). The subscriber uses
  clean_session=False on the same broker, so a broker restart or a reconnect loses nothing it was sent.
- InfluxDB side: every raw point's (mac tag, measurement_sequence_number, time). A point is identified by its series
  and time, so "duplicated" means a point that was not committed at any gateway (or, for two gateways hearing the same
  tags, a second point of one measurement).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import servers
from paho.mqtt.enums import CallbackAPIVersion
from servers import Influxd, Mosquitto

from edge.store import Store

REPO = Path(__file__).resolve().parents[2]
SNIPPET = REPO / "cloud" / "mosquitto" / "cloud-ingest.conf"
EDGE = [sys.executable, "-c", "from edge.cli import main; main()"]
CLOUD = [sys.executable, "-c", "from cloud.cli import main; main()"]

# (mac, measurement_sequence_number, time_ns): the identity the issue asks to compare.
Point = tuple[str, int, int]


def wait_until(cond: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def broker_settings() -> list[str]:
    """The shipped Mosquitto snippet, minus what the private test broker sets itself (persistence, its dir).
    autosave_interval stays as shipped; the test broker is stopped with SIGTERM, which saves the queue."""
    keep = []
    for raw in SNIPPET.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#") and not line.startswith(("persistence_location", "persistence ")):
            keep.append(line)
    return keep


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("CLOUD_INGEST_", "EDGE_GW_"))}


def stop_pid(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
    servers.stop_pid(proc, sig, timeout)  # the daemons get longer than the servers' default to flush on SIGTERM


class Collector:
    """A persistent-session subscriber to every gateway batch: per gateway, every reading's identity."""

    def __init__(self, port: int) -> None:
        self.points: dict[str, set[Point]] = {}
        self.deliveries = 0
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fault-collector", clean_session=False)
        self.client.max_inflight_messages_set(1000)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_message = self._on_message
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *_a: self.subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("edge-gw/+/batch", qos=1)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            raise TimeoutError("collector did not subscribe")

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        batch = json.loads(msg.payload)
        got = {(r["mac"], r["fields"]["measurement_sequence_number"], r["time_ns"]) for r in batch["readings"]}
        with self.lock:
            self.deliveries += len(batch["readings"])
            self.points.setdefault(batch["gateway"], set()).update(got)

    def of(self, gateway: str) -> set[Point]:
        with self.lock:
            return set(self.points.get(gateway, set()))

    def count(self, gateway: str) -> int:
        with self.lock:
            return len(self.points.get(gateway, ()))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def sequence(db: Path) -> int:
    """Readings ever committed to a buffer (its AUTOINCREMENT high-water mark); read-only, never checkpoints."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        try:
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'readings'").fetchone()
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):  # a gateway that is still creating its buffer
                return 0
            raise
        return int(row[0]) if row else 0


def buffered(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        try:
            return int(conn.execute("SELECT count(*) FROM readings").fetchone()[0])
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):
                return 0
            raise


@dataclass
class Gateway:
    """One simulated `edge-gw run` gateway with its own buffer file and config."""

    name: str
    workdir: Path
    broker: Mosquitto
    settings: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    ledger: bool = False  # keep the committed set in the buffer itself (see add_ledger)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.ledger:
            self.add_ledger()

    def add_ledger(self) -> None:
        """Record every committed reading in a table of the buffer, by a trigger in the same transaction as the insert.

        The scenarios in which the broker loses messages cannot take the committed set from the collector, which
        loses them too; this ledger is exact whatever the broker does (a rolled-back insert takes its row back)."""
        Store(self.db).close()  # the schema
        with contextlib.closing(sqlite3.connect(self.db)) as conn:
            conn.execute("CREATE TABLE fault_ledger (id INTEGER PRIMARY KEY, mac TEXT, seq INTEGER, time_ns INTEGER)")
            conn.execute("CREATE TRIGGER fault_ledger AFTER INSERT ON readings BEGIN INSERT INTO fault_ledger VALUES "
                         "(new.id, new.mac, json_extract(new.fields_json, '$.measurement_sequence_number'), "
                         "new.time_ns); END")
            conn.commit()

    def ledger_points(self) -> set[Point]:
        with contextlib.closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)) as conn:
            return {(m, int(q), int(t)) for m, q, t in conn.execute("SELECT mac, seq, time_ns FROM fault_ledger")}

    @property
    def db(self) -> Path:
        return self.workdir / "gateway.db"

    @property
    def log(self) -> Path:
        return self.workdir / "gateway.log"

    def config(self) -> Path:
        # Reconnect quickly after an outage: the default backoff grows to 60 s, which a short test would wait out.
        # The receiver writes every 0.2 s here, so a confirmation 1 s late means it is not coming.
        sections: dict[str, dict[str, str]] = {"uplink": {"backoff_min": '"0.1s"', "backoff_max": '"1s"',
                                                          "confirm_timeout": '"1s"'}}
        for key, value in self.settings.items():
            section, name = key.split(".", 1)
            sections.setdefault(section, {})[name] = value
        text = "".join(f"[{s}]\n" + "".join(f"{k} = {v}\n" for k, v in kv.items()) for s, kv in sections.items())
        path = self.workdir / "gateway.toml"
        path.write_text(text)
        return path

    def start(self, *, seed: int, tags: int, rate: float, mqtt_url: str | None = None, count: int | None = None
              ) -> subprocess.Popen[bytes]:
        args = [*EDGE, "run", "--config", str(self.config()), "--gateway-id", self.name,
                "--mqtt", mqtt_url or self.broker.url, "--db", str(self.db), "--source", "simulate",
                "--tags", str(tags), "--rate", str(rate), "--seed", str(seed), "--assume-synced"]
        if count is not None:
            args += ["--count", str(count), "--drain", "0"]
        with open(self.log, "ab") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=clean_env())
        self.starts += 1
        return self.proc

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        stop_pid(self.proc, signal.SIGKILL)
        assert self.proc is not None and self.proc.returncode == -signal.SIGKILL, self.tail()

    def stop(self) -> None:
        stop_pid(self.proc)
        assert self.proc is None or self.proc.returncode == 0, self.tail()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def committed(self) -> int:
        return sequence(self.db) if self.db.exists() else 0

    def buffered(self) -> int:
        return buffered(self.db) if self.db.exists() else 0

    def flush(self, timeout: float = 90.0) -> None:
        """Forward what is still buffered (the daemon must be stopped): afterwards the buffer is empty."""
        assert not self.running()
        if not self.db.exists():
            return
        proc = subprocess.run([*EDGE, "flush", "--config", str(self.config()), "--gateway-id", self.name,
                               "--mqtt", self.broker.url, "--db", str(self.db), "--timeout", str(timeout)],
                              capture_output=True, text=True, check=False, env=clean_env(), timeout=timeout + 30)
        assert proc.returncode == 0, proc.stderr
        assert self.buffered() == 0

    def status(self) -> dict[str, Any]:
        proc = subprocess.run([*EDGE, "status", "--db", str(self.db), "--json"], capture_output=True, text=True,
                              check=True, env=clean_env())
        return json.loads(proc.stdout)  # type: ignore[no-any-return]


@dataclass
class Receiver:
    """`cloud-ingest run` with a fixed client id (its persistent session survives kills and restarts)."""

    workdir: Path
    broker: Mosquitto
    influx_url: str
    proc: subprocess.Popen[bytes] | None = None
    extra: list[str] = field(default_factory=list)  # more `--set key=value` settings

    @property
    def log(self) -> Path:
        return self.workdir / "receiver.log"

    @property
    def status_file(self) -> Path:
        return self.workdir / "receiver-status.json"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        before = self.log.read_bytes().count(b"subscribed to") if self.log.exists() else 0
        with open(self.log, "ab") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [*CLOUD, "run", "--mqtt", self.broker.url, "--influx", self.influx_url, "--client-id", "fault-rx",
                 "--metrics-port", "0", "--status-file", str(self.status_file),
                 "--set", "batch.max_interval=0.2", "--set", "influx.backoff_max=0.5", "--set", "rollups.enabled=false",
                 "--set", "status.interval=0.2", *(a for kv in self.extra for a in ("--set", kv))],
                stdout=out, stderr=subprocess.STDOUT, env=clean_env())
        wait_until(lambda: self.log.read_bytes().count(b"subscribed to") > before, 30, "receiver subscribed")

    def status(self) -> dict[str, Any]:
        try:
            return json.loads(self.status_file.read_bytes())  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return {}

    def kill(self) -> None:
        stop_pid(self.proc, signal.SIGKILL)

    def stop(self) -> None:
        stop_pid(self.proc)
        assert self.proc is None or self.proc.returncode == 0, self.log.read_text(errors="replace")[-3000:]


@dataclass
class Outcome:
    scenario: str
    sent: int  # readings committed at the gateways
    stored: int  # points in InfluxDB
    dropped: int  # dropped by the gateway's buffer policy (counted in `edge-gw status`)
    lost: int
    duplicated: int
    seconds: float = 0.0
    note: str = ""


class Pipeline:
    def __init__(self, workdir: Path, broker_extra: list[str] | None = None) -> None:
        self.workdir = workdir
        self.broker = Mosquitto(workdir / "mosquitto", extra=[*broker_settings(), *(broker_extra or [])])
        self.influxd = Influxd(workdir / "influxd")
        self.gateways: list[Gateway] = []
        self.collector: Collector | None = None
        self.receiver: Receiver | None = None

    def start(self, *, receiver: bool = True, receiver_settings: list[str] | None = None) -> Pipeline:
        self.broker.start()
        self.influxd.start()
        url = f"{self.influxd.url}/ruuvi"
        setup = subprocess.run([*CLOUD, "setup", "--influx", url], capture_output=True, text=True, check=False,
                               env=clean_env(), timeout=60)
        assert setup.returncode == 0, setup.stdout + setup.stderr
        self.collector = Collector(self.broker.port)
        self.receiver = Receiver(self.workdir / "receiver", self.broker, url, extra=receiver_settings or [])
        if receiver:
            self.receiver.start()
        return self

    def gateway(self, name: str, *, ledger: bool = False, workdir: Path | None = None, **settings: str) -> Gateway:
        gw = Gateway(name, workdir or self.workdir / name, self.broker, dict(settings), ledger=ledger)
        self.gateways.append(gw)
        return gw

    def close(self) -> None:
        for gw in self.gateways:
            stop_pid(gw.proc, signal.SIGKILL)
        if self.receiver is not None:
            stop_pid(self.receiver.proc)
        if self.collector is not None:
            self.collector.close()
        self.broker.stop()
        self.influxd.stop()

    # -- what the database holds ----------------------------------------------------------------------------------

    def stored(self) -> list[tuple[str, str, int, int]]:
        """Every raw point as (gateway, mac, measurement sequence, time_ns)."""
        q = urllib.parse.urlencode({"q": 'SELECT "measurement_sequence_number", "gateway", "mac" FROM "raw"."ruuvi"',
                                    "db": "ruuvi", "epoch": "ns"})
        with urllib.request.urlopen(f"{self.influxd.url}/query?{q}", timeout=60) as r:
            res = json.loads(r.read())
        rows: list[tuple[str, str, int, int]] = []
        for s in res["results"][0].get("series", []):
            cols = s["columns"]
            for v in s["values"]:
                d = dict(zip(cols, v, strict=True))
                rows.append((d["gateway"], d["mac"], int(d["measurement_sequence_number"]), int(d["time"])))
        assert "error" not in res["results"][0], res
        return rows

    def count_stored(self) -> int:
        q = urllib.parse.urlencode({"q": 'SELECT count("measurement_sequence_number") FROM "raw"."ruuvi"',
                                    "db": "ruuvi"})
        try:
            with urllib.request.urlopen(f"{self.influxd.url}/query?{q}", timeout=30) as r:
                res = json.loads(r.read())
        except OSError:
            return -1
        series = res["results"][0].get("series")
        return int(series[0]["values"][0][1]) if series else 0

    def wait_receiver_idle(self, timeout: float = 60.0) -> None:
        """Until the receiver holds nothing unacknowledged or unwritten (twice in a row, by its status file)."""
        assert self.receiver is not None
        rx = self.receiver
        seen = [0]

        def idle() -> bool:
            st = rx.status()
            quiet = bool(st) and st.get("queue_batches") == 0 and st.get("queue_points") == 0 \
                and st.get("inflight_messages") == 0 and st.get("sink_state") == "ok"
            seen[0] = seen[0] + 1 if quiet else 0
            return seen[0] >= 3

        wait_until(idle, timeout, "receiver idle", interval=0.25)

    # -- the end of every scenario ----------------------------------------------------------------------------------

    def settle(self, dropped: dict[str, set[Point]] | None = None, timeout: float = 90.0) -> dict[str, set[Point]]:
        """Stop every gateway, flush its buffer, and wait until the collector holds every committed reading that the
        buffer policy did not drop (`dropped`: the identities of the dropped ones, per gateway). Returns what the
        collector holds per gateway: exactly the committed readings, minus dropped ones that never reached the
        broker (one that was in flight when the broker went away can have arrived although its PUBACK did not)."""
        assert self.collector is not None
        collector = self.collector
        dropped = dropped or {}
        committed: dict[str, set[Point]] = {}
        for gw in self.gateways:
            if gw.running():
                gw.stop()
            gw.flush()
            if gw.ledger:
                committed[gw.name] = gw.ledger_points()
                assert len(committed[gw.name]) == gw.committed()
                continue
            gone = dropped.get(gw.name, set())
            want = gw.committed() - len(gone)
            wait_until(lambda gw=gw, gone=gone, want=want: len(collector.of(gw.name) - gone) >= want,  # type: ignore[misc]
                       timeout, f"{want} readings of {gw.name} at the collector")
            committed[gw.name] = collector.of(gw.name)
            # Exactly N - dropped distinct identities besides the dropped ones: every committed reading, and nothing
            # else, was published.
            assert len(committed[gw.name] - gone) == want, (gw.name, len(committed[gw.name] - gone), want)
        return committed

    def explain(self, committed: dict[str, set[Point]], stored: list[tuple[str, str, int, int]]) -> None:
        """Print what is missing or extra, and the receiver's view, for a failing scenario."""
        want = {(gw, *p) for gw, points in committed.items() for p in points}
        have = set(stored)
        for name, diff in (("missing", sorted(want - have, key=lambda x: x[3])),
                           ("extra", sorted(have - want, key=lambda x: x[3]))):
            if diff:
                print(f"{name}: {len(diff)}, times {diff[0][3]}..{diff[-1][3]}, first {diff[:3]}")
        assert self.receiver is not None
        print("receiver status:", json.dumps(self.receiver.status())[:1500])
        print("receiver log:", self.receiver.log.read_text(errors="replace")[-3000:])

    def wait_stored(self, expected: int, timeout: float = 90.0) -> None:
        wait_until(lambda: self.count_stored() >= expected, timeout, f"{expected} points in InfluxDB", interval=0.2)
        self.wait_receiver_idle()


def compare(scenario: str, sent: int, committed: dict[str, set[Point]], stored: list[tuple[str, str, int, int]],
            started: float, dropped: int = 0) -> Outcome:
    """The expected points (per gateway) against the stored ones, by full identity (gateway, mac, sequence, time)."""
    want = {(gw, *p) for gw, points in committed.items() for p in points}
    have = set(stored)
    return Outcome(scenario, sent, len(stored), dropped, lost=len(want - have),
                   duplicated=len(have - want) + len(stored) - len(have), seconds=time.monotonic() - started)


def compare_shared(scenario: str, committed: dict[str, set[Point]], stored: list[tuple[str, str, int, int]],
                   started: float) -> Outcome:
    """Gateways that hear the same tags: each measurement (mac, sequence) once, as a copy some gateway committed."""
    copies = {(gw, *p) for gw, points in committed.items() for p in points}
    measurements = {(mac, seq) for points in committed.values() for mac, seq, _t in points}
    genuine = [row for row in stored if row in copies]
    kept = {(mac, seq) for _gw, mac, seq, _t in genuine}
    return Outcome(scenario, len(copies), len(stored), 0, lost=len(measurements - kept),
                   duplicated=len(stored) - len(kept), seconds=time.monotonic() - started)


def collected(p: Pipeline, gateway: str) -> int:
    assert p.collector is not None
    return p.collector.count(gateway)


def finish(p: Pipeline, record: Callable[[Outcome], None], scenario: str, started: float,
           dropped: dict[str, set[Point]] | None = None,
           note: Callable[[dict[str, set[Point]]], str] | None = None) -> tuple[Outcome, dict[str, set[Point]]]:
    committed = p.settle(dropped)
    with contextlib.suppress(TimeoutError):  # a shortfall is reported by the comparison, with the numbers
        p.wait_stored(sum(len(v) for v in committed.values()))
    stored = p.stored()
    sent = sum(gw.committed() for gw in p.gateways)
    outcome = compare(scenario, sent, committed, stored, started, sum(len(v) for v in (dropped or {}).values()))
    if note is not None:
        outcome.note = note(committed)
    record(outcome)
    if outcome.lost or outcome.duplicated:
        p.explain(committed, stored)
    return outcome, committed


def assert_exact(outcome: Outcome, delivered_anyway: int = 0) -> None:
    assert (outcome.lost, outcome.duplicated) == (0, 0), outcome
    assert outcome.stored == outcome.sent - outcome.dropped + delivered_anyway, outcome
