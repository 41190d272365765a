"""StoreWriter batching: a transaction per 500 readings or per 100 ms, whichever comes first; flush() commits now."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest
from fakeclock import FakeClock
from test_store import reading

import edge.store.writer as writer_module
from edge.metrics import Counters
from edge.store import Store, StoreError, StoreLimits, StoreWriter


class CountingStore(Store):
    """A real store that also records the size of every transaction add() makes."""

    def __init__(self, path: Path, clock: FakeClock, limits: StoreLimits | None = None) -> None:
        super().__init__(path, clock=clock, limits=limits)
        self.batches: list[int] = []
        self.batch_times: list[float] = []

    def add(self, readings):  # type: ignore[no-untyped-def]
        n = super().add(readings)
        self.batches.append(len(readings))
        self.batch_times.append(time.monotonic())
        return n


async def _wait_for(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.002)


def test_a_backlog_commits_at_once_in_500_row_transactions(tmp_path: Path) -> None:
    clock = FakeClock()
    store = CountingStore(tmp_path / "b.db", clock)
    counters = Counters()
    writer = StoreWriter(store, counters)

    async def main() -> None:
        task = asyncio.create_task(writer.run())
        await asyncio.sleep(0)
        for n in range(1200):
            writer.put(reading(n, clock))
        await _wait_for(lambda: writer.committed == 1200)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    # The loop saw all 1200 at once: no reason to hold the last 200 back for the delay.
    assert store.batches == [500, 500, 200]
    assert counters.snapshot()["readings_stored"] == 1200
    assert [r.id for r in store.fetch(limit=2000)] == list(range(1, 1201))
    store.close()


def test_a_trickle_commits_within_100_ms_of_its_first_reading(tmp_path: Path) -> None:
    clock = FakeClock()
    store = CountingStore(tmp_path / "b.db", clock)
    writer = StoreWriter(store, Counters())

    async def main() -> list[float]:
        task = asyncio.create_task(writer.run())
        firsts = []
        for burst in range(3):
            firsts.append(time.monotonic())
            for n in range(10):
                writer.put(reading(burst * 10 + n, clock))
                await asyncio.sleep(0.005)
            await _wait_for(lambda b=burst: writer.committed == 10 * (b + 1))  # type: ignore[misc]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return firsts

    firsts = asyncio.run(main())
    assert store.batches == [10, 10, 10]
    for first, committed_at in zip(firsts, store.batch_times, strict=True):
        assert 0.099 <= committed_at - first < 2.0  # the upper bound only catches a writer that never wakes
    store.close()


def test_put_500_commits_without_waiting_for_the_delay(tmp_path: Path) -> None:
    clock = FakeClock()
    store = CountingStore(tmp_path / "b.db", clock)
    writer = StoreWriter(store, Counters(), max_delay_s=30.0)

    async def main() -> None:
        task = asyncio.create_task(writer.run())
        await asyncio.sleep(0)
        for n in range(500):
            writer.put(reading(n, clock))
            if n % 100 == 0:
                await asyncio.sleep(0)  # the writer task gets to run in between, as with a real source
        await _wait_for(lambda: writer.committed == 500, timeout=5.0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert store.batches == [500]
    store.close()


def test_flush_commits_what_is_pending_and_counts_drops(tmp_path: Path) -> None:
    clock = FakeClock()
    store = Store(tmp_path / "b.db", clock=clock, limits=StoreLimits(max_bytes=1, policy="drop-newest"))
    counters = Counters()
    writer = StoreWriter(store, counters)
    for n in range(3):
        writer.put(reading(n, clock))
    assert writer.flush() == 0  # max_bytes=1: the file is always at the cap, drop-newest refuses everything
    assert writer.flush() == 0
    assert writer.committed == 0
    assert counters.snapshot()["readings_dropped_cap"] == 3
    assert counters.snapshot()["readings_stored"] == 0
    assert store.load_counters()["readings_dropped_cap"] == 3
    store.close()


def test_cancelled_run_leaves_pending_readings_for_flush(tmp_path: Path) -> None:
    clock = FakeClock()
    store = Store(tmp_path / "b.db", clock=clock)
    writer = StoreWriter(store, Counters(), max_delay_s=10.0)

    async def main() -> None:
        task = asyncio.create_task(writer.run())
        for n in range(7):
            writer.put(reading(n, clock))
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert writer.committed == 0
    assert writer.flush() == 7
    assert writer.committed == 7
    assert store.stats().rows == 7
    store.close()


def test_a_failed_commit_keeps_its_readings_and_retries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real failure: another connection holds the write lock past the writer's busy timeout."""
    monkeypatch.setattr(writer_module, "RETRY_S", 0.05)
    clock = FakeClock()
    db = tmp_path / "b.db"
    store = Store(db, clock=clock)
    store._conn.execute("PRAGMA busy_timeout = 20")
    counters = Counters()
    writer = StoreWriter(store, counters, max_delay_s=0.01)
    blocker = sqlite3.connect(db, isolation_level=None)

    async def main() -> None:
        task = asyncio.create_task(writer.run())
        blocker.execute("BEGIN IMMEDIATE")
        for n in range(5):
            writer.put(reading(n, clock))
        await asyncio.sleep(0.3)  # several failed attempts
        assert writer.committed == 0
        blocker.execute("COMMIT")
        await _wait_for(lambda: writer.committed == 5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert [r.raw for r in store.fetch()] == [n.to_bytes(8, "big") for n in range(5)]
    assert counters.snapshot()["readings_stored"] == 5
    blocker.close()
    store.close()


def test_flush_raises_on_failure_and_keeps_the_readings(tmp_path: Path) -> None:
    clock = FakeClock()
    db = tmp_path / "b.db"
    store = Store(db, clock=clock)
    store._conn.execute("PRAGMA busy_timeout = 20")
    writer = StoreWriter(store, Counters())
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    for n in range(3):
        writer.put(reading(n, clock))
    with pytest.raises(StoreError, match="locked"):
        writer.flush()
    blocker.execute("COMMIT")
    assert writer.flush() == 3
    blocker.close()
    store.close()


def test_source_faster_than_commits_is_held_back(tmp_path: Path) -> None:
    """Without run() committing (a source that never yields), put() commits inline past the high-water mark, in
    transactions of at most max_rows, so memory stays bounded and nothing is lost."""
    clock = FakeClock()
    store = CountingStore(tmp_path / "b.db", clock)
    writer = StoreWriter(store, Counters(), max_rows=100)
    for i in range(5000):
        writer.put(reading(i, clock))
        assert len(writer._pending) <= writer_module.HIGH_WATER_BATCHES * 100
    writer.flush()
    assert store.batches and max(store.batches) <= 100
    assert writer.committed == 5000 == store.stats().rows
