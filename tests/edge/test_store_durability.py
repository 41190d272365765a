"""No committed reading is lost: kill -9 of a writing process, and copies of the db + -wal taken while it writes.

Run as a script, this file is the writer: `python test_store_durability.py DB RUN` puts readings through a
StoreWriter as fast as a 50k/s source would and prints `writer.committed` every time it grows. Readings are put in
order and committed in order, so a printed K means readings 0..K-1 of that run were committed before the print.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
from fakeclock import FakeClock
from test_store import reading

from edge.store import Store
from edge.store.store import SYNC_INTERVAL_NS

REPO = Path(__file__).resolve().parents[2]
BASE_NS = 1_763_900_000_000_000_000
MAX_RUN_S = 30.0  # the writer stops by itself, should a test die without killing it


def crash_reading_values(run: int, n: int) -> tuple[str, int, bytes, str]:
    fields = {"data_format": 5, "temperature": round(n / 1000, 3), "measurement_sequence_number": n % 65535}
    return f"c1:00:00:00:00:{run:02x}", BASE_NS + n, run.to_bytes(2, "big") + n.to_bytes(6, "big"), \
        orjson.dumps(fields).decode()


async def _write(db: str, run: int) -> None:
    from edge.clock import SystemClock
    from edge.metrics import Counters
    from edge.model import Reading
    from edge.store import Store, StoreLimits, StoreWriter

    # BASE_NS is in the past of the real clock: no age limit here, or the age bound would drop these readings.
    store = Store(db, clock=SystemClock(assume_synced=True), limits=StoreLimits(max_age_s=100 * 365 * 86400.0))
    writer = StoreWriter(store, Counters())
    task = asyncio.create_task(writer.run())
    n = printed = 0
    deadline = time.monotonic() + MAX_RUN_S
    while time.monotonic() < deadline:
        for _ in range(50):
            mac, time_ns, raw, fields_json = crash_reading_values(run, n)
            writer.put(Reading(mac, time_ns, n, True, -70, 5, raw, orjson.loads(fields_json)))
            n += 1
        await asyncio.sleep(0.001)
        if writer.committed != printed:
            printed = writer.committed
            print(printed, flush=True)
    task.cancel()


class Writer:
    """The writer subprocess, with a thread collecting the committed counts it prints."""

    def __init__(self, db: Path, run: int) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join((str(REPO), str(REPO / "tests"))))
        self.proc = subprocess.Popen([sys.executable, __file__, str(db), str(run)], stdout=subprocess.PIPE,
                                     env=env, text=True)
        self.committed = 0
        self._first = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.endswith("\n"):  # a line cut by SIGKILL does not count
                self.committed = int(line)
                self._first.set()

    def wait_started(self) -> None:
        assert self._first.wait(20), "the writer printed no commit"

    def kill(self) -> int:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._reader.join(10)
        return self.committed


def assert_prefix_committed(db: Path, run: int, committed: int) -> int:
    """Readings 0..m-1 of `run` are in the file exactly once with their exact values, m >= committed."""
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        mac = crash_reading_values(run, 0)[0]
        rows = conn.execute("SELECT mac, time_ns, raw, fields_json FROM readings WHERE mac = ? ORDER BY id",
                            (mac,)).fetchall()
    finally:
        conn.close()
    assert len(rows) >= committed
    for n, row in enumerate(rows):
        if row != crash_reading_values(run, n):
            raise AssertionError(f"run {run}: row {n} is {row}, expected {crash_reading_values(run, n)}")
    return len(rows)


def test_kill_9_loses_no_committed_reading(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    rnd = random.Random(20261123)
    totals = []
    for run in range(6):
        writer = Writer(db, run)
        writer.wait_started()
        time.sleep(rnd.uniform(0.05, 0.6))
        committed = writer.kill()
        stored = assert_prefix_committed(db, run, committed)
        print(f"run {run}: killed with {committed} reported committed, {stored} in the file")
        totals.append(committed)
    for run, committed in enumerate(totals):  # later runs (and their recoveries) lost nothing of earlier ones
        assert_prefix_committed(db, run, committed)
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    actual = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
    conn.close()
    # `edge-gw status` on the file the last kill left (its -wal and -shm still there): read-only, and the row
    # counter it shows rode in the same transactions as the rows.
    assert Path(f"{db}-wal").exists()
    ro = Store(db, readonly=True)
    assert ro.report()["buffer"]["rows"] == actual
    ro.close()


def copy_snapshot(db: Path, dest: Path) -> None:
    """Copy the db file, then its -wal, as a power cut would leave them (not the -shm, which is memory).

    A read transaction is held across the two copies. Without it a checkpoint could run between them and restart
    the -wal, giving a pair of files from two different moments, which no power cut produces (the disk is cut at
    one instant). A reader only keeps the checkpoint from restarting the -wal; writers keep appending."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("BEGIN")
        conn.execute("SELECT count(*) FROM queue").fetchone()
        shutil.copyfile(db, dest)
        wal = Path(f"{db}-wal")
        if wal.exists():
            shutil.copyfile(wal, Path(f"{dest}-wal"))
        conn.execute("COMMIT")
    finally:
        conn.close()


def test_power_cut_copies_hold_every_committed_reading(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    rnd = random.Random(7)
    writer = Writer(db, 1)
    writer.wait_started()
    try:
        for i in range(5):
            time.sleep(rnd.uniform(0.05, 0.4))
            committed = writer.committed  # read before the copy starts
            copy = tmp_path / f"copy{i}.db"
            copy_snapshot(db, copy)
            stored = assert_prefix_committed(copy, 1, committed)
            print(f"copy {i}: {committed} reported committed before the copy, {stored} in it")
    finally:
        committed = writer.kill()
    copy = tmp_path / "after-kill.db"
    copy_snapshot(db, copy)
    assert assert_prefix_committed(copy, 1, committed) >= committed


if __name__ == "__main__":
    asyncio.run(_write(sys.argv[1], int(sys.argv[2])))


def test_a_sync_point_puts_committed_readings_in_the_db_file_itself(tmp_path: Path) -> None:
    """The worst power cut under synchronous=NORMAL loses the whole unsynced -wal. Once a second the store
    checkpoints (which fsyncs the -wal, then the db file), so the db file alone holds what was committed before."""
    clock = FakeClock()
    db = tmp_path / "b.db"
    store = Store(db, clock=clock)
    store.add([reading(n, clock) for n in range(300)])
    time.sleep(SYNC_INTERVAL_NS / 1e9 + 0.05)
    store.add([reading(300, clock)])  # the first write after the interval syncs
    shutil.copyfile(db, tmp_path / "db-only.db")  # no -wal: as if none of it had reached the disk
    conn = sqlite3.connect(tmp_path / "db-only.db")
    assert conn.execute("SELECT count(*) FROM readings").fetchone() == (301,)
    conn.close()
    store.close()
