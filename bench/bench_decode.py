"""Decode benchmark: core.ruuvi.decode vs ruuvitag-sensor's DF5 decoder, µs per reading.

Run: python bench/bench_decode.py [--number N] [--repeat R]

Both decoders get the same 1,000 distinct DF5 payloads (seeded), ours as bytes (what bleak hands over),
ruuvitag-sensor's as the hex string its ``Df5Decoder.decode_data`` takes. The best of R repeats is
reported, as timeit recommends, to filter out noise from other processes on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import random
import struct
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.ruuvi import decode

# ruuvitag-sensor picks its dummy BLE adapter when CI is set; its decoders do no I/O either way.
os.environ.setdefault("CI", "1")
from ruuvitag_sensor.decoders import Df5Decoder


def payloads(count: int, seed: int = 5) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        body = struct.pack(
            ">BhHHhhhHBH",
            5,
            rng.randint(-8000, 8000),
            rng.randint(0, 40000),
            rng.randint(40000, 60000),
            rng.randint(-1100, 1100),
            rng.randint(-1100, 1100),
            rng.randint(-1100, 1100),
            rng.randint(0, 0xFFFE),
            rng.randint(0, 254),
            rng.randint(0, 65534),
        )
        out.append(body + bytes(rng.randrange(256) for _ in range(6)))
    return out


def per_reading_us(fn: object, items: list[object], number: int, repeat: int) -> float:
    def run() -> None:
        for item in items:
            fn(item)  # type: ignore[operator]

    best = min(timeit.repeat(run, number=number, repeat=repeat))
    return best / (number * len(items)) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20, help="passes over the 1,000 payloads per repeat")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    data = payloads(1000)
    hexes = [p.hex() for p in data]
    theirs = Df5Decoder().decode_data
    assert all(theirs(h) is not None for h in hexes[:10])

    ours_us = per_reading_us(decode, list(data), args.number, args.repeat)
    theirs_us = per_reading_us(theirs, list(hexes), max(1, args.number // 4), args.repeat)
    print(f"python {sys.version.split()[0]}, {len(data)} distinct DF5 payloads, best of {args.repeat}")
    print(f"core.ruuvi.decode (DF5, bytes):             {ours_us:8.3f} µs/reading")
    print(f"ruuvitag_sensor Df5Decoder.decode_data (hex): {theirs_us:8.3f} µs/reading")
    print(f"ratio (ruuvitag-sensor / core.ruuvi):       {theirs_us / ours_us:8.1f}x")


if __name__ == "__main__":
    main()
