"""The start-up check of the buffer file, and the salvage of a damaged one. The gateway runs it holding the buffer's
lock, before anything opens the file for writing.

1. A -wal that does not belong to the file is moved aside before SQLite can replay it (`<buffer>-wal.refused-<UTC>`,
   with its -shm): the rule is in walid.py.
2. `PRAGMA quick_check` on a read-only connection: every page of every b-tree is read and its structure checked
   (not the index contents, which integrity_check adds at several times the cost). Its cost is one read of the file,
   so the byte cap (`store.max_bytes`) bounds it. Measured on this 2-core VM (buffers of DF5 readings written with
   Store.add, page cache dropped first): a 46 MiB buffer (140,000
   readings) 0.53 s cold, 0.04 s warm; a 506 MiB buffer (1.55 M readings, the default 512 MiB cap) 3.6 s cold, 0.44 s
   warm. On an SD card that reads 20-40 MB/s, the full-cap file takes some 15-25 s, once per start.
3. If the check fails (or the file is not SQLite at all, or an empty file replaced a buffer that had been written),
   every readable row is copied into a fresh file (`<buffer>.salvage`), then the damaged file moves aside as
   `<buffer>.damaged-<UTC>` with its -wal, -shm and .wal-id, and the fresh file takes its place. Readings keep their
   ids (the sequence continues from the old high-water mark, so ids are never reused), and so do held readings,
   counters, tags, boots and status. Rows are read by id ranges that halve around a failing read down to single ids,
   so a bad leaf page costs only its own rows (a bad interior page, the rows below it). `lost_rows` is what the
   damaged file's own row counts (the `queue` row) say it held, minus what was salvaged; null when even those
   cannot be read. Measured the same way, with random bytes on 3 pages in the middle: check and
   salvage of the 46 MiB buffer 0.8 s (139,964 of 140,000 readings back), of the 506 MiB one 7.6 s (1,549,964 of
   1,550,000), page cache warm. The salvage needs room for a second copy of the readable rows on the same disk.
4. A salvage interrupted by a crash leaves `<buffer>.salvage` beside the untouched damaged file: it is thrown away
   and the salvage runs again. Once the damaged file has moved aside, the `.salvage` file is complete and only its
   rename is left, which the next start finishes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from edge.store import schema, walid
from edge.store.model import StoreError

if TYPE_CHECKING:
    from edge.metrics import Counters
    from edge.store.store import Store

log = logging.getLogger(__name__)

CHECK_SECTION = "check"
DAMAGE_SECTION = "damage"
_CHUNK = 1000  # ids per range read
_COMMIT_ROWS = 50_000  # rows per transaction of the fresh file, so its -wal stays small
_LINEAR_SKIP = 1024  # past a failing id, probe id by id this far, then in steps of _STEP
_STEP = 64
_SUFFIXES = ("", "-wal", "-shm", ".wal-id")


@dataclass
class CheckReport:
    """What the start-up check found and did (the `check` status section; `damage` too when it moved a file)."""

    checked_ns: int
    seconds: float = 0.0
    wal: walid.Verdict = "none"
    wal_moved_to: str | None = None
    problem: str | None = None  # the first thing quick_check (or opening the file) reported
    moved_to: str | None = None  # where the damaged file went
    salvaged_readings: int = 0
    salvaged_held: int = 0
    lost_rows: int | None = 0  # rows the damaged file held and could not give back; None when unknown
    unreadable_ids: int = 0

    @property
    def moved(self) -> bool:
        return self.wal_moved_to is not None or self.moved_to is not None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def record(report: CheckReport, store: Store, counters: Counters) -> None:
    """Show what the check did: the `check` section (and `damage` when it moved a file) for `edge-gw status`, and
    the counters and gauge for Prometheus. Call after `counters.restore()`."""
    store.save_status(CHECK_SECTION, report.as_dict())
    if report.moved:
        store.save_status(DAMAGE_SECTION, report.as_dict())
        counters.inc("readings_salvaged", report.salvaged_readings + report.salvaged_held)
        counters.inc("readings_lost_damaged", report.lost_rows or 0)
        counters.inc("buffer_replaced", 1 if report.moved_to else 0)
        counters.inc("wal_refused", 1 if report.wal_moved_to else 0)
        store.save_counters(counters.snapshot())
    counters.set_gauge("buffer_check_seconds", report.seconds)


def _stamp(now_ns: int) -> str:
    return dt.datetime.fromtimestamp(now_ns / 1e9, dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def _free_name(path: Path) -> Path:
    if not any(Path(f"{path}{s}").exists() for s in _SUFFIXES):
        return path
    n = 1
    while any(Path(f"{path}-{n}{s}").exists() for s in _SUFFIXES):
        n += 1
    return Path(f"{path}-{n}")


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _move_wal_aside(db: Path, now_ns: int) -> Path:
    target = _free_name(Path(f"{db}-wal.refused-{_stamp(now_ns)}"))
    os.replace(f"{db}-wal", target)
    with contextlib.suppress(FileNotFoundError):
        os.replace(f"{db}-shm", str(target).replace("-wal.refused-", "-shm.refused-", 1))
    _fsync_dir(db.parent)
    return target


def _finish_interrupted(db: Path) -> None:
    tmp = db.with_name(db.name + ".salvage")
    if not tmp.exists():
        return
    if db.exists():
        for s in ("", "-wal", "-shm"):  # unfinished: the damaged file is still in place, salvage again
            Path(f"{tmp}{s}").unlink(missing_ok=True)
        return
    log.warning("buffer %s: finishing an interrupted salvage", db)
    os.replace(tmp, db)
    _fsync_dir(db.parent)


def integrity(db: Path) -> str | None:
    """None if `PRAGMA quick_check` passes, else its first complaint (or why the file cannot be read)."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            rows = conn.execute("PRAGMA quick_check(5)").fetchall()
    except sqlite3.Error as e:
        return str(e)
    first = str(rows[0][0]) if rows else "quick_check returned nothing"
    return None if first == "ok" else first


