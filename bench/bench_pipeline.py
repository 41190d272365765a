"""Gateway pipeline benchmark: simulated adverts -> decode/dedup -> SQLite -> Mosquitto QoS1, in one `edge-gw run`.

Prints:
- sustained readings/s (and adverts/s) from the first advert to the last PUBACK, counted by a subscriber;
- peak RSS of the gateway process with 1000 simulated tags.

Run: python bench/bench_pipeline.py [--adverts 1000000] [--tags 1000]
Not a test: figures vary ±50 % on this shared VM (see shared notes); the README records one run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from servers import Mosquitto


class Counter:
    def __init__(self, port: int, prefix: str = "edge-gw") -> None:
        self.readings = 0
        self.keys: set[tuple[str, int]] = set()
        self.first = 0.0
        self.last = 0.0
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-counter")
        self.client.on_message = self.on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(f"{prefix}/+/batch", qos=1)
        self.client.loop_start()

    def on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        batch = json.loads(msg.payload)
        now = time.monotonic()
        with self.lock:
            if not self.first:
                self.first = now
            self.last = now
            for r in batch["readings"]:
                self.keys.add((r["mac"], r["time_ns"]))
            self.readings += len(batch["readings"])

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def vm_hwm_kb(pid: int) -> int:
    """The process's peak resident set (VmHWM) so far, from /proc; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--adverts", type=int, default=1_000_000)
    ap.add_argument("--tags", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=1_000_000.0, help="simulator pacing; high = as fast as possible")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp) / "mosq").start()
        counter = Counter(broker.port)
        time.sleep(0.3)
        db = Path(tmp) / "edge.db"
        cmd = [sys.executable, "-m", "edge.cli", "run", "--gateway-id", "bench", "--mqtt", broker.url, "--db", str(db),
               "--source", "simulate", "--tags", str(args.tags), "--rate", str(args.rate), "--count", str(args.adverts),
               "--assume-synced", "--drain", "600", "--log-level", "warning"]
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        peak_kb = 0
        while proc.poll() is None:
            peak_kb = max(peak_kb, vm_hwm_kb(proc.pid))
            time.sleep(0.05)
        wall = time.monotonic() - t0
        _, stderr = proc.communicate()
        time.sleep(0.5)
        counter.stop()
        broker.stop()
        rss_mb = peak_kb / 1024
        if proc.returncode != 0:
            print(stderr[-3000:])
            raise SystemExit(f"edge-gw run exited {proc.returncode}")
        summary = stderr.strip().splitlines()[-1]
        unique = len(counter.keys)
        print(f"gateway: {summary}")
        print(f"adverts generated          {args.adverts:>12,}")
        print(f"readings received (unique) {unique:>12,}  (all deliveries {counter.readings:,})")
        print(f"wall time (process)        {wall:>12.2f} s")
        print(f"sustained adverts/s        {args.adverts / wall:>12,.0f}")
        print(f"readings/s, whole process  {unique / wall:>12,.0f}   (start-up and the last drain included)")
        steady = counter.last - counter.first
        print(f"sustained readings/s       {unique / steady:>12,.0f}   first to last batch at the subscriber; "
              "target >= 50,000")
        print(f"gateway peak RSS           {rss_mb:>12.1f} MB  ({args.tags} tags; target <= 60 MB)")


if __name__ == "__main__":
    main()
