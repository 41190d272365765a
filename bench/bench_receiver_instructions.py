"""Instructions per message of the whole receiver: `cloud-ingest run` under valgrind's callgrind drains Ruuvi Gateway
traffic (QoS 0, one reading per message) from a pre-loaded persistent session into a real influxd.

Deterministic where CPU time on this shared VM is not (docs/benchmarks.md, "Instruction counts instead of CPU
time"): one run per checkout gives a before/after. The count runs from the receiver's status file appearing (before
it connects) to its last write, divided by the messages: connecting and subscribing are included, and small.
Private Mosquitto (the shipped snippet) and influxd on free loopback ports. Needs valgrind. Not a test.

    python bench/bench_receiver_instructions.py                        # this checkout, 20,000 messages
    python bench/bench_receiver_instructions.py --tree /tmp/base       # another checkout's receiver
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "cloud"), str(ROOT / "bench")]

from bench_ingest import ReceiverProcess  # noqa: E402
from servers import Influxd, Mosquitto, callgrind_instructions  # noqa: E402
from test_receiver_support import Publisher, broker_settings, ruuvi_gw_message  # noqa: E402

S = 1_000_000_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose receiver is measured")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        influxd = Influxd(work / "influxd").start()
        broker = Mosquitto(work / "mosquitto", extra=broker_settings()).start()
        try:
            influxd.query('CREATE DATABASE "ruuvigw"', method="POST")
            rx = ReceiverProcess(work, broker.port, f"{influxd.url}/ruuvigw", "instructions",
                                 {"batch.writers": "2", "dedup.max_entries": "1000000"}, args.tree)
            rx.start()  # the session exists now; the broker queues for it
            rx.stop()
            t0 = time.time_ns() // S - 1800
            msgs = [ruuvi_gw_message("C8:25:2D:8E:9C:2C", i % 1000, i // 1000, t0 + i // 1000)
                    for i in range(args.messages)]
            pub = Publisher(broker.port, client_id="pub-instructions")
            pub.publish(msgs, qos=0, timeout=600)
            pub.close()
            env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUD_INGEST_")}
            env["PYTHONPATH"] = str(args.tree)
            argv = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *rx.args]
            with open(rx.log, "ab") as log:
                rx.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=args.tree)
            deadline = time.monotonic() + 1800
            while rx.status() is None:
                if rx.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"receiver did not start: {rx.log.read_text()[-2000:]}")
                time.sleep(0.05)
            first = callgrind_instructions(rx.proc.pid)
            while True:
                st = rx.status() or {}
                if st.get("written", 0) + st.get("duplicates", 0) >= args.messages:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {st.get('written', 0)} of {args.messages} written")
                time.sleep(0.2)
            last = callgrind_instructions(rx.proc.pid)
            print(f"{args.tree}: {args.messages} Ruuvi Gateway messages (QoS 0), {(last - first) / args.messages:,.0f} "
                  f"instructions per message (callgrind, the whole receiver)")
            rx.stop()
        finally:
            broker.stop()
            influxd.stop()


if __name__ == "__main__":
    main()
