"""Opening the buffer file: connection pragmas and the schema, applied as numbered migrations.

sqlite-utils ran these migrations until 2026-12. It was the only use of that library on the gateway (the hot path
was already raw sqlite3, 40 % faster per row, see store.py), and it made the daemon hide numpy from it to save 12 MB
of RSS. A migration is a list of SQL statements, recorded in the same table sqlite-utils used, so older buffers open
as they are.
"""

from __future__ import annotations

import datetime
import sqlite3
from pathlib import Path

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

MIGRATION_SET = "edge-gw-store"
# Which migrations a file has had, one row each. The table and its columns are those sqlite-utils used for this
# store's first migration (it was a dependency until 2026-12), so buffers written then open as they are.
_RECORD = [
    'CREATE TABLE IF NOT EXISTS "_sqlite_migrations" ("id" INTEGER PRIMARY KEY, "migration_set" TEXT, "name" TEXT, '
    '"applied_at" TEXT)',
    'CREATE UNIQUE INDEX IF NOT EXISTS "idx__sqlite_migrations_migration_set_name" '
    'ON "_sqlite_migrations" ("migration_set", "name")',
]

# The first schema, statement by statement as sqlite-utils wrote it. AUTOINCREMENT on readings: ids are never
# reused, because the uplink keeps id cursors. `held`: readings taken before the clock synchronised wait there
# until their time can be corrected (or, for an earlier boot, until it is known that it never will be); they get
# their readings id only then. `queue`: row counts kept in the same transactions as the inserts and deletes, so
# stats() never counts rows.
M001_INITIAL = [
    f"CREATE TABLE readings (id INTEGER PRIMARY KEY AUTOINCREMENT, {_COLUMNS})",
    f"CREATE TABLE held (rowid_ INTEGER PRIMARY KEY, {_COLUMNS})",
    'CREATE TABLE "boots" ("id" INTEGER PRIMARY KEY, "boot_id" TEXT NOT NULL, "first_seen_ns" INTEGER)',
    'CREATE UNIQUE INDEX "idx_boots_boot_id" ON "boots" ("boot_id")',
    'CREATE TABLE "queue" ("id" INTEGER PRIMARY KEY, "ready_rows" INTEGER NOT NULL, "held_rows" INTEGER NOT NULL)',
    'INSERT INTO "queue" ("id", "ready_rows", "held_rows") VALUES (1, 0, 0)',
    'CREATE TABLE "counters" ("name" TEXT PRIMARY KEY, "value" INTEGER NOT NULL)',
    'CREATE TABLE "status" ("section" TEXT PRIMARY KEY, "json" TEXT NOT NULL, "updated_ns" INTEGER)',
    'CREATE TABLE "tags" ("mac" TEXT PRIMARY KEY, "data_format" INTEGER, "first_seen_ns" INTEGER, '
    '"last_seen_ns" INTEGER, "rssi" INTEGER, "battery_voltage" INTEGER, "fields_json" TEXT, "last_seq" INTEGER, '
    '"step_ns" REAL, "received" INTEGER, "expected" INTEGER)',
]
MIGRATIONS: list[tuple[str, list[str]]] = [("m001_initial", M001_INITIAL)]


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Apply the migrations the file has not had, in order, in the caller's transaction; returns their names."""
    for stmt in _RECORD:
        conn.execute(stmt)
    done = {name for (name,) in conn.execute(
        'SELECT name FROM "_sqlite_migrations" WHERE migration_set = ?', (MIGRATION_SET,))}
    applied = []
    for name, statements in MIGRATIONS:
        if name in done:
            continue
        for stmt in statements:
            conn.execute(stmt)
        conn.execute('INSERT INTO "_sqlite_migrations" (migration_set, name, applied_at) VALUES (?, ?, ?)',
                     (MIGRATION_SET, name, datetime.datetime.now(datetime.UTC).isoformat()))
        applied.append(name)
    return applied


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
    # IMMEDIATE takes the write lock first, so two processes opening a fresh file do not both migrate it.
    conn.execute("BEGIN IMMEDIATE")
    try:
        migrate(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return conn
