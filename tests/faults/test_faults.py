"""The fault suite: seven ways to break the real pipeline, each ending with committed == stored, exactly.

Each test builds its own pipeline (fixture `pipeline`), breaks it, settles it (gateways stopped, buffers flushed,
the collector holding exactly the committed readings) and records a row of the summary table before asserting, so a
failing scenario still shows its numbers.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import sqlite3
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

from faults_pipeline import (
    Outcome,
    Pipeline,
    Point,
    assert_exact,
    collected,
    compare_shared,
    finish,
    sequence,
    wait_until,
)
from servers import free_port

Record = Callable[[Outcome], None]


def test_broker_stopped_under_load_then_restarted(pipeline: Pipeline, record: Record) -> None:
    started = time.monotonic()
    gw = pipeline.gateway("gw-1")
    gw.start(seed=11, tags=20, rate=2500)
    wait_until(lambda: collected(pipeline, "gw-1") >= 500, 30, "readings flowing")
    pipeline.broker.stop()
    at_stop = gw.committed()
    wait_until(lambda: gw.committed() >= at_stop + 2500, 30, "the gateway committing during the outage")
    assert gw.buffered() >= 2000  # a real backlog built up while the broker was away
    pipeline.broker.start()  # same port and persistence directory: the sessions survive
    wait_until(lambda: gw.buffered() < 500, 60, "the backlog drained")
    wait_until(lambda: pipeline.count_stored() >= at_stop + 2500, 60, "the backlog stored")
    outcome, _ = finish(pipeline, record, "1-broker-restart", started)
    assert outcome.sent >= at_stop + 2500
    assert_exact(outcome)


def test_gateway_killed_10_times_while_draining_a_backlog(pipeline: Pipeline, record: Record) -> None:
    started = time.monotonic()
    gw = pipeline.gateway("gw-2", **{"uplink.backfill_rate": "1500.0"})
    # The backlog: a run with no broker to reach, ended once its readings are committed.
    nowhere = f"mqtt://127.0.0.1:{free_port()}"
    proc = gw.start(seed=200, tags=40, rate=0, mqtt_url=nowhere, count=30_000)
    assert proc.wait(120) == 1, gw.tail()  # 1: the buffer was not drained, as there was nowhere to send it
    backlog = gw.committed()
    assert f"adverts=30000 committed={backlog} drained=no" in gw.tail()
    assert backlog > 10_000 and gw.buffered() == backlog
    rng = random.Random(2)
    for i in range(10):
        before = collected(pipeline, "gw-2")
        gw.start(seed=201 + i, tags=10, rate=400)  # a new fleet each time: new measurements, never a repeat
        wait_until(lambda before=before: collected(pipeline, "gw-2") > before + 50, 30,  # type: ignore[misc]
                   "the restarted gateway forwarding")
        time.sleep(rng.uniform(0.0, 0.7))
        draining = gw.buffered()
        gw.kill()
        assert draining > 0, f"round {i}: the backlog was already drained"
    outcome, _ = finish(pipeline, record, "2-gateway-kill9", started)
    assert gw.starts == 11
    assert_exact(outcome)


def test_influxd_stopped_then_restarted_while_messages_flow(pipeline: Pipeline, record: Record) -> None:
    started = time.monotonic()
    gw = pipeline.gateway("gw-3")
    gw.start(seed=31, tags=20, rate=2000)
    wait_until(lambda: pipeline.count_stored() >= 500, 30, "points stored")
    pipeline.influxd.stop()
    at_stop = collected(pipeline, "gw-3")
    # Messages keep flowing through the broker while the database is away.
    wait_until(lambda: collected(pipeline, "gw-3") >= at_stop + 2000, 30, "messages flowing during the outage")
    pipeline.influxd.start()
    wait_until(lambda: pipeline.count_stored() >= at_stop + 2000, 60, "the queued points written")
    outcome, _ = finish(pipeline, record, "3-influxd-restart", started)
    assert_exact(outcome)


def test_receiver_killed_mid_batch(pipeline: Pipeline, record: Record) -> None:
    started = time.monotonic()
    rx = pipeline.receiver
    assert rx is not None
    gw = pipeline.gateway("gw-4")
    gw.start(seed=41, tags=20, rate=2500)
    for _ in range(3):
        stored_before = max(pipeline.count_stored(), 0)

        def holding() -> bool:
            st = rx.status()
            return st.get("pid") == rx.proc.pid and (st.get("inflight_messages", 0) > 0  # type: ignore[union-attr]
                                                     or st.get("queue_points", 0) > 0)

        wait_until(lambda sb=stored_before: pipeline.count_stored() > sb + 300, 30,  # type: ignore[misc]
                   "the receiver writing")
        wait_until(holding, 30, "the receiver holding unacknowledged messages", interval=0.01)
        rx.kill()
        assert rx.proc is not None and rx.proc.returncode == -9
        time.sleep(0.5)  # messages pile up at the broker meanwhile
        rx.start()
    outcome, _ = finish(pipeline, record, "4-receiver-kill9", started)
    assert_exact(outcome)


def test_two_gateways_hear_the_same_tags(pipeline: Pipeline, record: Record) -> None:
    started = time.monotonic()
    a, b = pipeline.gateway("gw-5a"), pipeline.gateway("gw-5b")
    a.start(seed=55, tags=20, rate=1000)
    b.start(seed=55, tags=20, rate=1000)
    wait_until(lambda: min(collected(pipeline, "gw-5a"), collected(pipeline, "gw-5b")) >= 2000, 60,
               "both gateways forwarding")
    committed = pipeline.settle()
    measurements = {(mac, seq) for points in committed.values() for mac, seq, _t in points}
    # Both heard (nearly) the same measurements: the overlap is what dedup has to resolve.
    assert len(measurements) < 0.6 * sum(len(v) for v in committed.values())
    pipeline.wait_stored(len(measurements))
    stored = pipeline.stored()
    outcome = compare_shared("5-two-gateways", committed, stored, started)
    outcome.note = f"{outcome.sent} readings committed by the two gateways are {len(measurements)} measurements"
    record(outcome)
    assert (outcome.lost, outcome.duplicated) == (0, 0), outcome
    assert outcome.stored == len(measurements)
    # Every stored point is a copy its own gateway committed (compare_shared counts any other as duplicated).
    assert {g for g, *_ in stored} <= {"gw-5a", "gw-5b"}


def test_two_gateways_across_a_receiver_restart(pipeline: Pipeline, record: Record) -> None:
    started = time.monotonic()
    rx = pipeline.receiver
    assert rx is not None
    a, b = pipeline.gateway("gw-5c"), pipeline.gateway("gw-5d")
    a.start(seed=56, tags=20, rate=1000)
    b.start(seed=56, tags=20, rate=1000)
    wait_until(lambda: min(collected(pipeline, "gw-5c"), collected(pipeline, "gw-5d")) >= 1000, 60,
               "both gateways forwarding")
    rx.stop()  # a clean restart (SIGTERM): it writes and acknowledges what it holds, then exits
    rx.start()
    at_restart = collected(pipeline, "gw-5c")
    wait_until(lambda: collected(pipeline, "gw-5c") >= at_restart + 1000, 60, "forwarding after the restart")
    committed = pipeline.settle()
    measurements = {(mac, seq) for points in committed.values() for mac, seq, _t in points}
    with contextlib.suppress(TimeoutError):
        pipeline.wait_stored(len(measurements), timeout=20)
    outcome = compare_shared("5b-two-gateways-rx-restart", committed, pipeline.stored(), started)
    outcome.note = (f"{outcome.sent} readings committed by the two gateways are {len(measurements)} measurements; "
                    "the receiver restarts once and loads its dedup memory from dedup.state_file")
    record(outcome)
    assert outcome.lost == 0, outcome
    assert outcome.duplicated == 0, outcome
    assert outcome.stored == len(measurements)


class RowRecorder:
    """Records every row that is ever visible in a buffer (id -> identity), polling it read-only.

    During an outage nothing is acknowledged, so rows leave only by the byte cap, from the head: a row the cap drops
    sat in the buffer for at least the time ~2 % of the cap takes to fill, far longer than the poll interval."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.rows: dict[int, Point] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        last = 0
        with contextlib.closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)) as conn:
            while not self.stop.is_set():
                for i, mac, t, seq in conn.execute(
                        "SELECT id, mac, time_ns, json_extract(fields_json, '$.measurement_sequence_number') "
                        "FROM readings WHERE id > ? ORDER BY id", (last,)):
                    self.rows[i] = (mac, seq, t)
                    last = i
                time.sleep(0.02)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


