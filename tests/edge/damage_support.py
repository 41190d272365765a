"""Damaging real buffer files, and knowing exactly which rows the damage takes: the b-tree of an intact copy is
walked page by page (SQLite's file format: table b-tree pages 0x05 interior, 0x0D leaf), so a test knows which rows
sit on (or only below) the pages it destroys."""

from __future__ import annotations

import contextlib
import random
import sqlite3
import struct
import time
from pathlib import Path

from fakeclock import FakeClock

from edge.model import Reading
from edge.store import Store

# Now, not a fixed date: a daemon on the real clock drops readings older than store.max_age (30 days).
T0 = time.time_ns() // 10**9 * 10**9


def readings(n: int, *, mac: str = "d0:00:00:00:00:01", start: int = 0) -> list[Reading]:
    """n distinct readings (identity: mac, time_ns = T0 + i µs), each with a payload that fills some bytes."""
    return [Reading(mac, T0 + (start + i) * 1000, 0, True, -70, 5, (start + i).to_bytes(8, "big") * 4,
                    {"data_format": 5, "temperature": (start + i) / 100, "measurement_sequence_number": start + i})
            for i in range(n)]


def fill(db: Path, rows: list[Reading], *, ack_first: int = 0, close: bool = True) -> Store:
    store = Store(db, clock=FakeClock())
    for i in range(0, len(rows), 2000):
        store.add(rows[i:i + 2000])
    if ack_first:
        store.ack(list(range(1, ack_first + 1)))
    if close:
        store.close()
    return store


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    v = 0
    for k in range(9):
        b = buf[i + k]
        if k == 8:
            return (v << 8) | b, i + 9
        v = (v << 7) | (b & 0x7F)
        if b < 0x80:
            return v, i + k + 1
    raise AssertionError("unreachable")


def _page(data: bytes, size: int, pgno: int) -> tuple[bytes, int]:
    page = data[(pgno - 1) * size:pgno * size]
    return page, 100 if pgno == 1 else 0


def tree(db: Path, table: str) -> dict[int, tuple[list[int], list[int]]]:
    """Every page of `table`'s b-tree in the (intact) file: page -> (child pages, rowids on it if a leaf)."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    data = db.read_bytes()
    out: dict[int, tuple[list[int], list[int]]] = {}
    todo = [root]
    while todo:
        pgno = todo.pop()
        page, h = _page(data, size, pgno)
        kind, ncells = page[h], struct.unpack_from(">H", page, h + 3)[0]
        ptrs = [struct.unpack_from(">H", page, h + (12 if kind == 0x05 else 8) + 2 * k)[0] for k in range(ncells)]
        if kind == 0x05:
            children = [struct.unpack_from(">I", page, p)[0] for p in ptrs]
            children.append(struct.unpack_from(">I", page, h + 8)[0])
            out[pgno] = (children, [])
            todo.extend(children)
        else:
            assert kind == 0x0D, (pgno, kind)
            rowids = []
            for p in ptrs:
                _, i = _varint(page, p)
                rowids.append(_varint(page, i)[0])
            out[pgno] = ([], rowids)
    return out


def reachable_rowids(db: Path, table: str, bad: set[int]) -> set[int]:
    """Rowids of `table` on leaves that neither are, nor hang below, a page in `bad`."""
    t = tree(db, table)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    out: set[int] = set()
    todo = [root]
    while todo:
        pgno = todo.pop()
        if pgno in bad:
            continue
        children, rowids = t[pgno]
        out.update(rowids)
        todo.extend(children)
    return out


def leaf_pages(db: Path, table: str) -> list[int]:
    return sorted(p for p, (children, _rows) in tree(db, table).items() if not children)


def page_size(db: Path) -> int:
    return int(struct.unpack_from(">H", db.read_bytes()[:100], 16)[0])


def scribble(db: Path, pages: list[int], seed: int = 1) -> None:
    """Random bytes over whole pages (as a bad SD card sector run would leave them)."""
    size = page_size(db)
    rng = random.Random(seed)
    with open(db, "r+b") as f:
        for p in pages:
            f.seek((p - 1) * size)
            f.write(rng.randbytes(size))


def ids_in(db: Path) -> list[int]:
    store = Store(db, clock=FakeClock(), readonly=True)
    try:
        out: list[int] = []
        while True:
            rows = store.fetch(after_id=out[-1] if out else 0, limit=5000)
            if not rows:
                return out
            out.extend(r.id for r in rows)
    finally:
        store.close()
