"""The dedup memory on disk, so that a receiver restart (clean or kill -9) does not forget what it wrote.

The receiver runs as a write-only database user, so it cannot rebuild its memory from InfluxDB. Instead it appends
every written point that dedup can match (mac, data format, sequence number and a fingerprint of its values,
cloud/dedup.py) to a small SQLite file, after the database write
and before the PUBACKs of the batch; at start-up it loads them into `Dedup`. A copy that another gateway sends after
the restart is then dropped as it would have been without one.

One row per written batch, its entries one JSON array: an INSERT per point cost about 1.0 us of CPU per reading,
one per batch costs about 0.7 us including building (with the values' hash, cloud/dedup.py) and encoding the
entries (`python -m cloud.dedup_journal --bench`; 0.34 us in format 1, without the hash). The file keeps the
newest batches that hold `max_entries` entries, the same bound as the memory, so
loading it rebuilds exactly what the memory held; older batches are deleted as new ones come, and SQLite reuses
their pages, so the file stops growing at about 60 bytes per entry (30 MB at the default 500,000).

WAL with synchronous=NORMAL: a commit survives the process dying at once; a power cut can take the last commits
back (those copies may then be written again by another gateway: a duplicate, never a loss).

Format 2 (entries with data format and fingerprint) replaced format 1 (entries matched by receive time). A format-1
file is set aside like an unreadable one: the receiver starts once with an empty memory, so copies of the
measurements written just before the upgrade may be written again.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from cloud.dedup import SEQ_FIELD, Entry, fingerprint
from cloud.model import Point

log = logging.getLogger("cloud.dedup_journal")

FORMAT_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,
    written_ns INTEGER NOT NULL,  -- the receiver's clock when the batch was written: for people, not used
    n INTEGER NOT NULL,           -- entries in the batch
    entries BLOB NOT NULL         -- JSON: [[measurement, mac, data format, seq, fingerprint, receive time ns,
                                  --         gateway], ...]
)
"""


class JournalError(Exception):
    """The dedup state file cannot be opened or written."""


def entries(points: Sequence[Point]) -> list[Entry]:
    """The points dedup can match (an int sequence number and a mac), as journal entries."""
    out: list[Entry] = []
    append = out.append
    for p in points:
        fields = p.fields
        seq = fields.get(SEQ_FIELD)
        if type(seq) is not int:
            continue
        tags = p.tags
        mac = tags.get("mac")
        if mac is not None:
            append((p.measurement, mac, tags.get("data_format", ""), seq, fingerprint(fields), p.time_ns,
                    tags.get("gateway", "")))
    return out


