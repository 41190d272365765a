"""Drain rate of the uplink: a buffer holding a backlog of N readings (default 1M) -> real Mosquitto, QoS 1.

    python bench/bench_drain.py                 # 1M backlog, drained with no backfill cap
    python bench/bench_drain.py --live          # the same N written while the uplink sends (sustained rate)
    python bench/bench_drain.py -n 200000 --backfill-rate 20000

It fills a temporary buffer with Store.add in 5000-row transactions (1000 tags of real DF5 payloads), starts a
private Mosquitto (tests/servers.py) and a counting subscriber in its own process, then runs the Uplink until the
buffer is empty and the subscriber has counted every reading. The backfill cap is off (`inf`) unless
--backfill-rate is given, because the cap is a deliberate brake that this benchmark is not about. Prints readings/s
as the uplink saw it (all PUBACKed and deleted) and as the subscriber saw it.
"""

from __future__ import annotations

import argparse
import math
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from fakeclock import FakeClock  # noqa: E402
from servers import Mosquitto  # noqa: E402

from core import ruuvi  # noqa: E402
from edge.metrics import Counters  # noqa: E402
from edge.model import Reading  # noqa: E402
from edge.store import Store, StoreLimits  # noqa: E402
from edge.uplink import MqttSettings, Uplink, UplinkSettings  # noqa: E402

SUBSCRIBER = r"""
import sys, time, orjson, threading
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
port, expected = int(sys.argv[1]), int(sys.argv[2])
count = 0; first = last = 0.0; done = threading.Event(); ready = threading.Event()
def on_message(c, u, msg):
    global count, first, last
    n = len(orjson.loads(msg.payload)["readings"])
    if count == 0:
        first = time.time()
    count += n; last = time.time()
    if count >= expected:
        done.set()
c = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-counter", clean_session=True)
c.on_connect = lambda cl, *a: cl.subscribe("edge-gw/+/batch", qos=1)
c.on_subscribe = lambda *a: ready.set()
c.on_message = on_message
c.connect("127.0.0.1", port)
c.loop_start()
ready.wait(10)
print("ready", flush=True)
done.wait(float(sys.argv[3]))
c.disconnect(); c.loop_stop()
print(f"{count} {first:.6f} {last:.6f}", flush=True)
"""


def df5(seq: int, tag: int) -> bytes:
    t = 2000 + (tag * 7 + seq) % 1000
    mac = bytes([0xC0, 0xFF, 0xEE, 0x00, tag >> 8, tag & 0xFF])
    return struct.pack(">BhHHhhhHBH6s", 5, t, 21000 + seq % 5000, 50000 + tag, 4, -4, 1036, (1200 << 5) | 22,
                       seq & 0xFF, seq % 65535, mac)


def readings(start: int, n: int, tags: int = 1000) -> list[Reading]:
    out = []
    for i in range(start, start + n):
        tag, seq = i % tags, i // tags
        raw = df5(seq, tag)
        mac = ":".join(f"{b:02x}" for b in raw[18:24])
        out.append(Reading(mac, 1_763_900_000_000_000_000 + i * 1000, 0, True, -60 - tag % 30, 5, raw,
                           ruuvi.decode(raw)))
    return out


def fill(db: Path, n: int, chunk: int = 5000) -> float:
    store = Store(db, limits=StoreLimits(max_bytes=8 << 30), clock=FakeClock())
    t = time.perf_counter()
    for start in range(0, n, chunk):
        store.add(readings(start, min(chunk, n - start)))
    store.close()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=1_000_000, help="readings (default 1M)")
    ap.add_argument("--live", action="store_true", help="write the readings while the uplink runs")
    ap.add_argument("--backfill-rate", type=float, default=math.inf, help="readings/s cap for the backlog")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--inflight", type=int, default=16)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-drain-") as tmp:
        work = Path(tmp)
        db = work / "buf.db"
        if args.live:
            Store(db, clock=FakeClock()).close()
            premade: list[list[Reading]] = [readings(s, min(5000, args.n - s)) for s in range(0, args.n, 5000)]
        else:
            secs = fill(db, args.n)
            print(f"filled {args.n} readings in {secs:.1f} s ({args.n / secs:,.0f}/s, Store.add, 5000 per txn), "
                  f"file {db.stat().st_size / 2**20:.0f} MiB")
        broker = Mosquitto(work / "mosquitto").start()
        sub = subprocess.Popen([sys.executable, "-c", SUBSCRIBER, str(broker.port), str(args.n), "600"],
                               stdout=subprocess.PIPE, text=True)
        try:
            assert sub.stdout is not None
            assert sub.stdout.readline().strip() == "ready"
            counters = Counters()
            settings = UplinkSettings(batch_max_readings=args.batch, inflight=args.inflight,
                                      backfill_rate=args.backfill_rate)
            up = Uplink(db, "bench-gw", MqttSettings.from_url(broker.url), settings, counters, FakeClock())
            producer = None
            if args.live:
                def produce() -> None:
                    store = Store(db, limits=StoreLimits(max_bytes=8 << 30), clock=FakeClock())
                    for chunk in premade:
                        store.add(chunk)
                    store.close()
                producer = threading.Thread(target=produce)
            t0 = time.perf_counter()
            wall0 = time.time()
            up.start()
            if producer is not None:
                producer.start()
                producer.join()
                print(f"producer wrote {args.n} readings in {time.perf_counter() - t0:.2f} s")
            drained = up.wait_drained(600)
            t1 = time.perf_counter()
            up.stop()
            out, _ = sub.communicate(timeout=60)
        finally:
            if sub.poll() is None:
                sub.kill()
            broker.stop()
        got, first, last = out.split()
        snap = counters.snapshot()
        mode = "live (written while sending)" if args.live else "backlog drain"
        print(f"{mode}: {args.n} readings, batch {args.batch}, window {args.inflight}, backfill cap "
              f"{args.backfill_rate:g}/s")
        print(f"uplink: drained={drained} acked={snap['readings_acked']} batches={snap['batches_published']} "
              f"errors={snap['publish_errors']} in {t1 - t0:.2f} s -> {snap['readings_acked'] / (t1 - t0):,.0f} "
              "readings/s")
        print(f"subscriber: {int(got)} readings, first after {float(first) - wall0:.2f} s, "
              f"last after {float(last) - wall0:.2f} s -> {int(got) / (float(last) - wall0):,.0f} readings/s")


if __name__ == "__main__":
    main()
