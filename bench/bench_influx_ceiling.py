"""InfluxDB's raw /write ceiling: pre-encoded 5000-point batches posted as fast as the server takes them.

The receiver benchmark imports `influx_ceiling()` and runs it in the same run as its own MQTT -> InfluxDB figure,
so that the ratio compares like with like on the same (noisy, shared) machine. Points are shaped like the ones the
receiver writes from edge-format batches (DF5: 10 decoded fields + rssi, tags mac/gateway/data_format, 1000 series),
encoded by cloud.lineproto before the clock starts; only HTTP + influxd are timed.

    python bench/bench_influx_ceiling.py                      # starts a private influxd
    python bench/bench_influx_ceiling.py --influx http://127.0.0.1:8086/bench --points 500000 --writers 2
"""

from __future__ import annotations

import argparse
import base64
import gzip as gzip_mod
import http.client
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cloud.lineproto import Encoder
from cloud.model import Point


def make_points(n: int, start_ns: int, series: int = 1000) -> list[Point]:
    """n DF5-like points over `series` series (10 gateways x series/10 tags), 1 ms apart per series."""
    per_gw = max(1, series // 10)
    out = []
    for i in range(n):
        s = i % series
        out.append(
            Point(
                "ruuvi",
                {
                    "mac": f"cb:b8:33:4c:{s // 256:02x}:{s % 256:02x}",
                    "gateway": f"gw-{s // per_gw}",
                    "data_format": "5",
                },
                {
                    "temperature": 20.0 + (i % 997) / 100,
                    "humidity": 40.0 + (i % 601) / 50,
                    "pressure": 100000.0 + i % 500,
                    "acceleration_x": 4,
                    "acceleration_y": -4,
                    "acceleration_z": 1036,
                    "battery_voltage": 2977,
                    "tx_power": 4,
                    "movement_counter": 66,
                    "measurement_sequence_number": i % 65536,
                    "rssi": -60 - i % 30,
                },
                start_ns + (i // series) * 1_000_000,
            )
        )
    return out


def encode_batches(points: list[Point], batch: int, gzip: bool) -> list[bytes]:
    enc = Encoder()
    bodies = [enc.encode(points[i : i + batch]) for i in range(0, len(points), batch)]
    return [gzip_mod.compress(b, compresslevel=1) for b in bodies] if gzip else bodies


def _query(url: urllib.parse.SplitResult, q: str) -> None:
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 8086, timeout=30)
    conn.request("POST", "/query", urllib.parse.urlencode({"q": q}), _headers(url, form=True))
    r = conn.getresponse()
    r.read()
    conn.close()
    if r.status != 200:
        raise RuntimeError(f"{q}: HTTP {r.status}")


def _headers(url: urllib.parse.SplitResult, *, gzip: bool = False, form: bool = False) -> dict[str, str]:
    h = {"Content-Type": "application/x-www-form-urlencoded" if form else "text/plain; charset=utf-8"}
    if gzip:
        h["Content-Encoding"] = "gzip"
    if url.username:
        cred = f"{urllib.parse.unquote(url.username)}:{urllib.parse.unquote(url.password or '')}"
        h["Authorization"] = "Basic " + base64.b64encode(cred.encode()).decode()
    return h


def influx_ceiling(
    url: str,
    *,
    points: int = 200_000,
    batch: int = 5000,
    writers: int = 1,
    gzip: bool = True,
    start_ns: int | None = None,
    create_db: bool = True,
) -> float:
    """Points/s that influxd at `url` (http://[user:pass@]host:port/<db>[?rp=]) accepts for pre-encoded batches.

    `gzip` pre-compresses the bodies (as the sink sends them; the compression is not timed). The timestamps start
    at `start_ns` (default: now minus one hour, inside any retention policy) and are unique per series.
    """
    u = urllib.parse.urlsplit(url)
    db = u.path.strip("/")
    rp = urllib.parse.parse_qs(u.query).get("rp", [None])[0]
    if create_db:
        _query(u, f'CREATE DATABASE "{db}"')
    t0 = start_ns if start_ns is not None else time.time_ns() - 3600 * 10**9
    bodies = encode_batches(make_points(points, t0), batch, gzip)
    params = {"db": db, "precision": "ns", **({"rp": rp} if rp else {})}
    path = "/write?" + urllib.parse.urlencode(params)
    headers = _headers(u, gzip=gzip)
    errors: list[str] = []
    lock = threading.Lock()
    queue = list(range(len(bodies)))

    def work() -> None:
        conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port or 8086, timeout=60)
        while True:
            with lock:
                if not queue or errors:
                    break
                i = queue.pop()
            conn.request("POST", path, bodies[i], headers)
            r = conn.getresponse()
            text = r.read()
            if r.status != 204:
                with lock:
                    errors.append(f"HTTP {r.status}: {text[:200]!r}")
        conn.close()

    threads = [threading.Thread(target=work) for _ in range(writers)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"ceiling run failed: {errors[0]}")
    return points / elapsed


def sink_throughput(url: str, *, points: int = 200_000, batch: int = 5000, concurrency: int = 1) -> float:
    """Points/s through cloud.sinks.base (encode + gzip + HTTP in a worker thread), `concurrency` batches in flight."""
    import asyncio

    from cloud.sinks import open_sink

    pts = make_points(points, time.time_ns() - 2 * 3600 * 10**9)
    batches = [pts[i : i + batch] for i in range(0, len(pts), batch)]

    async def run() -> float:
        sinks = [open_sink(url) for _ in range(concurrency)]
        start = time.perf_counter()

        async def one(k: int) -> None:
            for b in batches[k::concurrency]:
                out = await sinks[k].write(b)
                if out.rejected:
                    raise RuntimeError(out.rejected[0][1])

        await asyncio.gather(*(one(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - start
        for s in sinks:
            await s.close()
        return points / elapsed

    return asyncio.run(run())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--influx", help="InfluxDB 1.x URL with a database; default: start a private influxd")
    ap.add_argument("--points", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--writers", type=int, default=1)
    ap.add_argument("--no-gzip", action="store_true")
    ap.add_argument("--sink", action="store_true", help="also time cloud.sinks.base on the same server, for comparison")
    args = ap.parse_args()
    kw = {"points": args.points, "batch": args.batch, "writers": args.writers, "gzip": not args.no_gzip}
    sink_rate = None
    if args.influx:
        rate = influx_ceiling(args.influx, **kw)
        if args.sink:
            sink_rate = sink_throughput(args.influx, points=args.points, batch=args.batch, concurrency=args.writers)
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from servers import Influxd

        with tempfile.TemporaryDirectory() as d:
            db = Influxd(Path(d) / "influxd").start()
            try:
                rate = influx_ceiling(f"{db.url}/bench", **kw)
                if args.sink:
                    sink_rate = sink_throughput(
                        f"{db.url}/bench", points=args.points, batch=args.batch, concurrency=args.writers
                    )
            finally:
                db.stop()
    print(
        f"influx /write ceiling: {rate:,.0f} points/s "
        f"({args.points} points, batches of {args.batch}, {args.writers} writer(s), gzip={not args.no_gzip})"
    )
    if sink_rate is not None:
        print(f"cloud.sinks.base:           {sink_rate:,.0f} points/s ({sink_rate / rate:.0%} of the ceiling)")


if __name__ == "__main__":
    main()
