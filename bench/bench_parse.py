"""cloud-ingest's per-reading CPU on its hot path, without MQTT or InfluxDB: parse an edge batch (Router.route),
dedup, and encode the points to line protocol (Encoder.line, as the sink does). CPU µs per reading.

CPU time (time.process_time) rather than wall time, so that other work on a shared machine does not count as much;
the best of --repeat runs is reported per stage. Points are handled in write batches of --batch points, as the
receiver does, so the working set is a batch, not the whole run. Traffic is shaped like bench_ingest.py's: 500
readings per message, 10 gateways of 100 tags, DF5 decoded by core.ruuvi; `--mix` adds E1 and DF6 readings
(bools, nulls, more fields). `--ruuvi-gateway` sends Ruuvi Gateway traffic instead: one advert per message, 1000
tags heard by 10 gateways, each tag once a second.

    python bench/bench_parse.py
    python bench/bench_parse.py --readings 200000 --repeat 7 --mix
    python bench/bench_parse.py --ruuvi-gateway --batch 10000
"""

from __future__ import annotations

import argparse
import gc
import random
import struct
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "cloud")]

import orjson  # noqa: E402
from test_receiver_support import df5_payload, mac_bytes, mac_text  # noqa: E402

from cloud.dedup import Dedup  # noqa: E402
from cloud.formats import Router  # noqa: E402
from cloud.lineproto import Encoder  # noqa: E402
from cloud.model import Point  # noqa: E402
from core import ruuvi  # noqa: E402
from edge.model import Reading  # noqa: E402
from edge.wire import encode_batch  # noqa: E402

S = 1_000_000_000


def vector_hex(fmt: str) -> str:
    vectors = orjson.loads((ROOT / "tests" / "vectors" / "ruuvi.json").read_bytes())
    return str(next(v["hex"] for v in vectors if v["format"] == fmt and "expected" in v))


def messages(total: int, t0: int, mix: bool) -> list[tuple[str, bytes]]:
    """`total` readings in 500-reading edge batches from 10 gateways of 100 tags each. Values are drawn at random
    (seeded) over 8,000 temperatures, 24,000 humidities and 3,000 pressures, so that the encoder's memory of float
    texts hits about as often as with real tags, not on every reading."""
    rng = random.Random(7)
    extra = [bytes.fromhex(vector_hex("E1")), bytes.fromhex(vector_hex("6"))] if mix else []
    out = []
    per_gw = total // 10
    for g in range(10):
        rs = []
        for i in range(per_gw):
            tag = g * 1000 + i % 100
            temp, hum, pa = rng.randrange(-2000, 6000), rng.randrange(8000, 32000), rng.randrange(48000, 51000)
            if extra and i % 3:
                raw = extra[i % 3 - 1]
                fields = ruuvi.decode(raw)
                fields.update(temperature=temp / 200, humidity=hum / 400, pressure=pa + 50000)
                fields["pm2_5"] = rng.randrange(0, 1000) / 10
            else:
                raw = df5_payload(i // 100, mac_bytes(tag))
                raw = raw[:1] + struct.pack(">hHH", temp, hum, pa) + raw[7:]
                fields = ruuvi.decode(raw)
            if "measurement_sequence_number" in fields:
                fields["measurement_sequence_number"] = (i // 100) % 256
            rs.append(Reading(mac=mac_text(tag), time_ns=t0 + g + i * 1000, mono_ns=0, clock_synced=True,
                              rssi=-70 - i % 20, data_format=raw[0], raw=raw, fields=fields))
        for b in range(0, per_gw, 500):
            out.append((f"edge-gw/gw-{g}/batch", encode_batch(f"gw-{g}", b // 500, rs[b:b + 500])))
    return out


def ruuvi_gateway_messages(total: int, t0_s: int) -> list[tuple[str, bytes]]:
    """`total` Ruuvi Gateway messages (topic ruuvi/<gateway MAC>/<tag MAC>, the advert in `data`): 1000 tags, each
    heard once a second by one of 10 gateways, with values drawn as in messages()."""
    rng = random.Random(7)
    out = []
    for i in range(total):
        tag, second = i % 1000, i // 1000
        gw_mac = f"AA:BB:CC:DD:EE:{tag % 10:02X}"
        payload = df5_payload(second, mac_bytes(tag))
        temp, hum, pa = rng.randrange(-2000, 6000), rng.randrange(8000, 32000), rng.randrange(48000, 51000)
        payload = payload[:1] + struct.pack(">hHH", temp, hum, pa) + payload[7:]
        advert = bytes([0x02, 0x01, 0x06, len(payload) + 3, 0xFF, 0x99, 0x04]) + payload
        body = (f'{{"gw_mac":"{gw_mac}","rssi":{-70 - i % 20},"aoa":[],"gwts":{t0_s + second},'
                f'"ts":{t0_s + second},"data":"{advert.hex().upper()}","coords":""}}')
        out.append((f"ruuvi/{gw_mac}/{mac_text(tag).upper()}", body.encode()))
    return out


def run(msgs: list[tuple[str, bytes]], now: int, batch: int) -> tuple[float, float, float]:
    """One pass the way the receiver goes: parse messages until a batch of `batch` points is full, dedup it, then
    encode what it kept (a fresh receiver: empty caches). CPU seconds of each stage."""
    router = Router()
    dedup = Dedup(window_s=30, max_entries=1_000_000)
    line = Encoder().line
    cpu = time.process_time
    t_parse = t_dedup = t_encode = 0.0
    i = 0
    while i < len(msgs):
        t0 = cpu()
        points: list[Point] = []
        while i < len(msgs) and len(points) < batch:
            topic, payload = msgs[i]
            points.extend(router.route(topic, payload, received_ns=now).points)
            i += 1
        t1 = cpu()
        kept = dedup.filter(points).kept
        t2 = cpu()
        for p in kept:
            line(p)
        t3 = cpu()
        t_parse += t1 - t0
        t_dedup += t2 - t1
        t_encode += t3 - t2
    return t_parse, t_dedup, t_encode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readings", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=5000, help="points per write batch (batch.max_points)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--mix", action="store_true", help="a third each of DF5, E1 and DF6 readings")
    ap.add_argument("--ruuvi-gateway", action="store_true", help="Ruuvi Gateway traffic: one reading per message")
    args = ap.parse_args()
    gc.set_threshold(50_000, 50, 100)  # what `cloud-ingest run` sets
    now = time.time_ns()
    if args.ruuvi_gateway:
        msgs = ruuvi_gateway_messages(args.readings, now // S - 3600)
        what = "Ruuvi Gateway messages (one DF5 reading each)"
    else:
        msgs = messages(args.readings, now - 3600 * S, args.mix)
        what = f"edge batches{' (DF5/E1/DF6 mix)' if args.mix else ' (DF5)'}"
    n = sum(len(Router().route(t, p, received_ns=now).points) for t, p in msgs)
    assert n == args.readings, n
    runs = [run(msgs, now, args.batch) for _ in range(args.repeat)]
    t_parse, t_dedup, t_encode = (min(r[k] for r in runs) / n * 1e6 for k in range(3))
    print(f"{n} readings in {len(msgs)} {what}, CPU µs per reading, best of {args.repeat}:")
    print(f"  parse (Router.route)  {t_parse:6.2f}")
    print(f"  dedup (Dedup.filter)  {t_dedup:6.2f}")
    print(f"  encode (Encoder.line) {t_encode:6.2f}")
    print(f"  total                 {t_parse + t_encode + t_dedup:6.2f}")


if __name__ == "__main__":
    main()