def dropped_cap(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        row = conn.execute("SELECT value FROM counters WHERE name = 'readings_dropped_cap'").fetchone()
        return int(row[0]) if row else 0


def test_disk_cap_reached_during_an_outage(pipeline: Pipeline, record: Record) -> None:
    started = time.monotonic()
    gw = pipeline.gateway("gw-6", **{"store.max_bytes": '"1MiB"'})
    gw.start(seed=61, tags=20, rate=3000)
    wait_until(lambda: collected(pipeline, "gw-6") >= 500, 30, "readings flowing")
    recorder = RowRecorder(gw.db)
    try:
        pipeline.broker.stop()
        # With the broker gone nothing more is acknowledged: this is the head of the queue for the whole outage.
        with contextlib.closing(sqlite3.connect(f"file:{gw.db}?mode=ro", uri=True)) as conn:
            oldest, last = conn.execute("SELECT min(id), (SELECT seq FROM sqlite_sequence WHERE name = 'readings') "
                                        "FROM readings").fetchone()
        head = int(oldest) if oldest is not None else int(last) + 1
        wait_until(lambda: dropped_cap(gw.db) >= 1500, 60, "the cap dropping the oldest readings")
        gw.stop()  # still during the outage, so that every drop happens while the recorder watches
        time.sleep(0.1)
    finally:
        recorder.close()
    with contextlib.closing(sqlite3.connect(f"file:{gw.db}?mode=ro", uri=True)) as conn:
        kept = {int(i) for (i,) in conn.execute("SELECT id FROM readings")}
    status = gw.status()
    cap = status["dropped"]["cap"]
    assert cap == dropped_cap(gw.db) > 0 and status["dropped"]["age"] == 0
    # Rows seen in the buffer during the outage that it no longer holds. Most were dropped by the cap. A few may have
    # left as delivered: a confirmation the broker sent just before it stopped can reach the gateway after `head`
    # was read (seen once, with the full suite loading both cores). Both take the oldest rows, confirmations first.
    gone = sorted(i for i in recorder.rows if i >= head and i not in kept)
    late = len(gone) - cap
    assert late >= 0, (len(gone), cap)
    # Exactly the oldest: the run of consecutive ids from the head of the queue when the outage began.
    assert gone == list(range(head, head + len(gone))), (head, gone[:3], gone[-3:])
    confirmed_late, dropped = gone[:late], gone[late:]
    gone_points = {recorder.rows[i] for i in dropped}
    pipeline.broker.start()
    gw.start(seed=62, tags=20, rate=1000)  # back up: the daemon drains the rest next to new readings
    wait_until(lambda: gw.buffered() < 300, 60, "the backlog drained")

    def note(committed: dict[str, set[Point]]) -> str:
        anyway = len(committed["gw-6"] & gone_points)
        return (f"{anyway} of the {cap} dropped readings had reached the broker before it stopped (published, "
                "PUBACK lost) and are stored" if anyway else "")

    outcome, committed = finish(pipeline, record, "6-disk-cap", started, {"gw-6": gone_points}, note)
    assert all(recorder.rows[i] in committed["gw-6"] for i in confirmed_late)  # delivered, as their deletion says
    anyway = sorted(i for i in dropped if recorder.rows[i] in committed["gw-6"])
    # Dropped yet delivered can only be what was in flight when the broker stopped: the oldest of the dropped.
    assert anyway == dropped[:len(anyway)]
    assert_exact(outcome, len(anyway))


def inspect(db: Path) -> tuple[str, int]:
    """Open a copied buffer as a fresh process would after a power cut (no -shm: recovery from the -wal)."""
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        check = conn.execute("PRAGMA integrity_check").fetchone()[0]
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'readings'").fetchone()
        return str(check), int(row[0]) if row else 0


def backfilled_bytes(db: Path) -> int:
    """How much of the -wal a real power cut cannot take back: the frames a checkpoint already copied into the
    database file (nBackfill in the -shm's checkpoint info, native byte order). A checkpoint syncs the -wal before it
    writes the database file, so those frames were on disk; frames after them may not have been (synchronous=NORMAL).
    """
    shm = Path(f"{db}-shm").read_bytes()
    backfill = int(struct.unpack_from("=I", shm, 96)[0])
    if backfill == 0:
        return 0
    page_size = int(struct.unpack_from(">H", db.read_bytes()[:100], 16)[0])
    page_size = 65536 if page_size == 1 else page_size
    return 32 + backfill * (24 + page_size)


def copy_buffer(db: Path, to: Path, wal_bytes: int | None = None) -> Path:
    """Copy the buffer file and its -wal (optionally only the first wal_bytes of it) into `to`."""
    to.mkdir(parents=True)
    target = to / db.name
    shutil.copyfile(db, target)
    wal = Path(f"{db}-wal")
    if wal.exists():
        data = wal.read_bytes()
        Path(f"{target}-wal").write_bytes(data if wal_bytes is None else data[:wal_bytes])
    return target


def test_power_cut_copy_of_file_and_wal(pipeline: Pipeline, record: Record, tmp_path: Path) -> None:
    started = time.monotonic()
    gw = pipeline.gateway("gw-7")
    rng = random.Random(7)
    at_risk: list[int] = []
    cut_off: list[int] = []
    for i in range(5):
        base = gw.committed()
        gw.start(seed=70 + i, tags=20, rate=2000)
        wait_until(lambda base=base: gw.committed() > base + 300, 30, "the gateway committing")  # type: ignore[misc]
        time.sleep(rng.uniform(0.0, 1.0))
        known = sequence(gw.db)  # committed before the cut, read from the live file
        gw.kill()
        pristine = copy_buffer(gw.db, tmp_path / f"pristine{i}")  # never opened: the machine restarts from it
        cut = copy_buffer(gw.db, tmp_path / f"cut{i}")
        wal_size = Path(f"{gw.db}-wal").stat().st_size
        synced = backfilled_bytes(gw.db)
        torn = copy_buffer(gw.db, tmp_path / f"torn{i}", wal_bytes=rng.randrange(synced, wal_size + 1))
        worst = copy_buffer(gw.db, tmp_path / f"worst{i}", wal_bytes=synced)
        # The copy opens, is intact, and holds every reading committed before the cut (and whatever came after).
        check, seq_cut = inspect(cut)
        assert (check, seq_cut >= known) == ("ok", True), (check, seq_cut, known)
        # Only part of the -wal on disk: still opens and is intact, at an earlier consistent commit.
        check_t, seq_torn = inspect(torn)
        check_w, seq_worst = inspect(worst)  # only what a checkpoint had made durable
        assert (check_t, check_w) == ("ok", "ok")
        assert seq_worst <= seq_torn <= seq_cut, (seq_worst, seq_torn, seq_cut)
        cut_off.append(seq_cut - seq_torn)
        at_risk.append(seq_cut - seq_worst)
        # The machine comes back from the copy that was cut at the kill (a fresh, untouched copy of it).
        for suffix in ("", "-wal", "-shm"):
            Path(f"{gw.db}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(pristine, gw.db)
        if Path(f"{pristine}-wal").exists():
            shutil.copyfile(f"{pristine}-wal", f"{gw.db}-wal")
    outcome, _ = finish(pipeline, record, "7-power-cut", started, note=lambda _c: (
        f"committed readings missing from each randomly cut -wal copy: {cut_off} (each opened, intact, at an "
        f"earlier commit); committed after the last checkpoint at each kill, so at risk from a real power cut under "
        f"synchronous=NORMAL: at most {at_risk}"))
    assert_exact(outcome)
