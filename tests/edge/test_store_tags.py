"""Per-tag completeness from measurement sequence numbers, with each format's wrap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fakeclock import FakeClock
from test_store import reading

from edge.store import Store
from edge.store.tags import TagState, new_tag

STEP_NS = 1_285_000_000  # RuuviTag's advertising interval


def feed(seqs: list[int | None], data_format: int, *, start_ns: int = 0, step_ns: int = STEP_NS,
         times: list[int] | None = None) -> TagState:
    tag: TagState | None = None
    for i, seq in enumerate(seqs):
        t = times[i] if times is not None else start_ns + i * step_ns
        values: dict[str, Any] = {"data_format": data_format, "measurement_sequence_number": seq}
        if tag is None:
            tag = new_tag("aa:bb:cc:dd:ee:ff", t, t, -70, data_format, values, "{}")
        else:
            tag.observe(t, t, -70, data_format, values, "{}")
    assert tag is not None
    return tag


def counts(tag: TagState) -> tuple[int, int, float | None]:
    return tag.received, tag.expected, tag.completeness_pct()


def test_df5_wraps_at_65535() -> None:
    # DF5 counts 0..65534: 65535 means "not available", so 65534 is followed by 0.
    assert counts(feed([65532, 65533, 65534, 0, 1, 2], 5)) == (6, 6, 100.0)
    assert counts(feed([65532, 65534, 1, 2], 5)) == (4, 6, 66.67)  # 65533 and 0 missing across the wrap
    assert counts(feed([65534, None, 0], 5)) == (2, 2, 100.0)  # an unavailable sequence number is not a gap


def test_c5_like_df5_and_df6_wraps_at_256() -> None:
    assert counts(feed([65534, 0], 0xC5)) == (2, 2, 100.0)
    assert counts(feed([253, 254, 255, 0, 1], 6)) == (5, 5, 100.0)
    assert counts(feed([250, 252, 255, 3], 6)) == (4, 10, 40.0)


def test_e1_wraps_at_24_bits() -> None:
    assert counts(feed([16777213, 16777214, 0, 1], 0xE1)) == (4, 4, 100.0)
    assert counts(feed([16777212, 1], 0xE1)) == (2, 5, 40.0)


def test_a_late_reading_fills_its_gap_and_a_restart_is_no_gap() -> None:
    assert counts(feed([10, 11, 13, 12, 14], 5)) == (5, 5, 100.0)
    # The tag rebooted: its counter starts again at 0. That is one new measurement, not 65000 missing ones.
    assert counts(feed([40000, 40001, 0, 1], 5)) == (4, 4, 100.0)


def test_a_long_silence_counts_the_whole_turns_of_the_counter() -> None:
    # DF6 wraps every 256 measurements: after 10 minutes of silence the sequence alone cannot say how many were
    # missed, the tag's time per step can.
    times = [i * STEP_NS for i in range(10)]
    silence_steps = 600
    times.append(times[-1] + silence_steps * STEP_NS)
    tag = feed([*range(10), (9 + silence_steps) % 256], 6, times=times)
    assert counts(tag) == (11, 10 + silence_steps, round(100 * 11 / 610, 2))


def test_no_sequence_number_means_no_completeness() -> None:
    assert counts(feed([None, None], 3)) == (0, 0, None)


def test_the_store_keeps_completeness_and_last_values_across_restarts(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    clock = FakeClock()
    store = Store(db, clock=clock)
    for seq in (65530, 65531, 65533):
        clock.advance(1.285)
        store.add([reading(seq, clock, seq=seq)])
    store.close()
    store = Store(db, clock=clock)
    for seq in (65534, 1):  # 0 missing across the wrap
        clock.advance(1.285)
        store.add([reading(seq, clock, seq=seq, rssi=-55)])
    store.close()
    (tag,) = Store(db, clock=clock, readonly=True).report()["tags"]
    assert (tag["received"], tag["expected"], tag["completeness_pct"]) == (5, 7, 71.43)
    assert (tag["rssi"], tag["battery_voltage"], tag["last_seen_ns"]) == (-55, 2901, clock.wall_ns())
    assert tag["values"]["measurement_sequence_number"] == 1


def test_a_clock_step_at_ntp_sync_is_not_a_silence(tmp_path: Path) -> None:
    # DF6 wraps every 256 measurements; the wall clock jumping 3 h forward must not read as 10,000 missed ones.
    clock = FakeClock(wall_ns=10**18, synced=False)
    store = Store(tmp_path / "b.db", clock=clock)
    for seq in range(5):
        clock.advance(1)
        store.add([reading(seq, clock, seq=seq, data_format=6, synced=False)])
    clock.wall += 3 * 3600 * 10**9
    clock.is_synced = True
    for seq in (5, 6):
        clock.advance(1)
        store.add([reading(seq, clock, seq=seq, data_format=6)])
    (tag,) = store.report()["tags"]
    assert (tag["received"], tag["expected"], tag["completeness_pct"]) == (7, 7, 100.0)
    assert tag["last_seen_ns"] == clock.wall_ns()
    store.close()
