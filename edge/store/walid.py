"""Whose -wal is this? The identity of a buffer file and of the -wal lineage it writes.

SQLite applies any -wal whose header and frame checksums agree with themselves: its header carries salts and a
checkpoint sequence, but nothing that names the database. So a -wal copied from another gateway's buffer next to ours
is replayed into our file, and its readings leave under our id. The store therefore keeps its own record:

- The database id: a random non-zero 31-bit number in the file header's `user_version` (offset 60 of page 1), set
  when the store first opens the file and checkpointed into the file at once, so it is readable from the raw file
  without SQLite and without the -wal (a foreign -wal may carry its own page 1).
- The -wal lineage: beside the file, `<buffer>.wal-id` holds the database id and the salts of the last -wal header
  the store saw; every Store re-reads the 32-byte header after each commit and rewrites the record when the salts
  changed (in place, fixed size, fsynced: about once a second, when a checkpoint lets SQLite restart the -wal).

SQLite restarts the -wal with salt-1 one more than before and a random salt-2 (wal.c, walRestartHdr), whichever
connection restarts it; a -wal created afresh (none on disk) gets two random salts. The rule at start
(`verify`): a -wal with frames is ours when the record names this file's database id and the -wal's salt-1 is the
recorded one with the same salt-2, or at most `MAX_GENERATIONS` restarts later (the record lags by one when the
process died between the commit that restarted the -wal and the rewrite). A foreign -wal passes only if its random
salt-1 falls in that window: odds of 2^-26 (64 in 2^32). Anything else with frames is refused and moved aside: a
foreign -wal, a record of another database, no record at all, and the one window no rule can close, a process killed
between the very first commit of a fresh -wal lineage and its record (the store's first commit after opening is a
status row, so no reading is in such a -wal). A file without a database id predates this check: its -wal is taken
as it is, once, and logged.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

WAL_MAGIC = (0x377F0682, 0x377F0683)
WAL_HEADER = 32
FRAME_HEADER = 24
MAX_GENERATIONS = 64
_RECORD = "edge-gw wal-id v1 db={:010d} salt1={:010d} salt2={:010d} crc={:010d}\n"
_RECORD_RE = re.compile(r"edge-gw wal-id v1 db=(\d{10}) salt1=(\d{10}) salt2=(\d{10}) crc=(\d{10})\n")

Verdict = Literal["none", "ours", "legacy", "foreign", "unverifiable"]


def record_path(db: Path) -> Path:
    return db.with_name(db.name + ".wal-id")


def new_db_id() -> int:
    return secrets.randbelow(2**31 - 1) + 1


def file_db_id(db: Path) -> int | None:
    """The database id in the raw file header (no SQLite, no -wal); None when the file has no SQLite header,
    0 when it has none set."""
    try:
        with open(db, "rb") as f:
            head = f.read(100)
    except OSError:
        return None
    if len(head) < 100 or not head.startswith(b"SQLite format 3\0"):
        return None
    return int(struct.unpack_from(">i", head, 60)[0])


@dataclass(frozen=True, slots=True)
class WalHeader:
    salt1: int
    salt2: int
    has_frames: bool  # a valid first frame follows: SQLite would replay this -wal


def _checksum(data: bytes, big: bool, s1: int = 0, s2: int = 0) -> tuple[int, int]:
    words = struct.unpack(f"{'>' if big else '<'}{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s1 = (s1 + words[i] + s2) & 0xFFFFFFFF
        s2 = (s2 + words[i + 1] + s1) & 0xFFFFFFFF
    return s1, s2


def wal_header(db: Path, *, frames: bool = True) -> WalHeader | None:
    """The header of `<db>-wal` if SQLite would accept it (magic and header checksum), else None. With `frames`,
    also whether a valid first frame follows (a checksum over one page; the per-commit record skips it)."""
    try:
        with open(f"{db}-wal", "rb") as f:
            head = f.read(WAL_HEADER)
            if len(head) < WAL_HEADER:
                return None
            magic, _version, page_size, _ckpt, salt1, salt2, c1, c2 = struct.unpack(">8I", head)
            if magic not in WAL_MAGIC:
                return None
            big = magic & 1 == 1
            if _checksum(head[:24], big) != (c1, c2):
                return None
            frame = f.read(FRAME_HEADER + page_size) if frames else b""
    except OSError:
        return None
    has_frames = False
    if len(frame) == FRAME_HEADER + page_size:
        _pgno, _size, f1, f2, fc1, fc2 = struct.unpack_from(">6I", frame)
        if (f1, f2) == (salt1, salt2):
            s = _checksum(frame[:8], big, c1, c2)
            has_frames = _checksum(frame[FRAME_HEADER:], big, *s) == (fc1, fc2)
    return WalHeader(salt1, salt2, has_frames)


def _crc(db_id: int, salt1: int, salt2: int) -> int:
    return zlib.crc32(f"{db_id} {salt1} {salt2}".encode())


def read_record(db: Path) -> tuple[int, int, int] | None:
    """(database id, salt-1, salt-2) from `<db>.wal-id`, or None if missing or torn."""
    try:
        text = record_path(db).read_text()
    except (OSError, UnicodeDecodeError):
        return None
    m = _RECORD_RE.fullmatch(text)
    if m is None:
        return None
    db_id, salt1, salt2, crc = (int(g) for g in m.groups())
    return (db_id, salt1, salt2) if crc == _crc(db_id, salt1, salt2) else None


def verify(db: Path) -> Verdict:
    """May SQLite replay `<db>-wal` into `db`? See the module docstring for the rule."""
    head = wal_header(db)
    if head is None or not head.has_frames:
        return "none"  # nothing SQLite would replay
    file_id = file_db_id(db)
    if not file_id:
        # No database id in the file: written before this check existed (or never checkpointed once).
        return "legacy" if read_record(db) is None else "unverifiable"
    rec = read_record(db)
    if rec is None:
        return "unverifiable"
    rec_id, salt1, salt2 = rec
    if rec_id != file_id:
        return "unverifiable"
    if (head.salt1, head.salt2) == (salt1, salt2):
        return "ours"
    later = (head.salt1 - salt1) & 0xFFFFFFFF
    return "ours" if 1 <= later <= MAX_GENERATIONS else "foreign"


class Recorder:
    """Rewrites `<db>.wal-id` when the -wal's salts change. Shared by every Store of one file in this process, so
    that two connections never write an older header over a newer one (the header is read under the lock)."""

    _all: ClassVar[dict[Path, Recorder]] = {}
    _all_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, db: Path) -> None:
        self.db = db
        self.lock = threading.Lock()
        self.seen: tuple[int, int, int] | None = None

    @classmethod
    def of(cls, db: Path) -> Recorder:
        key = db.resolve()
        with cls._all_lock:
            rec = cls._all.get(key)
            if rec is None:
                rec = cls._all[key] = Recorder(db)
            return rec

    def note(self, db_id: int) -> None:
        """Record the current -wal header; OSError is the caller's (a full disk cannot stop the store)."""
        with self.lock:
            head = wal_header(self.db, frames=False)
            if head is None or db_id == 0:
                return
            now = (db_id, head.salt1, head.salt2)
            if now == self.seen:
                return
            data = _RECORD.format(*now, _crc(*now)).encode()
            # Overwritten in place (same length), so a full disk has no new block to refuse.
            fd = os.open(record_path(self.db), os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.pwrite(fd, data, 0)
                os.ftruncate(fd, len(data))
                os.fsync(fd)
            finally:
                os.close(fd)
            self.seen = now

    def forget(self) -> None:
        with self.lock:
            self.seen = None


def forget(db: Path) -> None:
    """Drop what this process remembers of `db`'s record (its files were moved or replaced)."""
    with contextlib.suppress(OSError):
        Recorder.of(db).forget()