def check_buffer(db: Path, now_ns: int) -> CheckReport:
    """Check the buffer at `db` before the store opens it; salvage it if damaged. Raises StoreError (one line) when
    the files cannot be moved or the fresh file cannot be written."""
    started = time.monotonic()
    report = CheckReport(checked_ns=now_ns)
    try:
        _finish_interrupted(db)
        had_record = walid.record_path(db).exists()
        if not db.exists() or db.stat().st_size == 0:
            head = walid.wal_header(db)
            if head is not None and head.has_frames:
                report.wal = "unverifiable"  # a -wal without its database: nothing to tell it by
                report.wal_moved_to = str(_move_wal_aside(db, now_ns))
            if db.exists() and had_record:
                # The store writes its id into the file when it first opens it: an empty file with a record beside
                # it is a buffer that was cut to nothing, not a new one.
                report.problem = "the buffer file is empty (truncated)"
                report.lost_rows = None
                _replace_damaged(db, report, now_ns, salvage=False)
            return report
        report.wal = walid.verify(db)
        if report.wal in ("foreign", "unverifiable"):
            report.wal_moved_to = str(_move_wal_aside(db, now_ns))
            log.error("buffer %s: a -wal that does not belong to it (%s) moved aside to %s", db, report.wal,
                      report.wal_moved_to)
        elif report.wal == "legacy":
            log.warning("buffer %s: no database id yet (written before the -wal check); its -wal is taken as is", db)
        report.problem = integrity(db)
        if report.problem is not None:
            log.error("buffer %s is damaged (%s): salvaging what can be read", db, report.problem)
            _replace_damaged(db, report, now_ns, salvage=True)
            log.error("buffer %s: salvaged %d readings (+%d held), lost %s rows; the damaged file is %s", db,
                      report.salvaged_readings, report.salvaged_held,
                      "an unknown number of" if report.lost_rows is None else report.lost_rows, report.moved_to)
    except OSError as e:
        msg = f"buffer {db}: start-up check failed: {e.strerror or e}" + (f": {e.filename}" if e.filename else "")
        raise StoreError(msg) from None
    except sqlite3.Error as e:
        msg = f"buffer {db}: cannot write the salvaged buffer: {e}"
        raise StoreError(msg) from None
    finally:
        report.seconds = round(time.monotonic() - started, 3)
    return report


