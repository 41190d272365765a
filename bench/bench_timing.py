"""Timing figures that used to be asserts in the test suite (issue 13: no timing asserts in tests).

Run: python bench/bench_timing.py

1. line protocol: lines/s of cloud.lineproto.Encoder for 5,000 typical 11-field RuuviTag points (best of 3);
2. gateway dedup: calls/s of edge.dedup.Dedup.is_duplicate early (after 40k-160k calls) and late (after 200k-320k)
   with a full 10k-key window, and their ratio: the cost per call must not grow with history (O(1) expiry);
3. simulator pacing: how close `--source simulate --rate R` keeps to its rate, and its longest gap, per rate.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cloud.lineproto import Encoder
from cloud.model import Point
from edge.dedup import Dedup
from edge.sources import SourceOptions
from edge.sources.simulate import SimulatedSource

DF5 = bytes.fromhex("0512fc5394c37c0004fffc040cac364200cdcbb8334c884f")


def lineproto() -> None:
    pts = [
        Point("ruuvi", {"mac": f"cb:b8:33:4c:88:{i % 100:02x}", "gateway": f"gw-{i % 10}", "data_format": "5"},
              {"temperature": 24.3 + i % 7, "humidity": 53.49, "pressure": 100044.0, "acceleration_x": 4,
               "acceleration_y": -4, "acceleration_z": 1036, "battery_voltage": 2977, "tx_power": 4,
               "movement_counter": 66, "measurement_sequence_number": i, "rssi": -71},
              1763913600123456789 + i)
        for i in range(5000)
    ]
    enc = Encoder()
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        enc.encode(pts)
        best = max(best, len(pts) / (time.perf_counter() - t))
    print(f"lineproto: {best:,.0f} lines/s (5,000 typical points, best of 3)")


def dedup() -> None:
    d = Dedup(window_s=1, max_entries=10_000)  # 10k keys per window: from the 10k-th call on, each call expires one
    rates = []
    for chunk in range(8):
        start = time.perf_counter()
        for i in range(chunk * 40_000, (chunk + 1) * 40_000):
            d.is_duplicate("aa", i % 65535, DF5, i * 100_000)
        rates.append(40_000 / (time.perf_counter() - start))
    early, late = max(rates[1:4]), max(rates[5:])
    print(f"dedup: {early:,.0f} calls/s early, {late:,.0f} late (ratio {late / early:.2f}; 1.0 = no growth)")


def pacing() -> None:
    for rate, count in ((20.0, 10), (400.0, 200), (20_000.0, 10_000)):
        source = SimulatedSource(SourceOptions(tags=50, rate=rate, count=count))
        times: list[float] = []
        start = time.monotonic()
        asyncio.run(source.run(lambda _a, times=times: times.append(time.monotonic())))
        elapsed = time.monotonic() - start
        expected = (count - 1) / rate
        gap = max(b - a for a, b in itertools.pairwise(times))
        print(f"simulate --rate {rate:g}: {count} adverts in {elapsed:.3f} s (expected {expected:.3f} s), "
              f"longest gap {gap * 1000:.1f} ms")


if __name__ == "__main__":
    lineproto()
    dedup()
    pacing()
