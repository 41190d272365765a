"""A gateway's wall clock steps, driven with a FakeClock: the pipeline stamps each reading with the clock's time,
counts and logs each step (by the wall-minus-monotonic offset), and the buffer ages readings by the monotonic clock,
so no step changes an age. The test-only EDGE_GW_TEST_CLOCK_STEPS knob of SystemClock."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fakeclock import FakeClock
from test_pipeline import MAC, df5
from test_store import reading

from edge.clock import TEST_STEPS_ENV, SystemClock, parse_test_steps
from edge.dedup import Dedup
from edge.gateway import Pipeline
from edge.model import Advert, Reading
from edge.store import Store, StoreLimits

S = 1_000_000_000
HOUR = 3600.0


def pipeline() -> tuple[Pipeline, list[Reading], FakeClock]:
    clock = FakeClock()
    out: list[Reading] = []
    return Pipeline(clock, Dedup(window_s=10), out.append), out, clock


def test_readings_keep_the_clock_time_across_steps_in_both_directions_and_each_step_is_counted(
        caplog: pytest.LogCaptureFixture) -> None:
    p, out, clock = pipeline()
    t0 = clock.wall_ns()
    seq = 0
    expected: list[int] = []
    for step in (0.0, HOUR, -HOUR, -HOUR):
        clock.step(step)
        for _ in range(3):
            seq += 1
            clock.advance(1.0)
            expected.append(clock.wall_ns())
            p(Advert(MAC, df5(seq), -60))
    assert [r.time_ns for r in out] == expected
    assert (p.steps_ahead, p.steps_back) == (1, 2)
    # After the step back the times of later measurements are earlier than those before it: the order of time no
    # longer follows the order of the sequence numbers; the readings are all there, with their monotonic times.
    assert [r.fields["measurement_sequence_number"] for r in out] == list(range(1, 13))
    assert out[6].time_ns < out[5].time_ns and out[9].time_ns < t0
    assert [r.mono_ns for r in out] == sorted(r.mono_ns for r in out)
    steps = [r.getMessage() for r in caplog.records if "stepped" in r.getMessage()]
    assert steps == ["the wall clock stepped ahead by 3600.000 s; readings keep the clock's time (see Pipeline)",
                     "the wall clock stepped back by 3600.000 s; readings keep the clock's time (see Pipeline)",
                     "the wall clock stepped back by 3600.000 s; readings keep the clock's time (see Pipeline)"]


def test_what_ntp_may_slew_is_not_a_step() -> None:
    p, _out, clock = pipeline()
    p(Advert(MAC, df5(1), -60))
    clock.advance(1.0)
    clock.step(0.9)  # within a second between two readings
    p(Advert(MAC, df5(2), -60))
    clock.advance(3 * HOUR)  # three hours without an advert: up to 5.4 s of slew ...
    clock.step(-5.0)
    p(Advert(MAC, df5(3), -60))
    assert (p.steps_ahead, p.steps_back) == (0, 0)
    clock.advance(1.0)
    clock.step(1.5)  # ... but 1.5 s within a second is a step
    p(Advert(MAC, df5(4), -60))
    assert (p.steps_ahead, p.steps_back) == (1, 0)


def test_the_buffer_ages_readings_by_the_monotonic_clock_so_a_step_changes_no_age(tmp_path: Path) -> None:
    clock = FakeClock()
    store = Store(tmp_path / "b.db", clock=clock, limits=StoreLimits(max_age_s=7 * 86400))
    store.add([reading(n, clock) for n in range(10)])
    clock.advance(3600)
    clock.step(365 * 86400)  # a year ahead: by their times every reading is a year old
    store.add([reading(n, clock) for n in range(10, 20)])
    store.enforce_limits()
    assert store.stats().rows == 20 and store.take_counts()["readings_dropped_age"] == 0
    clock.step(-2 * 365 * 86400)  # a year behind: by their times the first are a year in the future
    clock.advance(7 * 86400 - 3600)  # the first ten are now exactly max_age old, by the monotonic clock
    store.enforce_limits()
    assert store.stats().rows == 20
    clock.advance(1)
    store.enforce_limits()
    assert [r.raw for r in store.fetch(limit=100)] == [n.to_bytes(8, "big") for n in range(10, 20)]
    assert store.take_counts()["readings_dropped_age"] == 10
    store.close()


def test_readings_of_an_earlier_boot_still_age_by_their_time(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    boot1 = FakeClock(boot="boot-1")
    store = Store(db, clock=boot1, limits=StoreLimits(max_age_s=60))
    store.add([reading(n, boot1) for n in range(5)])
    store.close()
    boot2 = FakeClock(wall_ns=boot1.wall_ns() + 61 * S, boot="boot-2")  # its monotonic clock starts afresh
    store = Store(db, clock=boot2, limits=StoreLimits(max_age_s=60))
    store.add([reading(5, boot2)])
    assert [r.raw for r in store.fetch()] == [(5).to_bytes(8, "big")]
    assert store.take_counts()["readings_dropped_age"] == 5
    store.close()


def test_the_test_only_knob_skews_the_system_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_test_steps("0:-3600, 2.5:1.5") == [(0, -3600 * S), (2_500_000_000, 1_500_000_000)]
    with pytest.raises(ValueError, match=f"{TEST_STEPS_ENV}: 'x' is not <after s>:<offset s>"):
        parse_test_steps("x")
    monkeypatch.setenv(TEST_STEPS_ENV, "0:-3600,0.3:7200")
    clock = SystemClock()
    assert abs(clock.wall_ns() - (time.time_ns() - 3600 * S)) < S // 10
    time.sleep(0.35)
    assert abs(clock.wall_ns() - (time.time_ns() + 7200 * S)) < S // 10
    monkeypatch.delenv(TEST_STEPS_ENV)
    assert abs(SystemClock().wall_ns() - time.time_ns()) < S // 10
