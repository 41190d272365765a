"""confluent-kafka against a private single-node Kafka 4.x broker (tests/kafka_server.py): how fast small keyed records
go in (idempotent producer, acks=all) and come out (one consumer in a group, offsets committed per batch).

The records are about the size of one reading as JSON (about 110 bytes), keyed by one of 1000 tag MACs. The produce
clock runs from the first produce() to the end of flush(): every record acknowledged. The consume clock starts at the
first record received (the group join before it is reported apart) and stops when all have been processed and their
offsets committed.

    python bench/bench_kafka_client.py                 # 200,000 records, 3 partitions
    python bench/bench_kafka_client.py --records 1000000 --partitions 6
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka_server import Kafka


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--linger-ms", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1000, help="records per consume() call and per commit")
    args = ap.parse_args()
    n = args.records

    with tempfile.TemporaryDirectory() as tmp:
        kafka = Kafka(Path(tmp) / "kafka", heap="512m").start()
        try:
            print(f"broker started in {kafka.started_in:.2f} s")
            admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
            for f in admin.create_topics([NewTopic("bench", num_partitions=args.partitions,
                                                   replication_factor=1)]).values():
                f.result(30)
            macs = [f"cb:b8:33:4c:{i // 256:02x}:{i % 256:02x}".encode() for i in range(1000)]
            values = [
                (b'{"mac":"%s","t":%d,"temperature":21.37,"humidity":45.2,"pressure":100812,"battery":2.95}'
                 % (macs[i % 1000], 1_700_000_000_000 + i))
                for i in range(n)
            ]
            size = sum(len(v) for v in values) / n
            p = Producer({"bootstrap.servers": kafka.bootstrap, "enable.idempotence": True, "acks": "all",
                          "linger.ms": args.linger_ms})
            p.list_topics(timeout=10)  # the connection and metadata before the clock
            began = time.perf_counter()
            for i in range(n):
                while True:
                    try:
                        p.produce("bench", key=macs[i % 1000], value=values[i])
                        break
                    except BufferError:  # the local queue is full: serve delivery reports, then go on
                        p.poll(0.01)
                p.poll(0)
            assert p.flush(120) == 0
            produce_s = time.perf_counter() - began
            print(f"produce: {n} records of {size:.0f} B in {produce_s:.2f} s = {n / produce_s:,.0f} records/s "
                  f"(idempotent, acks=all, linger.ms={args.linger_ms}, {args.partitions} partitions)")

            c = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": "bench", "enable.auto.commit": False,
                          "auto.offset.reset": "earliest"})
            c.subscribe(["bench"])
            joined = time.perf_counter()
            got, first = 0, 0.0
            while got < n:
                batch = c.consume(num_messages=args.batch, timeout=1.0)
                records = [m for m in batch if m.error() is None]
                if not records:
                    continue
                if not first:
                    first = time.perf_counter()
                got += len(records)
                c.commit(asynchronous=False)
            consume_s = time.perf_counter() - first
            c.close()
            print(f"consume: group join + first fetch {first - joined:.2f} s, then {got} records in {consume_s:.2f} s"
                  f" = {got / consume_s:,.0f} records/s (synchronous commit every {args.batch})")
            status = Path(f"/proc/{kafka.proc.pid}/status").read_text()  # type: ignore[union-attr]
            rss = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
            print(f"broker RSS after the run: {int(rss) // 1024} MiB (heap -Xmx512m)")
        finally:
            kafka.stop()


if __name__ == "__main__":
    main()
