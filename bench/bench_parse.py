"""cloud-ingest's per-reading CPU on its hot path, without MQTT or InfluxDB: parse an edge batch (Router.route),
dedup, and encode the points to line protocol (Encoder.line, as the sink does). CPU µs per reading.

CPU time (time.process_time) rather than wall time, so that other work on a shared machine does not count; the
best of --repeat runs is reported. Traffic is shaped like bench_ingest.py's: 500 readings per message, 10 gateways
of 100 tags, DF5 decoded by edge.ruuvi; `--mix` adds E1 and DF6 readings (bools, nulls, more fields).

    python bench/bench_parse.py
    python bench/bench_parse.py --readings 200000 --repeat 7 --mix
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "cloud")]

import orjson  # noqa: E402
from test_receiver_support import df5_payload, mac_bytes, mac_text  # noqa: E402

from cloud.dedup import Dedup  # noqa: E402
from cloud.formats import Router  # noqa: E402
from cloud.lineproto import Encoder  # noqa: E402
from cloud.model import Point  # noqa: E402
from edge import ruuvi  # noqa: E402
from edge.model import Reading  # noqa: E402
from edge.wire import encode_batch  # noqa: E402

S = 1_000_000_000


def vector_hex(fmt: str) -> str:
    vectors = orjson.loads((ROOT / "tests" / "vectors" / "ruuvi.json").read_bytes())
    return str(next(v["hex"] for v in vectors if v["format"] == fmt and "expected" in v))


def messages(total: int, t0: int, mix: bool) -> list[tuple[str, bytes]]:
    """`total` readings in 500-reading edge batches from 10 gateways of 100 tags each."""
    extra = [bytes.fromhex(vector_hex("E1")), bytes.fromhex(vector_hex("6"))] if mix else []
    out = []
    per_gw = total // 10
    for g in range(10):
        rs = []
        for i in range(per_gw):
            tag = g * 1000 + i % 100
            raw = extra[i % 3 - 1] if extra and i % 3 else df5_payload(i // 100, mac_bytes(tag))
            fields = ruuvi.decode(raw)
            if "measurement_sequence_number" in fields:
                fields["measurement_sequence_number"] = (i // 100) % 256
            rs.append(Reading(mac=mac_text(tag), time_ns=t0 + g + i * 1000, mono_ns=0, clock_synced=True,
                              rssi=-70 - i % 20, data_format=raw[0], raw=raw, fields=fields))
        for b in range(0, per_gw, 500):
            out.append((f"edge-gw/gw-{g}/batch", encode_batch(f"gw-{g}", b // 500, rs[b:b + 500])))
    return out


def cpu_us(fn: Callable[[], object], n: int, repeat: int) -> float:
    """Best CPU µs per item over `repeat` runs of fn(), which handles n items. GC as `cloud-ingest run` sets it."""
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readings", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--mix", action="store_true", help="a third each of DF5, E1 and DF6 readings")
    args = ap.parse_args()
    gc.set_threshold(50_000, 50, 100)  # what `cloud-ingest run` sets
    now = time.time_ns()
    msgs = messages(args.readings, now - 3600 * S, args.mix)
    router = Router()
    n = sum(len(router.route(t, p, received_ns=now).points) for t, p in msgs)
    assert n == args.readings, n

    def parse() -> list[Point]:
        points: list[Point] = []
        for t, p in msgs:
            points.extend(router.route(t, p, received_ns=now).points)
        return points

    points = parse()

    def encode() -> None:
        enc = Encoder()  # a fresh cache per run, as a fresh receiver would have; then warm for the rest
        line = enc.line
        for p in points:
            line(p)

    def dedup() -> None:
        d = Dedup(window_s=30, max_entries=1_000_000)
        for i in range(0, n, 5000):
            d.filter(points[i:i + 5000])

    t_parse = cpu_us(parse, n, args.repeat)
    t_encode = cpu_us(encode, n, args.repeat)
    t_dedup = cpu_us(dedup, n, args.repeat)
    print(f"{n} readings in {len(msgs)} edge batches{' (DF5/E1/DF6 mix)' if args.mix else ' (DF5)'}, "
          f"CPU µs per reading, best of {args.repeat}:")
    print(f"  parse (Router.route)  {t_parse:6.2f}")
    print(f"  encode (Encoder.line) {t_encode:6.2f}")
    print(f"  dedup (Dedup.filter)  {t_dedup:6.2f}")
    print(f"  total                 {t_parse + t_encode + t_dedup:6.2f}")


if __name__ == "__main__":
    main()
