"""Opening the buffer file: connection pragmas and the schema, applied as sqlite-utils migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

# The -wal file is cut back to this after each checkpoint; without a limit it keeps its high-water size forever.
JOURNAL_SIZE_LIMIT = 8 << 20
BUSY_TIMEOUT_MS = 10_000

_COLUMNS = """
    mac TEXT NOT NULL,
    time_ns INTEGER NOT NULL,
    mono_ns INTEGER NOT NULL,
    boot INTEGER NOT NULL,
    clock_synced INTEGER NOT NULL,
    rssi INTEGER,
    data_format INTEGER NOT NULL,
    raw BLOB NOT NULL,
    fields_json TEXT NOT NULL
"""
READING_COLUMNS = "mac, time_ns, mono_ns, boot, clock_synced, rssi, data_format, raw, fields_json"

migrations = Migrations("edge-gw-store")


@migrations()
def m001_initial(db: Database) -> None:
    # Raw SQL for the two queue tables: sqlite-utils' create() has no public AUTOINCREMENT option, and ids must
    # never be reused because the uplink keeps id cursors.
    db.execute(f"CREATE TABLE readings (id INTEGER PRIMARY KEY AUTOINCREMENT, {_COLUMNS})")
    # Readings taken before the clock synchronised wait here until their time can be corrected (or, for an
    # earlier boot, until it is known that it never will be); they get their readings id only then.
    db.execute(f"CREATE TABLE held (rowid_ INTEGER PRIMARY KEY, {_COLUMNS})")
    db.table("boots").create({"id": int, "boot_id": str, "first_seen_ns": int}, pk="id", not_null=["boot_id"])
    db.table("boots").create_index(["boot_id"], unique=True)
    # Row counts kept in the same transactions as the inserts and deletes, so stats() never counts rows.
    db.table("queue").create({"id": int, "ready_rows": int, "held_rows": int}, pk="id",
                             not_null=["ready_rows", "held_rows"])
    db.table("queue").insert({"id": 1, "ready_rows": 0, "held_rows": 0})
    db.table("counters").create({"name": str, "value": int}, pk="name", not_null=["value"])
    db.table("status").create({"section": str, "json": str, "updated_ns": int}, pk="section", not_null=["json"])
    db.table("tags").create(
        {
            "mac": str,
            "data_format": int,
            "first_seen_ns": int,
            "last_seen_ns": int,
            "rssi": int,
            "battery_voltage": int,
            "fields_json": str,
            "last_seq": int,
            "step_ns": float,
            "received": int,
            "expected": int,
        },
        pk="mac",
    )


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open the buffer. A writable open creates the file and brings the schema up to date."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    if readonly:
        return conn
    # auto_vacuum only takes effect if set before the first table exists; on an existing file this is a no-op.
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
    db = Database(conn)
    # IMMEDIATE takes the write lock first, so two processes opening a fresh file do not both migrate it.
    conn.execute("BEGIN IMMEDIATE")
    try:
        migrations.apply(db)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return conn
