"""A damaged buffer file (issue 17, item 2), with real SQLite files: random bytes in the middle, a truncated file, a
file that is not SQLite, a -wal of another buffer. The start-up check salvages every readable reading (counted
exactly against the b-tree of an intact copy), moves the damaged file aside, and says so in `edge-gw status`."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from damage_support import fill, ids_in, leaf_pages, page_size, reachable_rowids, readings, scribble
from fakeclock import FakeClock
from servers import Mosquitto
from test_uplink_support import subscriber

from edge.metrics import Counters
from edge.store import Store, walid
from edge.store.check import check_buffer, integrity, record

EDGE = [sys.executable, "-m", "edge.cli"]
NOW = 1_764_000_000_000_000_000  # 2025-11-24T16:00:00Z
STAMP = "20251124T160000Z"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sequence(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return int(conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'readings'").fetchone()[0])


def status(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EDGE, "status", "--db", str(db), *args], capture_output=True, text=True, check=False)


def test_random_bytes_in_the_middle_lose_only_their_pages(tmp_path: Path) -> None:
    db = tmp_path / "buffer.db"
    fill(db, readings(20_000), ack_first=1500)  # a head of acked ids, as a draining buffer has
    intact = tmp_path / "intact.db"
    shutil.copyfile(db, intact)
    leaves = leaf_pages(intact, "readings")
    bad = leaves[len(leaves) // 2:len(leaves) // 2 + 3]  # three leaf pages in the middle
    scribble(db, bad)
    damaged = digest(db)
    expected = reachable_rowids(intact, "readings", set(bad))
    on_bad = 18_500 - len(expected)
    assert 20 < on_bad < 200  # a few pages' worth, the rest must come back
    # What the issue saw: the file opens, and a read that reaches the bad pages fails.
    assert integrity(db) is not None
    assert status(db).returncode == 1

    report = check_buffer(db, NOW)

    assert report.problem is not None and report.moved_to == f"{db}.damaged-{STAMP}"
    assert (report.salvaged_readings, report.salvaged_held, report.lost_rows) == (len(expected), 0, on_bad)
    assert digest(Path(report.moved_to)) == damaged  # moved, not rewritten
    assert integrity(db) is None
    assert ids_in(db) == sorted(expected)
    assert sequence(db) == 20_000  # ids are never reused
    # Every salvaged reading is byte for byte the one written.
    with contextlib.closing(sqlite3.connect(intact)) as a, contextlib.closing(sqlite3.connect(db)) as b:
        q = "SELECT id, mac, time_ns, raw, fields_json FROM readings ORDER BY id"
        assert b.execute(q).fetchall() == [r for r in a.execute(q) if r[0] in expected]
        assert b.execute("SELECT ready_rows FROM queue").fetchone() == (len(expected),)


def test_truncated_file(tmp_path: Path) -> None:
    db = tmp_path / "buffer.db"
    fill(db, readings(12_000))
    intact = tmp_path / "intact.db"
    shutil.copyfile(db, intact)
    size = page_size(db)
    pages = db.stat().st_size // size
    cut = pages * 6 // 10
    os.truncate(db, cut * size)
    expected = reachable_rowids(intact, "readings", set(range(cut + 1, pages + 1)))
    assert 1000 < len(expected) < 12_000

    report = check_buffer(db, NOW)

    assert (report.salvaged_readings, report.lost_rows) == (len(expected), 12_000 - len(expected))
    assert ids_in(db) == sorted(expected)
    assert Path(report.moved_to or "").stat().st_size == cut * size
    assert sequence(db) == 12_000


@pytest.mark.parametrize("what", ["text", "empty"])
def test_a_file_that_is_not_sqlite(tmp_path: Path, what: str) -> None:
    db = tmp_path / "buffer.db"
    fill(db, readings(3000))
    assert walid.record_path(db).exists()
    db.write_bytes(b"" if what == "empty" else b"not a database\n" * 1000)
    failed = status(db)
    if what == "text":
        assert failed.returncode == 1 and "Traceback" not in failed.stderr
        assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr

    report = check_buffer(db, NOW)

    assert report.problem is not None
    assert (report.salvaged_readings, report.lost_rows) == (0, None)  # nothing to read, not even a count
    aside = Path(report.moved_to or "")
    assert aside.stat().st_size == (0 if what == "empty" else 15_000)
    assert Path(f"{aside}.wal-id").exists() and not walid.record_path(db).exists()
    store = Store(db, clock=FakeClock())
    assert store.stats().rows == 0
    store.add(readings(5))  # a working buffer again
    assert store.stats().rows == 5
    store.close()


def _open_with_wal(db: Path, rows: int, mac: str) -> Store:
    """A buffer whose -wal holds committed frames, as a killed gateway leaves it."""
    store = fill(db, readings(rows, mac=mac), close=False)
    assert walid.wal_header(db) is not None and walid.wal_header(db).has_frames  # type: ignore[union-attr]
    return store


def test_a_wal_of_another_buffer_is_moved_aside(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours" / "buffer.db", tmp_path / "theirs" / "buffer.db"
    ours.parent.mkdir()
    theirs.parent.mkdir()
    fill(ours, readings(1000, mac="d0:00:00:00:00:01"))
    other = _open_with_wal(theirs, 700, "e0:00:00:00:00:02")
    foreign = Path(f"{theirs}-wal").read_bytes()
    other.close()
    Path(f"{ours}-wal").write_bytes(foreign)
    # Without the check, SQLite replays it: the other gateway's readings (or its pages) show up in ours.
    probe = tmp_path / "probe"
    probe.mkdir()
    shutil.copyfile(ours, probe / "buffer.db")
    shutil.copyfile(f"{ours}-wal", probe / "buffer.db-wal")
    macs: set[str] = set()  # stays empty if the replay leaves the file unreadable
    with contextlib.closing(sqlite3.connect(probe / "buffer.db")) as conn, contextlib.suppress(sqlite3.DatabaseError):
        macs = {m for (m,) in conn.execute("SELECT DISTINCT mac FROM readings")}
    assert macs != {"d0:00:00:00:00:01"}

    report = check_buffer(ours, NOW)

    assert report.wal == "foreign" and report.problem is None
    assert report.wal_moved_to == f"{ours}-wal.refused-{STAMP}"
    assert Path(report.wal_moved_to).read_bytes() == foreign
    store = Store(ours, clock=FakeClock())
    rows = store.fetch(limit=5000)
    assert len(rows) == 1000 and {r.mac for r in rows} == {"d0:00:00:00:00:01"}
    counters = Counters()
    record(report, store, counters)
    assert store.report()["damage"]["wal_moved_to"] == report.wal_moved_to
    assert counters.snapshot()["wal_refused"] == 1
    store.close()


def test_our_own_wal_after_a_kill_is_replayed(tmp_path: Path) -> None:
    """The record lags the -wal by some restarts when the process died in between: still ours."""
    db = tmp_path / "a" / "buffer.db"
    db.parent.mkdir()
    store = _open_with_wal(db, 500, "d0:00:00:00:00:01")
    old_record = walid.record_path(db).read_bytes()
    for k in range(3):  # three restarts of the -wal, the record rewritten each time
        store.checkpoint()
        store.add(readings(100, start=1000 + 100 * k))
    crash = tmp_path / "crash"
    crash.mkdir()
    for suffix in ("", "-wal", ".wal-id"):
        shutil.copyfile(f"{db}{suffix}", crash / f"buffer.db{suffix}")
    store.close()
    copy = crash / "buffer.db"
    assert walid.verify(copy) == "ours"
    (crash / "buffer.db.wal-id").write_bytes(old_record)  # as if the process died before the rewrites
    assert walid.verify(copy) == "ours"

    report = check_buffer(copy, NOW)

    assert (report.wal, report.wal_moved_to, report.problem) == ("ours", None, None)
    assert len(ids_in(copy)) == 800


def test_the_wal_rule(tmp_path: Path) -> None:
    db = tmp_path / "buffer.db"
    store = _open_with_wal(db, 50, "d0:00:00:00:00:01")
    head = walid.wal_header(db)
    assert head is not None
    db_id = walid.file_db_id(db)
    assert db_id and walid.read_record(db) == (db_id, head.salt1, head.salt2)

    def with_record(rec_id: int, salt1: int, salt2: int) -> str:
        text = walid._RECORD.format(rec_id, salt1, salt2, walid._crc(rec_id, salt1, salt2))
        walid.record_path(db).write_text(text)
        return walid.verify(db)

    s1 = head.salt1
    assert with_record(db_id, s1, head.salt2) == "ours"
    assert with_record(db_id, (s1 - 64) % 2**32, 12345) == "ours"  # 64 restarts since the record
    assert with_record(db_id, (s1 - 65) % 2**32, 12345) == "foreign"
    assert with_record(db_id, s1, head.salt2 ^ 1) == "foreign"  # same generation, another salt-2
    assert with_record(db_id + 1, s1, head.salt2) == "unverifiable"  # the record of another file
    walid.record_path(db).write_text("torn")
    assert walid.verify(db) == "unverifiable"
    walid.record_path(db).unlink()
    assert walid.verify(db) == "unverifiable"
    store.close()


def test_status_shows_what_the_check_did(tmp_path: Path) -> None:
    db = tmp_path / "buffer.db"
    fill(db, readings(6000))
    leaves = leaf_pages(db, "readings")
    bad = leaves[100:102]
    expected = reachable_rowids(db, "readings", set(bad))
    scribble(db, bad)
    before = status(db, "--json")
    assert before.returncode == 1 and json.loads(before.stdout)["integrity"] != "ok"
    assert len(before.stderr.strip().splitlines()) == 1 and "is damaged" in before.stderr

    report = check_buffer(db, NOW)
    store = Store(db, clock=FakeClock())
    counters = Counters()
    counters.restore(store.load_counters())
    record(report, store, counters)
    store.close()

    after = status(db, "--json")
    assert after.returncode == 0, after.stderr
    doc = json.loads(after.stdout)
    assert doc["integrity"] == "ok"
    damage = doc["damage"]
    assert (damage["salvaged_readings"], damage["lost_rows"]) == (len(expected), 6000 - len(expected))
    assert damage["moved_to"] == f"{db}.damaged-{STAMP}" and damage["checked_ns"] == NOW
    assert doc["check"]["problem"] == damage["problem"]
    assert doc["counters"]["readings_salvaged"] == len(expected)
    assert doc["counters"]["readings_lost_damaged"] == 6000 - len(expected)
    assert doc["counters"]["buffer_replaced"] == 1
    screen = status(db).stdout
    assert f"salvaged {len(expected)} readings (+0 held), lost {6000 - len(expected)} rows" in screen
    assert f"damaged file moved to {db}.damaged-{STAMP}" in screen


def test_an_interrupted_salvage_runs_again(tmp_path: Path) -> None:
    db = tmp_path / "buffer.db"
    fill(db, readings(3000))
    scribble(db, leaf_pages(db, "readings")[50:51])
    leftover = tmp_path / "buffer.db.salvage"
    leftover.write_bytes(b"half a salvage")
    report = check_buffer(db, NOW)
    assert report.salvaged_readings + (report.lost_rows or 0) == 3000 and report.lost_rows
    assert not leftover.exists() and integrity(db) is None


def test_the_daemon_salvages_at_start_and_forwards_what_it_salvaged(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """`edge-gw run` on a damaged buffer: one ERROR line per fact, no traceback, and every salvaged reading reaches
    a confirming subscriber on a real Mosquitto; the damaged file stays beside it."""
    db = tmp_path / "buffer.db"
    mine = readings(8000, mac="d0:00:00:00:00:01")
    fill(db, mine)
    bad = leaf_pages(db, "readings")[200:203]
    expected = reachable_rowids(db, "readings", set(bad))
    scribble(db, bad)
    want = {(r.mac, r.time_ns) for i, r in enumerate(mine, start=1) if i in expected}
    with subscriber(mosquitto.port, confirm=True) as sub:
        proc = subprocess.run([*EDGE, "run", "--gateway-id", "gw-damage", "--mqtt", mosquitto.url, "--db", str(db),
                               "--assume-synced", "--source", "simulate", "--tags", "3", "--rate", "500",
                               "--count", "60", "--drain", "30"],
                              capture_output=True, text=True, check=False, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr
        got = {k for k in sub.received() if k[0] == "d0:00:00:00:00:01"}
    assert len(got) == len(want), (len(got), len(want), sorted(t for _m, t in want - got)[:3], proc.stderr[-2000:])
    assert got == want
    doc = json.loads(status(db, "--json").stdout)
    assert doc["buffer"]["rows"] == 0
    assert doc["damage"]["salvaged_readings"] == len(expected)
    assert doc["damage"]["lost_rows"] == 8000 - len(expected)
    assert doc["counters"]["readings_salvaged"] == len(expected)
    aside = Path(doc["damage"]["moved_to"])
    assert aside.stat().st_size > 0
    kept = {aside.name + s for s in ("", "-wal", "-shm", ".wal-id")}
    assert {p.name for p in tmp_path.glob("buffer.db.damaged-*")} <= kept
    assert f"salvaged {len(expected)} readings" in proc.stderr
