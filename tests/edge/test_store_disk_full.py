"""The buffer on a file system that fills up (a real tmpfs, mounted by the test; needs root) and the buffer lock."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fakeclock import FakeClock
from servers import tmpfs
from test_uplink_support import make_readings

from edge.store import Store, StoreError, StoreLimits
from edge.store.lock import BufferLock, holder


def fill_until_full(store: Store, batches: int, start: int = 0) -> tuple[int, int]:
    """Add `batches` batches of 500; returns (stored, dropped) as the store counted them."""
    stored = 0
    for i in range(batches):
        stored += store.add(make_readings(500, start=start + i * 500))
    return stored, store.take_counts()["readings_dropped_cap"]


@pytest.mark.parametrize("policy", ["drop-oldest", "drop-newest"])
def test_a_full_file_system_drops_by_policy_and_counts(tmp_path: Path, policy: str) -> None:
    with tmpfs(tmp_path / "disk", "4m") as disk:
        store = Store(disk / "buf.db", clock=FakeClock(), limits=StoreLimits(max_bytes=1 << 30, policy=policy))
        try:
            stored, dropped = fill_until_full(store, 60)  # 30,000 readings: about 9 MiB, far more than fits
            assert dropped > 0
            rows = store.stats().rows
            if policy == "drop-oldest":
                assert stored == 30_000  # every batch went in, after the oldest readings made room
                assert rows == 30_000 - dropped
                head = store.fetch(limit=1)[0]
                assert head.time_ns == make_readings(1, start=dropped)[0].time_ns  # exactly the oldest went
            else:
                assert stored + dropped == 30_000
                assert rows == stored  # the newest were refused
            # Something else fills the file system to the last byte: the store still takes every batch, by its
            # policy, and never raises.
            with contextlib.suppress(OSError), open(disk / "filler", "wb") as f:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            stored2, dropped2 = fill_until_full(store, 10, start=100_000)
            assert stored2 + dropped2 >= 5000
            # Space comes back: the store writes again without a restart.
            (disk / "filler").unlink()
            if policy == "drop-newest":
                store.ack([r.id for r in store.fetch(limit=1000)])  # the uplink delivered some: room again
            assert store.add(make_readings(500, start=200_000)) == 500
            assert store.fetch(after_id=store.max_id() - 1)[0].time_ns == make_readings(1, start=200_499)[0].time_ns
        finally:
            with contextlib.suppress(StoreError):
                store.close()


def test_the_buffer_lock_names_its_holder_and_dies_with_it(tmp_path: Path) -> None:
    db = tmp_path / "buf.db"
    lock = BufferLock(db)
    lock.acquire()
    assert holder(db) == os.getpid()
    with pytest.raises(StoreError, match=rf"another edge-gw \(pid {os.getpid()}\) runs on this buffer"):
        BufferLock(db).acquire()
    lock.release()
    assert holder(db) is None
    code = f"from edge.store.lock import BufferLock; lock = BufferLock(__import__('pathlib').Path({str(db)!r})); " \
           "lock.acquire(); print('held', flush=True); __import__('time').sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        assert holder(db) == proc.pid
    finally:
        proc.kill()
        proc.wait()
    assert holder(db) is None  # kill -9: the kernel dropped the lock
    assert holder(tmp_path / "other.db") is None