class DedupJournal:
    """Append-only record of written points; `load()` once at start-up, then `record()` per written batch."""

    def __init__(self, path: Path, *, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.path = path
        self.max_entries = max_entries
        self._kept: deque[tuple[int, int]] = deque()  # (batch id, entries) of the batches still needed, oldest first
        self._total = 0
        self._conn = self._open()

    def _open(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError):
                raise JournalError(f"dedup state file {self.path}: {e}") from None
            self._set_aside(str(e))
            try:
                return self._connect()
            except sqlite3.Error as e2:
                raise JournalError(f"dedup state file {self.path}: {e2}") from None

    def _connect(self) -> sqlite3.Connection:
        # One user at a time (the receiver's event loop), which need not be the thread that opened it.
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=5.0, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, FORMAT_VERSION):
                raise sqlite3.DatabaseError(f"format version {version}, not {FORMAT_VERSION}")
            conn.execute(_SCHEMA)
            conn.execute(f"PRAGMA user_version = {FORMAT_VERSION}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _set_aside(self, reason: str) -> None:
        # The state only prevents duplicates; an unreadable file must not keep the receiver from starting.
        aside = self.path.with_name(f"{self.path.name}.bad-{time.time_ns()}")
        log.warning("dedup state file %s is unreadable (%s); moved to %s, starting with an empty memory",
                    self.path, reason, aside)
        try:
            self.path.rename(aside)
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    self.path.with_name(self.path.name + suffix).unlink()
        except OSError as e:
            raise JournalError(f"dedup state file {self.path}: unreadable ({reason}) and cannot be moved: {e}") \
                from None

    def load(self) -> list[Any]:
        """The entries of the newest batches that hold `max_entries`, oldest first (each a 7-item list: Entry)."""
        try:
            return self._load()
        except (sqlite3.DatabaseError, ValueError, TypeError) as e:
            if isinstance(e, sqlite3.OperationalError):
                raise JournalError(f"dedup state file {self.path}: {e}") from None
            self._conn.close()
            self._set_aside(str(e))
            self._conn = self._open()
            self._kept.clear()
            self._total = 0
            return []

    def _load(self) -> list[Any]:
        blobs: list[bytes] = []
        total = 0
        oldest_needed = 0
        kept: list[tuple[int, int]] = []
        for batch_id, n, blob in self._conn.execute("SELECT id, n, entries FROM batches ORDER BY id DESC"):
            if total >= self.max_entries:
                break
            blobs.append(blob)
            kept.append((batch_id, n))
            total += n
            oldest_needed = batch_id
        loaded: list[Any] = []
        for blob in reversed(blobs):
            loaded.extend(orjson.loads(blob))
        self._kept = deque(reversed(kept))
        self._total = total
        if oldest_needed:
            self._conn.execute("DELETE FROM batches WHERE id < ?", (oldest_needed,))
        self._shrink()
        return loaded

    def _shrink(self) -> None:
        # Deleted batches leave free pages that later inserts reuse. Only a file far larger than what it holds
        # (max_entries was lowered) is rewritten, once, at start-up.
        pages = self._conn.execute("PRAGMA page_count").fetchone()[0]
        free = self._conn.execute("PRAGMA freelist_count").fetchone()[0]
        if free > 256 and free * 2 > pages:
            self._conn.execute("VACUUM")

    def record(self, points: Sequence[Point]) -> int:
        """Append the matchable points of one written batch in one transaction; return how many."""
        return self.record_entries(entries(points))

    def record_entries(self, batch: Sequence[Entry]) -> int:
        """Append the entries of one written batch (what `Dedup.filter` gave for it) in one transaction."""
        if not batch:
            return 0
        n = len(batch)
        blob = orjson.dumps(batch)
        # Batches no longer needed once this one is in: the memory would have forgotten their entries.
        kept = self._kept
        total = self._total + n
        drop = 0
        upto = 0
        for batch_id, count in kept:
            if total - count < self.max_entries:
                break
            total -= count
            drop += 1
            upto = batch_id
        conn = self._conn
        try:
            conn.execute("BEGIN")
            cur = conn.execute("INSERT INTO batches (written_ns, n, entries) VALUES (?, ?, ?)",
                               (time.time_ns(), n, blob))
            if upto:
                conn.execute("DELETE FROM batches WHERE id <= ?", (upto,))
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise JournalError(f"dedup state file {self.path}: {e}") from None
        for _ in range(drop):
            kept.popleft()
        kept.append((int(cur.lastrowid or 0), n))
        self._total = total
        return n

    def stored_entries(self) -> int:
        """Entries in the file (for tests and status)."""
        return int(self._conn.execute("SELECT coalesce(sum(n), 0) FROM batches").fetchone()[0])

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()


def _bench(points_per_batch: int = 5000, batches: int = 40) -> None:
    import tempfile

    pts = [Point("ruuvi", {"mac": f"c0:ff:ee:00:{i % 256:02x}:{i // 256 % 256:02x}", "gateway": "gw-a",
                           "data_format": "5"},
                 {SEQ_FIELD: i % 65536, "temperature": 21.5, "humidity": 40.25, "pressure": 100100.0,
                  "acceleration_x": 4, "acceleration_y": -4, "acceleration_z": 1036, "battery_voltage": 2977},
                 1_763_900_000_000_000_000 + i)
           for i in range(points_per_batch)]
    with tempfile.TemporaryDirectory() as tmp:
        j = DedupJournal(Path(tmp) / "dedup.sqlite", max_entries=20 * points_per_batch)
        j.load()
        t0 = time.process_time()
        for _ in range(batches):
            j.record(pts)
        t1 = time.process_time()
        j.close()
        j = DedupJournal(Path(tmp) / "dedup.sqlite", max_entries=20 * points_per_batch)
        t2 = time.process_time()
        loaded = j.load()
        t3 = time.process_time()
        j.close()
    print(f"record: {(t1 - t0) / (batches * points_per_batch) * 1e6:.3f} us CPU per reading "
          f"({batches} batches of {points_per_batch})")
    print(f"load: {(t3 - t2) / max(1, len(loaded)) * 1e6:.3f} us CPU per entry ({len(loaded)} entries)")


if __name__ == "__main__":
    import sys

    if "--bench" in sys.argv:
        _bench()
