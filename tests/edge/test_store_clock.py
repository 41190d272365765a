"""Readings taken before the clock synchronised: held back, then corrected from the monotonic clock (same boot) or
released uncorrected (an earlier boot), with new ids past every uplink cursor."""

from __future__ import annotations

from pathlib import Path

from fakeclock import FakeClock
from test_store import reading

from edge.store import Store

WRONG_WALL = 10**18  # 2001: what a Pi without RTC may believe before NTP
TRUE_WALL = 1_763_900_000_000_000_000


def test_unsynced_readings_are_held_then_corrected_once_the_clock_syncs(tmp_path: Path) -> None:
    clock = FakeClock(wall_ns=WRONG_WALL, synced=False)
    store = Store(tmp_path / "b.db", clock=clock)
    store.add([reading(0, clock)])  # synced per the pipeline (e.g. replayed from a synced source): ready at once
    monos = []
    for n in range(1, 4):
        clock.advance(1.5)
        monos.append(clock.mono_ns())
        store.add([reading(n, clock, synced=False)])
    assert [r.id for r in store.fetch()] == [1]  # only ready rows are fetched
    assert store.stats().held_rows == 3
    cursor = store.max_id()

    clock.advance(2)
    clock.wall = TRUE_WALL  # NTP steps the clock
    clock.is_synced = True
    store.add([reading(4, clock)])

    offset = TRUE_WALL - clock.mono_ns()
    rows = store.fetch(after_id=cursor)
    assert [r.raw for r in rows] == [(4).to_bytes(8, "big")] + [n.to_bytes(8, "big") for n in (1, 2, 3)]
    corrected = rows[1:]
    assert [r.time_ns for r in corrected] == [m + offset for m in monos]
    assert corrected[0].time_ns == TRUE_WALL - 5_000_000_000  # 1.5+1.5+2 s before the sync point
    assert all(r.clock_synced for r in corrected)
    assert all(r.id > cursor for r in corrected)  # an uplink holding cursor `cursor` sees them
    assert store.stats().held_rows == 0
    assert store.take_counts()["clock_corrections"] == 3
    assert store.load_counters()["clock_corrections"] == 3
    assert store.report()["clock"]["corrections"] == 3
    store.close()


def test_readings_of_an_earlier_boot_are_released_uncorrected(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    boot1 = FakeClock(wall_ns=WRONG_WALL, synced=False, boot="boot-1")
    store = Store(db, clock=boot1)
    store.add([reading(n, boot1, synced=False) for n in range(3)])
    old_times = [WRONG_WALL] * 3
    store.close()  # power off before NTP ever answered

    boot2 = FakeClock(wall_ns=WRONG_WALL + 7, synced=False, boot="boot-2")
    store = Store(db, clock=boot2)
    boot2.advance(1)
    store.add([reading(n, boot2, synced=False) for n in range(3, 5)])
    assert store.fetch() == []
    assert store.stats().held_rows == 5
    held_mono = boot2.mono_ns()

    boot2.advance(3)
    boot2.wall = TRUE_WALL
    boot2.is_synced = True
    store.enforce_limits()  # what the next add() would do
    rows = store.fetch()
    assert [r.raw for r in rows] == [n.to_bytes(8, "big") for n in range(5)]  # earlier boot first, in order
    assert [(r.time_ns, r.clock_synced) for r in rows[:3]] == [(t, False) for t in old_times]
    assert [(r.time_ns, r.clock_synced) for r in rows[3:]] == [(TRUE_WALL - 3_000_000_000, True)] * 2
    assert held_mono + TRUE_WALL - boot2.mono_ns() == TRUE_WALL - 3_000_000_000
    assert store.take_counts()["clock_corrections"] == 2  # only this boot's readings could be corrected
    store.close()


def test_held_readings_survive_a_restart_of_the_same_boot(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    clock = FakeClock(wall_ns=WRONG_WALL, synced=False)
    store = Store(db, clock=clock)
    store.add([reading(0, clock, synced=False)])
    mono = clock.mono_ns()
    store.close()  # the daemon restarts; same kernel boot, so the monotonic clock still holds
    clock.advance(10)
    clock.wall, clock.is_synced = TRUE_WALL, True
    store = Store(db, clock=clock)
    store.enforce_limits()
    (row,) = store.fetch()
    assert (row.time_ns, row.clock_synced) == (TRUE_WALL - 10_000_000_000, True)
    assert row.time_ns == mono + TRUE_WALL - clock.mono_ns()
    store.close()
