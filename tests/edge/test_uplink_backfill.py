"""Live data first while a backlog drains at the capped rate; wait_drained's progress."""

from __future__ import annotations

import time
from pathlib import Path

from servers import Mosquitto
from test_uplink_support import buffered, fill, keys, make_readings, running_uplink, subscriber

from edge.metrics import Counters
from edge.uplink import UplinkSettings

CAP = 2000.0  # readings/s


def test_live_readings_overtake_a_backlog_drained_at_the_cap(tmp_path: Path, mosquitto: Mosquitto) -> None:
    db = tmp_path / "buf.db"
    backlog = make_readings(6000, tag=1)
    fill(db, backlog)
    settings = UplinkSettings(backfill_rate=CAP, backoff_min_s=0.05, backoff_max_s=0.3)
    live: list[tuple[list[tuple[str, int]], float]] = []
    with subscriber(mosquitto.port) as sub, running_uplink(db, mosquitto.url, settings=settings) as up:
        assert up.wait_connected(5)
        time.sleep(0.5)
        for i in range(3):
            batch = make_readings(100, tag=2, start=i * 100)
            fill(db, batch)
            live.append((sorted(keys(batch)), time.monotonic()))
            time.sleep(0.3)
        assert up.wait_drained(10)
        assert sub.wait(lambda s: len(s.received()) >= 6300)
    backlog_keys = keys(backlog)
    arrivals = [(k, b.at) for b in sub.batches for k in b.keys]
    assert sorted(k for k, _ in arrivals) == sorted(backlog_keys | {k for ks, _ in live for k in ks})
    backlog_times = [t for k, t in arrivals if k in backlog_keys]
    # Live readings arrive within a moment of being committed, long before the backlog is through.
    for ks, committed in live:
        arrived = max(t for k, t in arrivals if k in set(ks))
        assert arrived - committed < 0.3
        assert arrived < max(backlog_times) - 1.0
    # The backlog goes oldest first ...
    backlog_order = [k for k, _ in arrivals if k in backlog_keys]
    assert backlog_order == sorted(backlog_order, key=lambda k: k[1])
    # ... at the cap: 6000 readings at 2000/s take about 3 s.
    rate = (len(backlog_times) - 100) / (max(backlog_times) - min(backlog_times))  # the first 100 are the burst
    assert 0.85 * CAP <= rate <= 1.1 * CAP, rate
    # Backfill batches are small (cap / 20) so the stream is smooth; live batches hold what was committed.
    assert {len(b.keys) for b in sub.batches if b.keys[0] in backlog_keys} == {100}


def test_wait_drained_reports_progress_down_to_zero(tmp_path: Path, mosquitto: Mosquitto) -> None:
    db = tmp_path / "buf.db"
    fill(db, make_readings(20_000))
    seen: list[int] = []
    settings = UplinkSettings(backfill_rate=20_000.0, backoff_min_s=0.05, backoff_max_s=0.3)
    counters = Counters()
    with subscriber(mosquitto.port), running_uplink(db, mosquitto.url, settings=settings, counters=counters) as up:
        assert up.wait_drained(20, progress=seen.append)
    assert seen[0] > 5000  # it had barely started
    assert seen[-1] == 0
    assert seen == sorted(seen, reverse=True)
    assert len(seen) >= 4
    assert buffered(db) == 0
    assert counters.snapshot()["readings_acked"] == 20_000


def test_wait_drained_times_out_without_a_broker(tmp_path: Path) -> None:
    from servers import free_port

    db = tmp_path / "buf.db"
    fill(db, make_readings(10))
    seen: list[int] = []
    with running_uplink(db, f"mqtt://127.0.0.1:{free_port()}") as up:
        t = time.monotonic()
        assert up.wait_drained(0.5, progress=seen.append) is False
        assert 0.5 <= time.monotonic() - t < 1.0
    assert set(seen) == {10}
