"""The floor of a Python Kafka -> InfluxDB consumer, for bench_kafka_consume.py `--bare`: what any consumer written
in Python costs on this machine, against which `cloud-ingest run --kafka` (batcher, dedup + journal, dead letters,
ordered commits, status, metrics) is measured.

It does only the unavoidable: confluent-kafka consume, the product's record decoder (cloud.kafka.records, which
validates) and line-protocol encoder (cloud.lineproto), gzip level 1, one HTTP POST per 5000 points on two
threads (as `batch.writers = 2`), an asynchronous commit after each write (by the consuming thread). No dedup,
no dead letters, no ordering of commits across the two writers (it may commit past an unwritten batch: not safe,
fine for a floor).

    python bench/kafka_bare_consumer.py BOOTSTRAP TOPIC GROUP INFLUX_URL/DB STATUS_FILE [INDEX COUNT]

With INDEX and COUNT it takes partitions INDEX, INDEX+COUNT, ... itself (no group rebalance, which its unordered
commits could not survive), so that several of them split a topic.
"""

from __future__ import annotations

import gc
import gzip
import http.client
import json
import os
import queue
import sys
import threading
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from cloud.kafka.records import Codec
from cloud.lineproto import Encoder
from cloud.model import Point

BATCH = 5000


def main() -> None:
    bootstrap, topic, group, url, status = sys.argv[1:6]
    index, count = (int(sys.argv[6]), int(sys.argv[7])) if len(sys.argv) > 7 else (0, 1)
    gc.set_threshold(50_000)  # as `cloud-ingest run` does
    gc.freeze()
    u = urllib.parse.urlsplit(url)
    path = "/write?" + urllib.parse.urlencode({"db": u.path.strip("/"), "precision": "ns"})
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})
    partitions = sorted(consumer.list_topics(topic, timeout=30).topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions[index::count]])
    codec, encoder = Codec("json"), Encoder()
    work: queue.Queue[tuple[list[Point], list[TopicPartition]] | None] = queue.Queue(maxsize=2)
    done: queue.Queue[list[TopicPartition]] = queue.Queue()
    written = 0
    lock = threading.Lock()

    def writer() -> None:
        nonlocal written
        conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port or 8086, timeout=60)
        while (item := work.get()) is not None:
            points, offsets = item
            body = gzip.compress(encoder.encode(points), compresslevel=1)
            conn.request("POST", path, body, {"Content-Encoding": "gzip"})
            resp = conn.getresponse()
            resp.read()
            if resp.status != 204:
                raise SystemExit(f"HTTP {resp.status}")
            done.put(offsets)  # committed by the consuming thread: commit() from another thread can block
            with lock:
                written += len(points)
                tmp = status + ".tmp"
                Path(tmp).write_text(json.dumps({"written": written}))
                os.replace(tmp, status)

    threads = [threading.Thread(target=writer, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    points: list[Point] = []
    next_offsets: dict[tuple[str, int], int] = {}
    while True:
        while not done.empty():
            consumer.commit(offsets=done.get(), asynchronous=True)
        records = consumer.consume(num_messages=1000, timeout=0.1)
        if not records and points:  # the end of what is there: write the rest
            work.put((points, [TopicPartition(t, p, o) for (t, p), o in next_offsets.items()]))
            points, next_offsets = [], {}
        for rec in records:
            if rec.error() is not None:
                continue
            points.extend(codec.decode(rec.value(), rec.headers()))
            next_offsets[(rec.topic(), rec.partition())] = rec.offset() + 1
            if len(points) >= BATCH:
                work.put((points, [TopicPartition(t, p, o) for (t, p), o in next_offsets.items()]))
                points, next_offsets = [], {}


if __name__ == "__main__":
    main()
