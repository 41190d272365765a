"""CPU per reading of the Kafka records contract (cloud/kafka/records.py): encode and decode, JSON and Avro, one record
per reading and per tag and batch; and, for JSON, the decode the consumer used before msgspec (orjson, then the
checks in Python, which is now only the path that explains a refused record).

DF5-like readings over 1000 tags (bench_influx_ceiling.make_points), in 5000-reading write batches as the bridge
makes them. The best of --repeat runs, process CPU time.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_kafka_records.py [--readings 200000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from bench_influx_ceiling import make_points  # noqa: E402

from cloud.kafka.records import Codec, Record, _points  # noqa: E402
from cloud.model import Point  # noqa: E402

BATCH = 5000


def best_us(fn: Callable[[], object], readings: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        out = fn()
        best = min(best, time.process_time() - t0)
        del out
    return best / readings * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readings", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    n = args.readings
    points = make_points(n, 1_763_900_000_000_000_000)
    for encoding in ("json", "avro"):
        codec = Codec(encoding)
        for kind in ("batch", "reading"):
            records: list[Record] = []

            def encode(codec: Codec = codec, kind: str = kind) -> list[Record]:
                return [r for i in range(0, n, BATCH) for r in codec.records(points[i:i + BATCH], kind)]

            enc = best_us(encode, n, args.repeat)
            records = encode()
            size = sum(len(r.value) for r in records) / n

            def decode(codec: Codec = codec, records: list[Record] = records) -> list[object]:
                return [p for r in records for p in codec.decode(r.value, r.headers)]

            def order(p: Point) -> tuple[str, int]:
                return p.tags["mac"], p.time_ns

            assert sorted(decode(), key=order) == sorted(points, key=order)  # type: ignore[arg-type]
            dec = best_us(decode, n, args.repeat)
            line = (f"{encoding:4} {kind:7}: encode {enc:.2f} us, decode with every check {dec:.2f} us per reading; "
                    f"{size:.0f} B per reading")
            if encoding == "json":
                def old(records: list[Record] = records, kind: str = kind) -> list[object]:
                    return [p for r in records for p in _points(orjson.loads(r.value), kind, check_finite=False)]

                line += f"; orjson + the checks in Python {best_us(old, n, args.repeat):.2f} us"
            print(line, flush=True)


if __name__ == "__main__":
    main()
