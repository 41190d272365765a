"""Store throughput: Store.add in 500-row transactions, StoreWriter end to end, and the fetch+ack drain.

    python bench/bench_store.py [--readings 200000] [--tags 1000]

Readings are real DF5 payloads decoded by core.ruuvi, as the gateway stores them. Not a timed test: run it by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fakeclock import FakeClock

from core import ruuvi
from edge.metrics import Counters
from edge.model import Reading
from edge.store import Store, StoreWriter


def make_readings(n: int, tags: int, clock: FakeClock) -> list[Reading]:
    out = []
    for i in range(n):
        tag = i % tags
        seq = (i // tags) % 65535
        mac = bytes([0xC0, 0, 0, 0, tag >> 8, tag & 0xFF])
        payload = struct.pack(">BhHHhhhHBH6s", 5, 2430 + seq % 50, 21396, 50044, 4, -4, 1036, 0xB9F6, 66, seq, mac)
        fields = ruuvi.decode(payload)
        out.append(Reading(mac.hex(":"), clock.wall + i * 20_000, clock.mono + i * 20_000, True, -70 - tag % 20, 5,
                           payload, fields))
    return out


def bench_add(path: Path, readings: list[Reading], clock: FakeClock) -> tuple[float, float]:
    """Wall and CPU seconds (CPU time is the steadier figure when other jobs share the cores)."""
    store = Store(path, clock=clock)
    t0, c0 = time.perf_counter(), time.process_time()
    for start in range(0, len(readings), 500):
        store.add(readings[start:start + 500])
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    store.close()
    return elapsed, cpu


async def _writer_run(store: Store, readings: list[Reading]) -> float:
    writer = StoreWriter(store, Counters())
    task = asyncio.create_task(writer.run())
    t0 = time.perf_counter()
    for start in range(0, len(readings), 100):
        for r in readings[start:start + 100]:
            writer.put(r)
        await asyncio.sleep(0)  # let the writer task see full batches, as a source would between adverts
    while writer.committed + len(writer._pending) < len(readings):
        await asyncio.sleep(0.001)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    writer.flush()
    assert writer.committed == len(readings)
    return time.perf_counter() - t0


def bench_drain(path: Path, clock: FakeClock) -> tuple[int, float]:
    store = Store(path, clock=clock)
    n = 0
    t0 = time.perf_counter()
    while True:
        batch = store.fetch(0, limit=500)
        if not batch:
            break
        n += store.ack([r.id for r in batch])
    elapsed = time.perf_counter() - t0
    store.close()
    return n, elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--readings", type=int, default=200_000)
    ap.add_argument("--tags", type=int, default=1000)
    args = ap.parse_args()
    clock = FakeClock()
    readings = make_readings(args.readings, args.tags, clock)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        t, cpu = bench_add(path, readings, clock)
        n = len(readings)
        print(f"Store.add, 500-row txns: {n / t:,.0f} readings/s, {t / n * 1e6:.2f} µs/reading "
              f"({cpu / n * 1e6:.2f} µs CPU)")
        n_drained, t = bench_drain(path, clock)
        print(f"drain fetch(500)+ack: {n_drained / t:,.0f} readings/s ({n_drained} readings)")
        store = Store(Path(tmp) / "writer.db", clock=clock)
        t = asyncio.run(_writer_run(store, readings))
        store.close()
        print(f"StoreWriter put()+run() end to end: {n / t:,.0f} readings/s, {t / n * 1e6:.2f} µs/reading")


if __name__ == "__main__":
    main()
