"""Store basics on real SQLite files: pragmas, fetch/ack and id cursors, status, counters, report()."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import orjson
import pytest
from fakeclock import FakeClock

from edge.metrics import COUNTERS
from edge.model import Reading
from edge.store import Store, StoreError, StoreLimits

MAC = "c0:00:00:00:00:01"


def reading(n: int, clock: FakeClock, *, mac: str = MAC, synced: bool = True, seq: int | None = None,
            data_format: int = 5, rssi: int | None = -70) -> Reading:
    """Reading number n: every value is derived from n, so a test can check a row it gets back exactly."""
    fields = {"data_format": data_format, "temperature": n / 100, "battery_voltage": 2900 + n % 100,
              "measurement_sequence_number": n if seq is None else seq}
    return Reading(mac, clock.wall_ns(), clock.mono_ns(), synced, rssi, data_format, n.to_bytes(8, "big"), fields)


def test_file_is_wal_normal_incremental_vacuum(tmp_path: Path) -> None:
    clock = FakeClock()
    store = Store(tmp_path / "b.db", clock=clock)
    store.add([reading(1, clock)])
    conn = sqlite3.connect(tmp_path / "b.db")
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert conn.execute("PRAGMA auto_vacuum").fetchone() == (2,)  # INCREMENTAL
    assert store._conn.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
    assert (tmp_path / "b.db-wal").exists()
    conn.close()
    store.close()


def test_fetch_returns_exact_rows_in_id_order(tmp_path: Path) -> None:
    clock = FakeClock()
    store = Store(tmp_path / "b.db", clock=clock)
    readings = [reading(n, clock, rssi=None if n == 2 else -n) for n in range(5)]
    assert store.add(readings) == 5
    rows = store.fetch()
    assert [r.id for r in rows] == [1, 2, 3, 4, 5]
    for row, r in zip(rows, readings, strict=True):
        assert (row.mac, row.time_ns, row.clock_synced, row.rssi, row.data_format, row.raw) == (
            r.mac, r.time_ns, True, r.rssi, 5, r.raw)
        assert row.fields_json == orjson.dumps(r.fields).decode()
    assert rows[2].rssi is None
    assert rows[0].fields_json == ('{"data_format":5,"temperature":0.0,"battery_voltage":2900,'
                                   '"measurement_sequence_number":0}')
    store.close()


def test_cursors_limits_and_ack(tmp_path: Path) -> None:
    clock = FakeClock()
    store = Store(tmp_path / "b.db", clock=clock)
    store.add([reading(n, clock) for n in range(10)])
    assert [r.id for r in store.fetch(after_id=3, limit=4)] == [4, 5, 6, 7]
    assert [r.id for r in store.fetch(after_id=3, before_id=6)] == [4, 5]
    assert store.fetch(after_id=10) == []
    assert store.ack([2, 3, 4, 99]) == 3  # 99 was never there
    assert store.ack([2]) == 0  # acking twice (a PUBACK replay) is harmless
    assert [r.id for r in store.fetch(limit=3)] == [1, 5, 6]
    assert store.stats().rows == 7
    assert store.ack([r.id for r in store.fetch(limit=100)]) == 7
    assert store.stats().rows == 0
    assert store.stats().oldest_time_ns is None
    assert store.max_id() == 10  # ids are never reused, even once the table is empty
    store.close()
    store = Store(tmp_path / "b.db", clock=clock)
    store.add([reading(10, clock)])
    assert [r.id for r in store.fetch()] == [11]
    assert store.max_id() == 11
    store.close()


def test_ack_many_ids_in_one_call(tmp_path: Path) -> None:
    clock = FakeClock()
    store = Store(tmp_path / "b.db", clock=clock)
    for start in range(0, 3000, 500):
        store.add([reading(n, clock) for n in range(start, start + 500)])
    assert store.ack(list(range(1, 3001, 2))) == 1500  # 1500 ids: more than one DELETE statement
    assert store.stats().rows == 1500
    assert store.fetch(limit=2)[0].id == 2
    store.close()


def test_status_sections_and_counters_persist(tmp_path: Path) -> None:
    clock = FakeClock()
    store = Store(tmp_path / "b.db", clock=clock)
    store.save_status("uplink", {"state": "connected", "last_ack_ns": 123})
    store.save_status("uplink", {"state": "backoff", "last_ack_ns": 456})
    store.save_counters({"duplicates": 7, "readings_stored": 100})
    store.save_counters({"duplicates": 5, "readings_acked": 3})  # a stale snapshot never lowers a total
    store.close()
    store = Store(tmp_path / "b.db", clock=clock)
    assert store.load_status() == {"uplink": {"state": "backoff", "last_ack_ns": 456}}
    assert store.load_counters() == {"duplicates": 7, "readings_acked": 3, "readings_stored": 100}
    store.close()


def test_readonly_open_of_a_missing_file_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no buffer database at"):
        Store(tmp_path / "nope.db", readonly=True)
    assert not (tmp_path / "nope.db").exists()


def test_report_on_a_closed_database(tmp_path: Path) -> None:
    clock = FakeClock()
    limits = StoreLimits(max_bytes=64 << 20, max_age_s=3600, policy="drop-newest")
    store = Store(tmp_path / "b.db", clock=clock, limits=limits)
    first = clock.wall_ns()
    store.add([reading(n, clock, seq=100 + n) for n in (0, 1, 3)])  # seq 102 missing
    clock.advance(2)
    store.add([reading(4, clock, mac="c0:00:00:00:00:02", data_format=3, rssi=-90)])
    store.ack([1])
    store.save_counters({"duplicates": 9, "readings_dropped_cap": 2})
    store.save_status("uplink", {"state": "connected", "last_ack_ns": first + 5})
    store.save_status("gateway", {"pid": 1, "running": False, "scanner": {"state": "scanning"}})
    store.close()

    clock.advance(10)
    ro = Store(tmp_path / "b.db", clock=clock, readonly=True)  # like `edge-gw status`: limits come from the file
    report = ro.report()
    ro.close()
    assert report["version"] == 1
    buffer = report["buffer"]
    assert (buffer["rows"], buffer["held_rows"], buffer["max_bytes"], buffer["max_age_s"], buffer["policy"]) == (
        3, 0, 64 << 20, 3600, "drop-newest")
    assert buffer["oldest_unsent_ns"] == first
    assert buffer["oldest_unsent_age_s"] == 12.0
    assert buffer["bytes"] >= buffer["used_bytes"] > 0
    assert set(report["counters"]) == set(COUNTERS)
    assert report["counters"]["duplicates"] == 9
    assert report["dropped"] == {"cap": 2, "age": 0}
    assert report["duplicates"] == 9
    assert report["uplink"] == {"state": "connected", "last_ack_ns": first + 5}
    assert report["gateway"]["scanner"] == {"state": "scanning"}
    assert set(report["sections"]) == {"gateway", "store", "uplink"}
    assert report["store"] == {"max_bytes": 64 << 20, "max_age_s": 3600, "policy": "drop-newest"}
    assert report["clock"] == {"synced": True, "boot_id": "boot-1", "corrections": 0}
    tag1, tag2 = report["tags"]
    assert tag1 == {
        "mac": MAC, "data_format": 5, "first_seen_ns": first, "last_seen_ns": first, "last_seen_age_s": 12.0,
        "rssi": -70, "battery_voltage": 2903,
        "values": {"data_format": 5, "temperature": 0.03, "battery_voltage": 2903, "measurement_sequence_number": 103},
        "received": 3, "expected": 4, "completeness_pct": 75.0,
    }
    assert tag2["mac"] == "c0:00:00:00:00:02"
    assert (tag2["rssi"], tag2["last_seen_age_s"], tag2["completeness_pct"]) == (-90, 10.0, None)  # DF3: no seq
    assert orjson.loads(orjson.dumps(report)) == report  # JSON-safe


def test_report_while_a_writer_has_the_file_open(tmp_path: Path) -> None:
    clock = FakeClock()
    store = Store(tmp_path / "b.db", clock=clock)
    store.add([reading(n, clock) for n in range(20)])
    ro = Store(tmp_path / "b.db", clock=clock, readonly=True)
    assert ro.report()["buffer"]["rows"] == 20
    store.add([reading(n, clock) for n in range(20, 25)])
    assert ro.report()["buffer"]["rows"] == 25
    with pytest.raises(StoreError, match="readonly"):
        ro.save_status("x", {})
    ro.close()
    store.close()


def test_a_writer_and_an_uplink_connection_work_at_once(tmp_path: Path) -> None:
    """The gateway's two connections: one thread adds, another fetches and acks, both on real locks."""
    clock = FakeClock()
    db = tmp_path / "b.db"
    writer = Store(db, clock=clock)
    uplink = Store(db, clock=clock)
    total = 30_000
    done = threading.Event()
    acked: list[int] = []
    errors: list[BaseException] = []

    def drain() -> None:
        try:
            cursor = 0
            while not done.is_set() or uplink.fetch(after_id=cursor, limit=1):
                batch = uplink.fetch(after_id=cursor, limit=500)
                if batch:
                    cursor = batch[-1].id
                    assert uplink.ack([r.id for r in batch]) == len(batch)
                    acked.extend(r.id for r in batch)
        except BaseException as e:  # handed to the test thread
            errors.append(e)

    t = threading.Thread(target=drain)
    t.start()
    for start in range(0, total, 500):
        writer.add([reading(n, clock) for n in range(start, start + 500)])
    done.set()
    t.join(30)
    assert errors == []
    assert acked == list(range(1, total + 1))  # every id once, in order
    assert writer.stats().rows == 0
    assert writer.max_id() == total
    writer.close()
    uplink.close()


