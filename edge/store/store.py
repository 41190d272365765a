"""The SQLite store-and-forward buffer.

Durability: the file runs in WAL mode with `synchronous=NORMAL`, the trade-off SQLite documents for WAL. A
transaction survives a crash of the process (kill -9, an exception, OOM) as soon as COMMIT returns: the commit is in
the -wal file, which the OS holds. A power cut never corrupts the file (every -wal frame is checksummed, and
recovery stops at the last complete commit), but NORMAL does not fsync at each commit, so the commits made since the
-wal was last synced can be lost. To bound that window the store runs a passive checkpoint after a write once a
second (`SYNC_INTERVAL_NS`); a checkpoint syncs the -wal and then the database file. So: a committed reading is safe
from kill -9 at once, and from a power cut once the next sync has passed (about 1 s later). `synchronous=FULL`
would close the window at the cost of an fsync per commit, several ms each on a Pi's SD card, which caps the commit
rate. A reading lost that way may already have reached the broker (then nothing is lost end to end); an ack lost
that way only makes the uplink send its readings again, which the cloud deduplicates by (mac, time_ns).

Time: readings taken before the clock synchronised (a Pi has no RTC) go to the `held` table. Once `clock.synced()`
is true, those of the current boot get `time_ns = mono_ns + (wall - mono offset now)` and move to `readings` with
`clock_synced = true` (counted in `clock_corrections`). Those of an earlier boot cannot be corrected (its monotonic
clock is gone): they move to `readings` as they are, with `clock_synced = false`, at the same moment. Either way a
moved reading gets a new id, larger than any id the uplink has seen, so id cursors never miss it.

Bounds: after each batch the pages in use are compared with `max_bytes` (two O(1) pragmas, no COUNT). At the cap,
`drop-oldest` deletes from the head of the queue down to 98 % of the cap; `drop-newest` refuses the incoming batch
while the cap is reached. Readings older than `max_age_s` are deleted from the head of the queue (checked at most
once a second; no index on time_ns, which would slow every insert): a reading with an old time that entered the
queue late (moved after clock sync) is dropped when it reaches the head. Readings of the current boot, held or
not, age by the monotonic clock, so a step of the wall clock in either direction changes no age (see Pipeline in
edge/gateway.py for what the gateway does on a step); those of an earlier boot age by their time. Readings released
uncorrected from an earlier boot have no trustworthy time, so only the byte cap bounds them. Freed pages go back to
the file system with `incremental_vacuum` once they are 3/4 of the file and at least 1/64 of the cap (1 MiB
minimum), so the file shrinks after a backlog drains instead of keeping its high-water size; below that, inserts
reuse them.

Damage: the gateway checks the file at start, before a Store opens it (check.py): a -wal that does not belong to it
is moved aside (the rule, with the database id in `user_version` and the `<buffer>.wal-id` record that this Store
keeps, is in walid.py), then `PRAGMA quick_check` reads the whole file once: 0.53 s for a 46 MiB buffer and 3.6 s for
a 506 MiB one (the default 512 MiB cap) with a cold page cache on this 2-core VM, 0.04 s and 0.44 s warm. A damaged
file is salvaged row by row into a fresh one and moved aside as `<buffer>.damaged-<UTC>`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from core.ratelog import RateLimitedLog
from edge.clock import Clock, SystemClock
from edge.model import HISTORY_FORMAT, Reading
from edge.store import schema, walid
from edge.store.model import BufferStats, StoredReading, StoreError, StoreLimits
from edge.store.report import build_report
from edge.store.tags import TAG_COLUMNS, TagState, new_tag

log = logging.getLogger(__name__)
_wal_id_failed = RateLimitedLog(log, 30.0)

LIMITS_SECTION = "store"
SYNC_INTERVAL_NS = 1_000_000_000
_LOW_WATER = 0.98
_AGE_CHECK_NS = 1_000_000_000
# Per-tag rows are written with the batch at most once a second: writing them with every batch cost 2.3 µs per
# reading at 1000 tags (each row carries the tag's last values), more than a third of the whole insert.
TAG_WRITE_INTERVAL_NS = 1_000_000_000
# Kept free on the buffer's file system (an eighth of it at most) for the -wal between checkpoints.
DISK_RESERVE_BYTES = 4 << 20
_ACK_CHUNK = 500  # ids per DELETE ... IN (...) statement, under SQLite's 999 bound parameters of old builds

# Raw sqlite3 executemany on the hot path (sqlite-utils' insert_all costs ~40 % more per row, shared/notes). Measured
# with bench/bench_store.py on this 2-core VM, quiet: Store.add of 500-row batches of decoded DF5 readings 4.1-4.7
# µs per reading with 1000 tags, all included (row build, JSON, per-tag stats, limits); 2-3x that while other
# jobs load both cores.
_INSERT_READY = f"INSERT INTO readings ({schema.READING_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)"
_INSERT_HELD = f"INSERT INTO held ({schema.READING_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)"
# An in-place upsert: INSERT OR REPLACE would delete and re-insert both the row and its primary-key index entry.
_UPSERT_TAG = (
    f"INSERT INTO tags ({', '.join(TAG_COLUMNS)}) VALUES ({', '.join('?' * len(TAG_COLUMNS))}) "
    f"ON CONFLICT(mac) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in TAG_COLUMNS[1:])}"
)
_ADD_COUNTER = (
    "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + excluded.value"
)


def _disk_full(e: StoreError) -> bool:
    cause = e.__cause__
    return isinstance(cause, sqlite3.Error) and getattr(cause, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


class Store:
    """One connection to the buffer; use one instance per thread (the lock only guards against overlap).

    Args:
        path: the database file; created with its schema unless `readonly`.
        limits: byte and age bounds and the policy at the cap.
        clock: the clock used for ages, boot id and time correction.
        readonly: open without writing anything (for `edge-gw status`); only the read methods work.
    """

    def __init__(self, path: str | os.PathLike[str], *, limits: StoreLimits | None = None,
                 clock: Clock | None = None, readonly: bool = False) -> None:
        self.path = Path(path)
        self.limits = limits if limits is not None else StoreLimits()
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.readonly = readonly
        if readonly and not self.path.exists():
            msg = f"no buffer database at {self.path}"
            raise StoreError(msg)
        try:
            self._conn = schema.connect(self.path, readonly=readonly)
            self._page_size = int(self._conn.execute("PRAGMA page_size").fetchone()[0])
            self._db_id = 0 if readonly else self._identity()
        except sqlite3.Error as e:
            msg = f"cannot open buffer {self.path}: {e}"
            raise StoreError(msg) from e
        self._recorder = walid.Recorder.of(self.path)
        self._lock = threading.RLock()
        self._boot: int | None = None
        self._tags: dict[str, TagState] | None = None
        self._dirty_tags: dict[str, TagState] = {}
        self._tags_written_ns = -TAG_WRITE_INTERVAL_NS
        self._next_age_check = 0
        self._vacuum_due = False
        self._next_sync = 0
        self._tight = False  # the file system, not max_bytes, is the cap now
        self._vacuum_pages = max(1 << 20, self.limits.max_bytes // 64) // self._page_size
        # Counts of what the store did on its own, handed to the writer's Counters by take_counts().
        self._counts = {"readings_dropped_cap": 0, "readings_dropped_age": 0, "clock_corrections": 0}
        self._txn_counts: dict[str, int] = {}  # counted in the open transaction; kept only if it commits
        if limits is not None and not readonly:
            # The daemon's limits, for `edge-gw status`, which opens the file without knowing them.
            self.save_status(LIMITS_SECTION, {"max_bytes": limits.max_bytes, "max_age_s": limits.max_age_s,
                                              "policy": limits.policy})
        if not readonly:
            self._note_wal()

    def _identity(self) -> int:
        """This file's database id (see walid.py), set on first open and checkpointed into the file itself, where
        the start-up check reads it without the -wal."""
        db_id = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
        if db_id == 0:
            db_id = walid.new_db_id()
            self._conn.execute(f"PRAGMA user_version = {db_id}")
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        return db_id

    def _note_wal(self) -> None:
        try:
            self._recorder.note(self._db_id)
        except OSError as e:
            _wal_id_failed.warning("buffer %s: cannot record the -wal's identity (retried): %s", self.path, e)

    # -- plumbing -------------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as e:
                msg = f"buffer {self.path}: {e}"
                raise StoreError(msg) from e

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: the write lock is taken up front, so a busy file waits (busy_timeout)
        instead of failing half-way on a lock upgrade."""
        with self._read() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                # Forget what the rolled-back transaction did, so nothing counts or caches it.
                self._txn_counts.clear()
                self._vacuum_due = False
                self._boot = None
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            for name, n in self._txn_counts.items():
                self._counts[name] += n
            self._txn_counts.clear()
            self._after_commit(conn)

    def _after_commit(self, conn: sqlite3.Connection) -> None:
        # Housekeeping after the transaction committed: a failure here must not reach the caller, who would take
        # the committed transaction for a failed one (and the writer would store its readings twice).
        now = time.monotonic_ns()
        try:
            # On a nearly full disk every commit checkpoints, so the -wal stays small and its pages are reused.
            if now >= self._next_sync or self._tight:
                self._next_sync = now + SYNC_INTERVAL_NS
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            if self._vacuum_due:
                self._vacuum_due = False
                conn.executescript("PRAGMA incremental_vacuum;")
        except sqlite3.Error as e:
            log.warning("buffer %s: checkpoint or vacuum failed (retried later): %s", self.path, e)
        self._note_wal()

    def _bump(self, conn: sqlite3.Connection, name: str, n: int) -> None:
        if n > 0:
            conn.execute(_ADD_COUNTER, (name, n))
            self._txn_counts[name] = self._txn_counts.get(name, 0) + n

    def _boot_row(self, conn: sqlite3.Connection) -> int:
        if self._boot is None:
            boot_id = self.clock.boot_id()
            conn.execute("INSERT OR IGNORE INTO boots (boot_id, first_seen_ns) VALUES (?, ?)",
                         (boot_id, self.clock.wall_ns()))
            self._boot = int(conn.execute("SELECT id FROM boots WHERE boot_id = ?", (boot_id,)).fetchone()[0])
        return self._boot

    def _used_pages(self, conn: sqlite3.Connection) -> tuple[int, int]:
        pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
        free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
        return pages - free, free

    # -- the queue ------------------------------------------------------------------------------------------------

    def add(self, readings: Sequence[Reading]) -> int:
        """Store readings in one transaction; they are committed once this returns.

        Returns how many were stored: fewer than given when `drop-newest` refuses them at the cap, or when the file
        system is full and no room could be made (see _make_room). Both are counted as `readings_dropped_cap`."""
        if not readings:
            return 0
        try:
            return self._add(readings)
        except StoreError as e:
            if not _disk_full(e):
                raise
        # The file system is full before the byte cap: apply the policy here too, so the gateway goes on storing.
        if self.limits.policy == "drop-oldest" and self._make_room(2 * len(readings)):
            with contextlib.suppress(StoreError):
                return self._add(readings)
        self._counts["readings_dropped_cap"] += len(readings)  # not persisted: there is no room to write it
        return 0

    def _make_room(self, n: int) -> bool:
        """Free space in a full file system: truncate the -wal (its pages go back to the file system), then delete
        the `n` oldest readings, whose pages the next insert reuses. False if even that cannot be written."""
        with contextlib.suppress(sqlite3.Error), self._lock:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        try:
            with self._write() as conn:
                gone = self._drop_head(conn, n)
        except StoreError:
            return False
        return gone > 0

    def _add(self, readings: Sequence[Reading]) -> int:
        dumps = orjson.dumps
        with self._write() as conn:
            boot = self._boot_row(conn)
            if self.limits.policy == "drop-newest":
                used, free = self._used_pages(conn)
                if used >= self._limit_pages(used, free):
                    self._bump(conn, "readings_dropped_cap", len(readings))
                    return 0
            ready: list[tuple[Any, ...]] = []
            held: list[tuple[Any, ...]] = []
            for r in readings:
                row = (r.mac, r.time_ns, r.mono_ns, boot, r.clock_synced, r.rssi, r.data_format, r.raw,
                       dumps(r.fields).decode())
                (ready if r.clock_synced else held).append(row)
            if ready:
                conn.executemany(_INSERT_READY, ready)
            if held:
                conn.executemany(_INSERT_HELD, held)
            conn.execute("UPDATE queue SET ready_rows = ready_rows + ?, held_rows = held_rows + ? WHERE id = 1",
                         (len(ready), len(held)))
            self._update_tags(conn, readings, ready, held)
            self._release_held(conn)
            self._enforce(conn)
        return len(readings)

    def _update_tags(self, conn: sqlite3.Connection, readings: Sequence[Reading], ready: list[tuple[Any, ...]],
                     held: list[tuple[Any, ...]]) -> None:
        tags = self._tags
        if tags is None:
            cur = conn.execute(f"SELECT {', '.join(TAG_COLUMNS)} FROM tags")
            tags = self._tags = {row[0]: TagState(*row) for row in cur}
        dirty = self._dirty_tags
        ready_i = held_i = 0
        for r in readings:
            # The JSON was already made for the row; take it back rather than encode twice.
            if r.clock_synced:
                fields_json = ready[ready_i][8]
                ready_i += 1
            else:
                fields_json = held[held_i][8]
                held_i += 1
            if r.data_format == HISTORY_FORMAT:
                # Read from the tag's log, times from its past: not the tag's current state (last seen, format,
                # sequence accounting), which only live adverts tell.
                continue
            tag = tags.get(r.mac)
            if tag is None:
                tag = tags[r.mac] = new_tag(r.mac, r.time_ns, r.mono_ns, r.rssi, r.data_format, r.fields,
                                              fields_json)
            else:
                tag.observe(r.time_ns, r.mono_ns, r.rssi, r.data_format, r.fields, fields_json)
            dirty[r.mac] = tag
        now = self.clock.mono_ns()
        if now - self._tags_written_ns >= TAG_WRITE_INTERVAL_NS:
            self._write_tags(conn)
            self._tags_written_ns = now

    def _write_tags(self, conn: sqlite3.Connection) -> None:
        if self._dirty_tags:
            conn.executemany(_UPSERT_TAG, [t.row() for t in self._dirty_tags.values()])
            self._dirty_tags.clear()

    def _release_held(self, conn: sqlite3.Connection) -> None:
        held_rows = int(conn.execute("SELECT held_rows FROM queue WHERE id = 1").fetchone()[0])
        if held_rows == 0 or not self.clock.synced():
            return
        boot = self._boot_row(conn)
        offset = self.clock.wall_ns() - self.clock.mono_ns()
        corrected = int(conn.execute("SELECT count(*) FROM held WHERE boot = ?", (boot,)).fetchone()[0])
        conn.execute(
            f"INSERT INTO readings ({schema.READING_COLUMNS}) "
            "SELECT mac, CASE WHEN boot = ?1 THEN mono_ns + ?2 ELSE time_ns END, mono_ns, boot, boot = ?1, "
            "rssi, data_format, raw, fields_json FROM held ORDER BY rowid_",
            (boot, offset),
        )
        conn.execute("DELETE FROM held")
        conn.execute("UPDATE queue SET ready_rows = ready_rows + held_rows, held_rows = 0 WHERE id = 1")
        self._bump(conn, "clock_corrections", corrected)

    def _enforce(self, conn: sqlite3.Connection) -> None:
        now = self.clock.mono_ns()
        if now >= self._next_age_check:
            self._next_age_check = now + _AGE_CHECK_NS
            self._drop_old(conn)
        used, free = self._used_pages(conn)
        limit_pages = self._limit_pages(used, free)
        if used > limit_pages and self.limits.policy == "drop-oldest":
            self._drop_oldest(conn, used, int(limit_pages * _LOW_WATER))
        self._vacuum_if_worth_it(conn)

    def _limit_pages(self, used: int, free: int) -> int:
        """The cap in pages: `max_bytes`, or less when the file system would fill up first. The file may then grow
        by what the file system has free, less a reserve for the -wal, so the policy drops readings before SQLite
        fails with "database or disk is full" (which add() still survives, see _make_room)."""
        cap = self.limits.max_bytes // self._page_size
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return cap
        reserve = min(DISK_RESERVE_BYTES, st.f_blocks * st.f_frsize // 8)
        room = (st.f_bavail * st.f_frsize - reserve) // self._page_size
        fs_cap = used + free + room
        self._tight = fs_cap < cap
        return min(cap, fs_cap)

    def _vacuum_if_worth_it(self, conn: sqlite3.Connection) -> None:
        # Vacuuming moves live pages from the end of the file into the free ones, so it runs only once free pages
        # are 3/4 of the file (and pass the threshold): a draining backlog then moves at most a third of its pages
        # in all, instead of every live page once per threshold's worth of acks. Free pages below that are reused
        # by the next inserts, and the byte cap bounds the high-water mark, so the file never grows without end.
        used, free = self._used_pages(conn)
        if free > self._vacuum_pages and free > 3 * used:
            # Marked here, run by _write() after COMMIT in a transaction of its own: through execute() the
            # pragma frees a single page (the sqlite3 module steps it once); only executescript() runs it to the
            # end, and executescript() would commit the open transaction first.
            self._vacuum_due = True

    def _drop_old(self, conn: sqlite3.Connection) -> None:
        max_age_ns = int(self.limits.max_age_s * 1e9)
        dropped = 0
        boot = self._boot_row(conn)
        # Readings of this boot age by the monotonic clock, so a step of the wall clock changes no age (a step a
        # year ahead must not drop the buffer). Those of an earlier boot by their time, once the clock is synced;
        # those released uncorrected from an earlier boot carry a time from an unsynced clock: their age is
        # unknown, so only the byte cap bounds them.
        mono_cutoff = self.clock.mono_ns() - max_age_ns
        wall_cutoff = self.clock.wall_ns() - max_age_ns if self.clock.synced() else -(1 << 62)
        head = conn.execute("SELECT boot, mono_ns, time_ns FROM readings WHERE clock_synced = 1 ORDER BY id LIMIT 1"
                            ).fetchone()
        if head is not None and (head[1] < mono_cutoff if head[0] == boot else head[2] < wall_cutoff):
            young = conn.execute(
                "SELECT id FROM readings WHERE clock_synced = 1 AND CASE WHEN boot = ? THEN mono_ns >= ? "
                "ELSE time_ns >= ? END ORDER BY id LIMIT 1", (boot, mono_cutoff, wall_cutoff)).fetchone()
            upper = young[0] if young is not None else 1 << 62
            dropped = conn.execute("DELETE FROM readings WHERE id < ? AND clock_synced = 1", (upper,)).rowcount
            conn.execute("UPDATE queue SET ready_rows = ready_rows - ? WHERE id = 1", (dropped,))
        # Held readings of this boot age by the monotonic clock, which is right even before sync.
        n = conn.execute("DELETE FROM held WHERE boot = ? AND mono_ns < ?", (boot, mono_cutoff)).rowcount
        if n:
            conn.execute("UPDATE queue SET held_rows = held_rows - ? WHERE id = 1", (n,))
        self._bump(conn, "readings_dropped_age", dropped + n)

    def _drop_oldest(self, conn: sqlite3.Connection, used: int, target: int) -> None:
        # Estimate the rows to drop from the average row size, then re-measure: a few rounds at most.
        for _ in range(8):
            if used <= target:
                return
            ready, held = conn.execute("SELECT ready_rows, held_rows FROM queue WHERE id = 1").fetchone()
            if ready + held == 0:
                return
            n = max(1, (used - target) * (ready + held) // used + 1)
            self._drop_head(conn, n)
            used, _ = self._used_pages(conn)

    def _drop_head(self, conn: sqlite3.Connection, n: int) -> int:
        """Drop the `n` oldest readings (ready ones first, then held), counted as dropped at the cap."""
        gone = conn.execute("DELETE FROM readings WHERE id IN (SELECT id FROM readings ORDER BY id LIMIT ?)",
                            (n,)).rowcount
        gone_held = 0
        if gone < n:
            gone_held = conn.execute(
                "DELETE FROM held WHERE rowid_ IN (SELECT rowid_ FROM held ORDER BY rowid_ LIMIT ?)",
                (n - gone,)).rowcount
        conn.execute("UPDATE queue SET ready_rows = ready_rows - ?, held_rows = held_rows - ? WHERE id = 1",
                     (gone, gone_held))
        self._bump(conn, "readings_dropped_cap", gone + gone_held)
        return int(gone + gone_held)

    def enforce_limits(self) -> None:
        """Apply the age and byte bounds now (add() does this after every batch)."""
        with self._write() as conn:
            self._next_age_check = 0
            self._release_held(conn)
            self._enforce(conn)

    def take_counts(self) -> dict[str, int]:
        """What the store counted since the last call (drops, clock corrections), for the in-process Counters.
        The same increments are already persisted in the `counters` table."""
        with self._lock:
            counts = dict(self._counts)
            for name in self._counts:
                self._counts[name] = 0
        return counts

    def fetch(self, after_id: int = 0, before_id: int | None = None, limit: int = 500) -> list[StoredReading]:
        """Readings ready to send with after_id < id < before_id, ascending by id."""
        upper = before_id if before_id is not None else 1 << 62
        with self._read() as conn:
            cur = conn.execute(
                "SELECT id, mac, time_ns, clock_synced, rssi, data_format, raw, fields_json FROM readings "
                "WHERE id > ? AND id < ? ORDER BY id LIMIT ?", (after_id, upper, limit))
            return [StoredReading(i, m, t, s == 1, rs, df, raw, fj) for i, m, t, s, rs, df, raw, fj in cur]

    def fetch_ids(self, ids: Sequence[int]) -> list[StoredReading]:
        """The readings with these ids that are still buffered, ascending by id (at most _ACK_CHUNK ids)."""
        if not ids:
            return []
        if len(ids) > _ACK_CHUNK:
            msg = f"fetch_ids takes at most {_ACK_CHUNK} ids, got {len(ids)}"
            raise ValueError(msg)
        marks = ",".join("?" * len(ids))
        with self._read() as conn:
            cur = conn.execute(
                "SELECT id, mac, time_ns, clock_synced, rssi, data_format, raw, fields_json FROM readings "
                f"WHERE id IN ({marks}) ORDER BY id", list(ids))
            return [StoredReading(i, m, t, s == 1, rs, df, raw, fj) for i, m, t, s, rs, df, raw, fj in cur]

    def ack(self, ids: Sequence[int]) -> int:
        """Delete acknowledged readings; returns how many were still there."""
        if not ids:
            return 0
        deleted = 0
        with self._write() as conn:
            for start in range(0, len(ids), _ACK_CHUNK):
                chunk = ids[start:start + _ACK_CHUNK]
                marks = ",".join("?" * len(chunk))
                deleted += conn.execute(f"DELETE FROM readings WHERE id IN ({marks})", chunk).rowcount
            conn.execute("UPDATE queue SET ready_rows = ready_rows - ? WHERE id = 1", (deleted,))
            self._vacuum_if_worth_it(conn)
        return deleted

    def tags_seen(self) -> int:
        """Distinct tags this buffer has heard (its per-tag table)."""
        if self._tags is not None:
            return len(self._tags)
        with self._read() as conn:
            return int(conn.execute("SELECT count(*) FROM tags").fetchone()[0])

    def max_id(self) -> int:
        """The largest id ever given to a reading (ids are never reused), 0 for a new buffer."""
        with self._read() as conn:
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'readings'").fetchone()
        return int(row[0]) if row else 0

    def stats(self) -> BufferStats:
        with self._read() as conn:
            conn.execute("BEGIN")
            try:
                ready, held = conn.execute("SELECT ready_rows, held_rows FROM queue WHERE id = 1").fetchone()
                used, _ = self._used_pages(conn)
                head = conn.execute("SELECT time_ns FROM readings ORDER BY id LIMIT 1").fetchone()
            finally:
                conn.execute("COMMIT")
        size = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(FileNotFoundError):
                size += os.stat(f"{self.path}{suffix}").st_size
        return BufferStats(int(ready), int(held), size, used * self._page_size, None if head is None else int(head[0]))

    # -- status and counters --------------------------------------------------------------------------------------

    def save_status(self, section: str, data: dict[str, Any]) -> None:
        blob = orjson.dumps(data, default=str).decode()
        with self._write() as conn:
            conn.execute("INSERT OR REPLACE INTO status (section, json, updated_ns) VALUES (?, ?, ?)",
                         (section, blob, self.clock.wall_ns()))

    def load_status(self) -> dict[str, dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute("SELECT section, json FROM status ORDER BY section").fetchall()
        return {section: orjson.loads(blob) for section, blob in rows}

    def save_counters(self, values: dict[str, int]) -> None:
        """Persist counter totals. Totals only grow, so the larger of stored and given wins: a snapshot taken
        just before the store counted a drop of its own cannot take that drop back."""
        with self._write() as conn:
            conn.executemany(
                "INSERT INTO counters (name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = max(value, excluded.value)",
                [(name, int(v)) for name, v in values.items()])

    def load_counters(self) -> dict[str, int]:
        with self._read() as conn:
            return {name: int(v) for name, v in conn.execute("SELECT name, value FROM counters ORDER BY name")}

    def flush_tags(self) -> None:
        """Write the per-tag rows not yet written (add() writes them at most once a second)."""
        if self._dirty_tags:
            with self._write() as conn:
                self._write_tags(conn)

    def report(self) -> dict[str, Any]:
        """Everything `edge-gw status --json` shows, as a JSON-safe dict with a stable shape (see report.py)."""
        self.flush_tags()
        stats = self.stats()
        with self._read() as conn:
            conn.execute("BEGIN")
            try:
                return build_report(conn, stats, self.limits, self.clock, str(self.path))
            finally:
                conn.execute("COMMIT")

    def checkpoint(self) -> None:
        """Copy the -wal into the database file and truncate it (tests and clean shutdown)."""
        with self._read() as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        with self._lock:
            if not self.readonly:
                self.flush_tags()
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
