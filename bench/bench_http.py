"""Ruuvi Gateway HTTP POST ingest, in one run on one machine: InfluxDB's raw /write ceiling, then the real
`cloud-ingest run` taking Ruuvi Gateway HTTP bodies from concurrent clients (keep-alive connections, Basic auth,
each answer waited for as a gateway does), as requests/s and readings/s, and readings/s as a ratio of the ceiling.

Each client is one gateway posting bodies of `--tags` tag entries (one reading each, all distinct), pre-encoded
before the clock starts. A 503 (queue full) is retried after a short pause, as the gateway would on its next post;
the count of those is printed. Every reading is checked into InfluxDB by count at the end.

    python bench/bench_http.py                                  # 8 gateways x 100 tags, 200k readings
    python bench/bench_http.py --gateways 16 --tags 20 --readings 100000
"""

from __future__ import annotations

import argparse
import base64
import http.client
import os
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "cloud"), str(ROOT / "bench")]

import orjson  # noqa: E402
from bench_influx_ceiling import influx_ceiling  # noqa: E402
from bench_ingest import ReceiverProcess  # noqa: E402
from servers import Influxd, Mosquitto, free_port  # noqa: E402
from test_receiver_support import broker_settings, df5_payload, mac_bytes, mac_text  # noqa: E402

S = 1_000_000_000
USER, PASSWORD = "bench", "bench-password"


def bodies_for(gateway: int, tags: int, n_bodies: int, t0_s: int) -> list[bytes]:
    """n_bodies Ruuvi Gateway HTTP bodies of one gateway; tag t of body b has sequence number b (all distinct)."""
    gw_mac = ":".join(f"{b:02X}" for b in bytes([0xC8, 0x25, 0x2D, 0, 0, gateway]))
    adverts = {}
    out = []
    for b in range(n_bodies):
        entries = {}
        for t in range(tags):
            tag = gateway * 1000 + t
            payload = df5_payload(b % 65536, mac_bytes(tag), temp_c=20 + t / 100)
            adverts[t] = (bytes([0x02, 0x01, 0x06, len(payload) + 3, 0xFF, 0x99, 0x04]) + payload).hex().upper()
            entries[mac_text(tag).upper()] = {"rssi": -60 - t % 30, "timestamp": str(t0_s + b), "data": adverts[t]}
        out.append(orjson.dumps({"data": {"coordinates": "", "timestamp": str(t0_s + b), "nonce": str(b),
                                          "gw_mac": gw_mac, "tags": entries}}))
    return out


def run_clients(port: int, per_gateway: list[list[bytes]]) -> tuple[float, int, int]:
    """Post every body (each client in order, waiting for each answer); (seconds, requests answered 200, 503s)."""
    auth = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    headers = {"Content-Type": "application/json", "Authorization": auth}
    ok = [0]
    busy = [0]
    errors: list[str] = []
    lock = threading.Lock()

    def client(bodies: list[bytes]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for body in bodies:
            while True:
                conn.request("POST", "/ruuvi", body, headers)
                r = conn.getresponse()
                text = r.read()
                if r.status == 200:
                    with lock:
                        ok[0] += 1
                    break
                if r.status == 503:
                    with lock:
                        busy[0] += 1
                    time.sleep(0.05)
                    continue
                with lock:
                    errors.append(f"HTTP {r.status}: {text[:200]!r}")
                return
        conn.close()

    threads = [threading.Thread(target=client, args=(b,)) for b in per_gateway]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"HTTP run failed: {errors[0]}")
    return elapsed, ok[0], busy[0]


def count_points(influxd: Influxd, db: str) -> int:
    q = urllib.parse.urlencode({"db": db, "q": 'SELECT count("rssi") FROM "ruuvi"'})
    with urllib.request.urlopen(f"{influxd.url}/query?{q}", timeout=30) as r:
        res = orjson.loads(r.read())
    series = res["results"][0].get("series")
    return int(series[0]["values"][0][1]) if series else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ceiling-points", type=int, default=200_000)
    ap.add_argument("--readings", type=int, default=200_000, help="readings in all (gateways x tags x bodies)")
    ap.add_argument("--gateways", type=int, default=8, help="concurrent clients, one connection each")
    ap.add_argument("--tags", type=int, default=100, help="tag entries per body")
    ap.add_argument("--writers", type=int, default=1, help="receiver batch.writers")
    args = ap.parse_args()

    n_bodies = max(1, args.readings // (args.gateways * args.tags))
    readings = n_bodies * args.gateways * args.tags
    t0_s = time.time_ns() // S - 3600
    per_gateway = [bodies_for(g, args.tags, n_bodies, t0_s) for g in range(args.gateways)]
    body_bytes = len(per_gateway[0][0])

    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        influxd = Influxd(work / "influxd").start()
        broker = Mosquitto(work / "mosquitto", extra=broker_settings()).start()
        rx: ReceiverProcess | None = None
        try:
            influxd.query('CREATE DATABASE "http"', method="POST")
            ceiling = influx_ceiling(f"{influxd.url}/ceiling", points=args.ceiling_points)
            print(f"InfluxDB raw /write ceiling (pre-encoded 5000-point gzip batches, 1 writer): "
                  f"{ceiling:,.0f} points/s")

            pw = work / "http.pw"
            pw.write_text(PASSWORD)
            os.chmod(pw, 0o600)
            port = free_port()
            rx = ReceiverProcess(work, broker.port, f"{influxd.url}/http", "http", {
                "batch.writers": str(args.writers), "dedup.max_entries": "1000000",
                "http.listen": f"127.0.0.1:{port}", "http.user": USER, "http.password_file": str(pw),
            }).start()
            elapsed, ok, busy = run_clients(port, per_gateway)
            rps, rate = ok / elapsed, readings / elapsed
            stored = count_points(influxd, "http")
            if stored != readings:
                raise RuntimeError(f"stored {stored} of {readings} readings")
            print(f"cloud-ingest HTTP: {args.gateways} gateways x {n_bodies} bodies of {args.tags} tags "
                  f"({body_bytes} bytes each), {ok} requests in {elapsed:.1f} s: {rps:,.0f} requests/s, "
                  f"{rate:,.0f} readings/s = {rate / ceiling:.0%} of the ceiling "
                  f"({busy} answers 503 retried; {stored} points stored = every reading once)")

            # The machine is shared and noisy: measure the ceiling again and compare with the higher of the two.
            again = influx_ceiling(f"{influxd.url}/ceiling2", points=args.ceiling_points)
            best = max(ceiling, again)
            print(f"InfluxDB raw /write ceiling, measured again: {again:,.0f} points/s; against the higher one "
                  f"the HTTP input reaches {rate / best:.0%}")
        finally:
            if rx is not None:
                rx.stop()
            broker.stop()
            influxd.stop()


if __name__ == "__main__":
    main()
