"""Buffer bounds on real files: the byte cap under both policies (exact drop counts, a file that stops growing,
incremental vacuum after a drain) and the age bound with a FakeClock."""

from __future__ import annotations

import os
from pathlib import Path

from fakeclock import FakeClock
from test_store import reading

from edge.store import Store, StoreLimits

CAP = 2 << 20


def file_bytes(path: Path) -> int:
    return sum(os.stat(f"{path}{s}").st_size for s in ("", "-wal") if os.path.exists(f"{path}{s}"))


def fill(store: Store, clock: FakeClock, start: int, count: int) -> None:
    for first in range(start, start + count, 500):
        store.add([reading(n, clock, seq=n % 65535) for n in range(first, min(first + 500, start + count))])


def test_drop_oldest_at_the_byte_cap(tmp_path: Path) -> None:
    clock = FakeClock()
    db = tmp_path / "b.db"
    store = Store(db, clock=clock, limits=StoreLimits(max_bytes=CAP))
    fill(store, clock, 0, 40_000)
    store.checkpoint()
    size_at_40k = file_bytes(db)
    fill(store, clock, 40_000, 40_000)
    store.checkpoint()
    size_at_80k = file_bytes(db)

    stats = store.stats()
    dropped = store.take_counts()["readings_dropped_cap"]
    assert dropped == 80_000 - stats.rows  # every reading not in the file was counted as dropped, exactly
    assert store.load_counters()["readings_dropped_cap"] == dropped
    assert stats.rows > 5000  # the cap holds thousands of readings, not a handful
    assert stats.used_bytes <= CAP
    # The oldest went: what is left is the newest readings, in order, up to the last one written.
    rows = store.fetch(limit=100_000)
    assert [r.id for r in rows] == list(range(80_001 - stats.rows, 80_001))
    assert rows[-1].raw == (79_999).to_bytes(8, "big")
    # The file stopped growing: at most the cap plus the freed pages kept for reuse (under 1 MiB, then vacuumed).
    assert size_at_40k <= CAP + (1 << 20)
    assert size_at_80k <= CAP + (1 << 20)
    print(f"file at the cap: {size_at_40k} then {size_at_80k} bytes, {stats.rows} rows kept, {dropped} dropped")

    # Draining the backlog gives the space back to the file system (incremental vacuum), not just to the freelist.
    for start in range(0, len(rows), 5000):
        store.ack([r.id for r in rows[start:start + 5000]])
    store.checkpoint()
    assert store.stats().rows == 0
    # Up to 1 MiB of free pages stay for reuse (the vacuum threshold at this cap); the rest went back.
    drained = file_bytes(db)
    assert drained <= (1 << 20) + (64 << 10)
    assert drained < size_at_80k // 2
    store.close()


def test_drop_newest_refuses_readings_at_the_cap_until_acks_free_space(tmp_path: Path) -> None:
    clock = FakeClock()
    db = tmp_path / "b.db"
    store = Store(db, clock=clock, limits=StoreLimits(max_bytes=CAP, policy="drop-newest"))
    stored = 0
    for first in range(0, 40_000, 500):
        stored += store.add([reading(n, clock) for n in range(first, first + 500)])
    refused = store.take_counts()["readings_dropped_cap"]
    assert stored + refused == 40_000
    assert refused > 0
    assert store.stats().rows == stored
    # The first readings are the ones kept, with no hole.
    rows = store.fetch(limit=100_000)
    assert [r.raw for r in rows] == [n.to_bytes(8, "big") for n in range(stored)]
    # A batch is refused only once the cap is reached, so the file overshoots it by at most one batch.
    assert store.stats().used_bytes <= CAP + (256 << 10)
    assert store.add([reading(99_999, clock)]) == 0
    assert store.take_counts()["readings_dropped_cap"] == 1
    store.ack([r.id for r in rows[: len(rows) // 2]])
    assert store.add([reading(100_000, clock)]) == 1
    assert store.fetch(after_id=rows[-1].id)[0].raw == (100_000).to_bytes(8, "big")
    assert store.load_counters()["readings_dropped_cap"] == refused + 1
    store.close()


def test_readings_past_max_age_are_dropped_and_counted(tmp_path: Path) -> None:
    clock = FakeClock()
    store = Store(tmp_path / "b.db", clock=clock, limits=StoreLimits(max_age_s=60))
    store.add([reading(n, clock) for n in range(100)])
    clock.advance(30)
    store.add([reading(n, clock) for n in range(100, 150)])
    clock.advance(29)
    store.add([reading(150, clock)])
    assert store.stats().rows == 151  # the first hundred are 59 s old: kept
    clock.advance(2)
    store.add([reading(151, clock)])
    assert store.take_counts()["readings_dropped_age"] == 100
    rows = store.fetch(limit=1000)
    assert [r.raw for r in rows] == [n.to_bytes(8, "big") for n in range(100, 152)]
    assert store.stats().rows == 52
    clock.advance(120)
    store.enforce_limits()
    assert store.stats().rows == 0
    assert store.load_counters()["readings_dropped_age"] == 152
    store.close()


def test_held_readings_age_by_the_monotonic_clock(tmp_path: Path) -> None:
    clock = FakeClock(wall_ns=10**18, synced=False)  # no RTC: the wall clock is wrong and unsynced
    store = Store(tmp_path / "b.db", clock=clock, limits=StoreLimits(max_age_s=60))
    store.add([reading(n, clock, synced=False) for n in range(10)])
    clock.advance(40)
    store.add([reading(n, clock, synced=False) for n in range(10, 15)])
    clock.advance(30)
    store.enforce_limits()
    assert store.stats().held_rows == 5
    assert store.take_counts()["readings_dropped_age"] == 10
    store.close()