def _replace_damaged(db: Path, report: CheckReport, now_ns: int, *, salvage: bool) -> None:
    tmp = db.with_name(db.name + ".salvage")
    for s in ("", "-wal", "-shm"):
        Path(f"{tmp}{s}").unlink(missing_ok=True)
    dst = schema.connect(tmp)
    try:
        if salvage:
            _salvage(db, dst, report)
        aside = _free_name(db.with_name(f"{db.name}.damaged-{_stamp(now_ns)}"))
        report.moved_to = str(aside)
        # The damage record is the last write: its presence marks the fresh file complete.
        dst.execute("INSERT OR REPLACE INTO status (section, json, updated_ns) VALUES (?, ?, ?)",
                    (DAMAGE_SECTION, orjson.dumps(report.as_dict()).decode(), now_ns))
        dst.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        dst.close()
    for s in _SUFFIXES:
        with contextlib.suppress(FileNotFoundError):
            os.replace(f"{db}{s}", f"{aside}{s}")
    os.replace(tmp, db)
    _fsync_dir(db.parent)
    walid.forget(db)


# -- reading around bad pages ----------------------------------------------------------------------------------------


class _Reader:
    """Reads one rowid table of the damaged file in id ranges, around the pages that fail."""

    def __init__(self, src: sqlite3.Connection, table: str, columns: str) -> None:
        self.src = src
        self.sql = f"SELECT rowid, {columns} FROM {table} WHERE rowid >= ? AND rowid < ? ORDER BY rowid"
        # One id by equality: a range scan steps on to the next leaf after its last row, so the row before a bad
        # page would fail with it.
        self.one = f"SELECT rowid, {columns} FROM {table} WHERE rowid = ?"
        self.table = table
        self.unreadable = 0

    def _try(self, lo: int, hi: int) -> list[tuple[Any, ...]] | None:
        try:
            if hi - lo == 1:
                return self.src.execute(self.one, (lo,)).fetchall()
            return self.src.execute(self.sql, (lo, hi)).fetchall()
        except sqlite3.DatabaseError:
            return None

    def _prefix(self, lo: int, hi: int) -> tuple[list[tuple[Any, ...]], int | None]:
        """The rows of [lo, hi) up to the first id whose read fails, and that id (None if none fails)."""
        rows = self._try(lo, hi)
        if rows is not None:
            return rows, None
        if hi - lo == 1:
            return [], lo
        mid = (lo + hi) // 2
        left, bad = self._prefix(lo, mid)
        if bad is not None:
            return left, bad
        right, bad = self._prefix(mid, hi)
        return left + right, bad

    def _skip(self, bad: int, upper: int) -> int:
        """The first id above `bad` that reads again (ids in between are counted unreadable)."""
        y = bad + 1
        while y <= upper:
            step = 1 if y - bad < _LINEAR_SKIP else _STEP
            if self._try(y, y + 1) is not None:
                if step > 1:  # back to the first good id of the last step
                    lo, hi = y - step + 1, y
                    while lo < hi:
                        mid = (lo + hi) // 2
                        if self._try(mid, mid + 1) is not None:
                            hi = mid
                        else:
                            lo = mid + 1
                    y = lo
                break
            y += step
        y = min(y, upper + 1)
        self.unreadable += y - bad
        return y

    def bounds(self) -> tuple[int, int]:
        lo = hi = None
        with contextlib.suppress(sqlite3.DatabaseError):
            lo = self.src.execute(f"SELECT min(rowid) FROM {self.table}").fetchone()[0]
        with contextlib.suppress(sqlite3.DatabaseError):
            hi = self.src.execute(f"SELECT max(rowid) FROM {self.table}").fetchone()[0]
        if hi is None:
            with contextlib.suppress(sqlite3.DatabaseError):
                row = self.src.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (self.table,)).fetchone()
                hi = row[0] if row else None
        if hi is None:
            # No way to the last rows: as far as the file could hold rows of at least 16 bytes.
            with contextlib.suppress(sqlite3.DatabaseError):
                pages, size = self.src.execute("SELECT * FROM pragma_page_count, pragma_page_size").fetchone()
                hi = pages * size // 16
        return int(lo if lo is not None else 1), int(hi if hi is not None else 0)

    def rows(self, sink: Callable[[list[tuple[Any, ...]]], None]) -> None:
        lo, upper = self.bounds()
        x = lo
        while x <= upper:
            rows, bad = self._prefix(x, min(x + _CHUNK, upper + 1))
            if rows:
                sink(rows)
            x = min(x + _CHUNK, upper + 1) if bad is None else self._skip(bad, upper)