def test_limits_are_checked() -> None:
    assert StoreLimits() == StoreLimits(max_bytes=512 << 20, max_age_s=30 * 86400.0, policy="drop-oldest")
    with pytest.raises(ValueError, match="expected drop-oldest or drop-newest, got 'drop-random'"):
        StoreLimits(policy="drop-random")
    with pytest.raises(ValueError, match="must be positive"):
        StoreLimits(max_bytes=0)


def test_the_schema_is_the_one_sqlite_utils_made_and_its_buffers_open_as_they_are(tmp_path: Path) -> None:
    """The migrations were sqlite-utils' until 2026-12: a new file has the same tables, columns and indexes, and a
    file with its record of m001 is not migrated again."""
    import sqlite3

    from edge.store import schema

    db = tmp_path / "new.db"
    Store(db, clock=FakeClock()).close()
    with sqlite3.connect(db) as conn:
        columns = {t: [(c[1], c[2], c[3], c[5]) for c in conn.execute(f'PRAGMA table_info("{t}")')]
                   for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")}
        indexes = sorted(conn.execute(
            "SELECT name, tbl_name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"))
        record = list(conn.execute('SELECT migration_set, name FROM "_sqlite_migrations"'))
    # What sqlite-utils 4.2 created for m001 (read back from a buffer it made).
    assert columns["boots"] == [("id", "INTEGER", 0, 1), ("boot_id", "TEXT", 1, 0), ("first_seen_ns", "INTEGER", 0, 0)]
    assert columns["queue"] == [("id", "INTEGER", 0, 1), ("ready_rows", "INTEGER", 1, 0),
                                ("held_rows", "INTEGER", 1, 0)]
    assert columns["counters"] == [("name", "TEXT", 0, 1), ("value", "INTEGER", 1, 0)]
    assert columns["status"] == [("section", "TEXT", 0, 1), ("json", "TEXT", 1, 0), ("updated_ns", "INTEGER", 0, 0)]
    assert [c[:2] for c in columns["tags"]] == [
        ("mac", "TEXT"), ("data_format", "INTEGER"), ("first_seen_ns", "INTEGER"), ("last_seen_ns", "INTEGER"),
        ("rssi", "INTEGER"), ("battery_voltage", "INTEGER"), ("fields_json", "TEXT"), ("last_seq", "INTEGER"),
        ("step_ns", "REAL"), ("received", "INTEGER"), ("expected", "INTEGER")]
    assert [c[0] for c in columns["readings"]] == ["id", "mac", "time_ns", "mono_ns", "boot", "clock_synced", "rssi",
                                                    "data_format", "raw", "fields_json"]
    assert columns["_sqlite_migrations"] == [("id", "INTEGER", 0, 1), ("migration_set", "TEXT", 0, 0),
                                             ("name", "TEXT", 0, 0), ("applied_at", "TEXT", 0, 0)]
    assert indexes == [("idx__sqlite_migrations_migration_set_name", "_sqlite_migrations"),
                       ("idx_boots_boot_id", "boots")]
    assert record == [("edge-gw-store", "m001_initial")]
    with sqlite3.connect(db, isolation_level=None) as conn:
        conn.execute("BEGIN IMMEDIATE")
        assert schema.migrate(conn) == []  # nothing left to apply
        conn.execute("COMMIT")