def _salvage(db: Path, dst: sqlite3.Connection, report: CheckReport) -> None:
    try:
        src = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        # writable_schema: a file shorter than its header says (truncated) is read as far as it goes instead of
        # refused as a whole (btree.c lockBtree); nothing is written on this read-only connection. cell_size_check:
        # a cell that points outside its page fails its read instead of returning garbage.
        src.execute("PRAGMA writable_schema = ON")
        src.execute("PRAGMA cell_size_check = ON")
        src.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.DatabaseError as e:
        report.lost_rows = None  # not a database (any more): nothing to read, not even how much there was
        log.error("buffer %s: nothing can be read (%s)", db, e)
        return
    try:
        counted: int | None = None
        with contextlib.suppress(sqlite3.DatabaseError, TypeError):
            ready, held = src.execute("SELECT ready_rows, held_rows FROM queue WHERE id = 1").fetchone()
            counted = int(ready) + int(held)
        old_seq = 0
        with contextlib.suppress(sqlite3.DatabaseError, TypeError):
            old_seq = int(src.execute("SELECT seq FROM sqlite_sequence WHERE name = 'readings'").fetchone()[0])
        tables = {name for (name,) in src.execute("SELECT name FROM sqlite_master WHERE type = 'table'")} \
            if _readable(src) else {"readings", "held", "boots", "counters", "status", "tags"}
        copied = {}
        for table, key in (("readings", "id"), ("held", "rowid_"), ("boots", "id"), ("counters", None),
                           ("status", None), ("tags", None)):
            if table not in tables:
                continue
            copied[table] = _copy_table(src, dst, table, key, report)
        report.salvaged_readings = copied.get("readings", 0)
        report.salvaged_held = copied.get("held", 0)
        dst.execute("BEGIN IMMEDIATE")
        dst.execute("UPDATE queue SET ready_rows = ?, held_rows = ? WHERE id = 1",
                    (report.salvaged_readings, report.salvaged_held))
        seq = max(old_seq, int(dst.execute("SELECT coalesce(max(id), 0) FROM readings").fetchone()[0]))
        if dst.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'readings'", (seq,)).rowcount == 0 and seq:
            dst.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('readings', ?)", (seq,))
        dst.execute("COMMIT")
        salvaged = report.salvaged_readings + report.salvaged_held
        report.lost_rows = None if counted is None else max(0, counted - salvaged)
    finally:
        src.close()


def _readable(src: sqlite3.Connection) -> bool:
    try:
        src.execute("SELECT name FROM sqlite_master").fetchall()
    except sqlite3.DatabaseError:
        return False
    return True


def _copy_table(src: sqlite3.Connection, dst: sqlite3.Connection, table: str, key: str | None,
                report: CheckReport) -> int:
    columns = [row[1] for row in dst.execute(f"PRAGMA table_info({table})")]
    if key is not None:
        columns.remove(key)
    names = ", ".join(columns)
    if key is None:
        insert = f"INSERT OR REPLACE INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})"
    else:
        insert = f"INSERT OR REPLACE INTO {table} ({key}, {names}) VALUES ({', '.join('?' * (len(columns) + 1))})"
    reader = _Reader(src, table, names)
    copied = 0
    pending: list[tuple[Any, ...]] = []

    def sink(rows: list[tuple[Any, ...]]) -> None:
        nonlocal copied
        pending.extend(rows if key is not None else (r[1:] for r in rows))
        if len(pending) >= _COMMIT_ROWS:
            flush()

    def flush() -> None:
        nonlocal copied
        if pending:
            dst.execute("BEGIN IMMEDIATE")
            dst.executemany(insert, pending)
            dst.execute("COMMIT")
            copied += len(pending)
            pending.clear()

    reader.rows(sink)
    flush()
    if table in ("readings", "held"):
        report.unreadable_ids += reader.unreadable
    return copied
