"""`cloud-ingest run --kafka` against a real Kafka broker and a real InfluxDB: readings in, exactly them stored,
offsets committed after the write, poison records to the DLQ with why in the headers, lag in `status`."""

from __future__ import annotations

import json
import time
from pathlib import Path

from click.testing import CliRunner
from confluent_kafka import Consumer as KConsumer
from kafka_server import Kafka
from kafka_support import (
    DLQ,
    TOPIC,
    assert_exact,
    count,
    create_topics,
    keys,
    metrics,
    produce,
    producer,
    readings,
    start_consumer,
)
from servers import Influxd, free_port
from test_receiver_support import create_db, wait_until

from cloud.cli import cli


def read_dlq(kafka: Kafka, expected: int, timeout: float = 30.0) -> list:
    c = KConsumer({"bootstrap.servers": kafka.bootstrap, "group.id": "dlq-reader", "auto.offset.reset": "earliest"})
    c.subscribe([DLQ])
    got = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < expected and time.monotonic() < deadline:
            got.extend(m for m in c.consume(100, timeout=0.5) if m.error() is None)
        got.extend(m for m in c.consume(100, timeout=1.0) if m.error() is None)  # nothing more may come
    finally:
        c.close()
    return got


def test_readings_and_batches_are_stored_exactly_and_committed_after_the_write(kafka: Kafka, influxd: Influxd,
                                                                               tmp_path: Path) -> None:
    create_topics(kafka, partitions=4)
    url = create_db(influxd)
    first = readings(3000, tags=30)
    second = readings(3000, tags=30, start_ns=first[-1].time_ns + 10**9)
    produce(kafka, first, kind="reading", encoding="json")
    produce(kafka, second, kind="batch", encoding="avro")
    port = free_port()
    consumer = start_consumer(kafka, url, tmp_path / "c1", "consumer-1", metrics_port=port)
    try:
        wait_until(lambda: count(influxd) >= 6000, 60, "6000 points")
        # Committed after the write: every partition's committed offset reaches its high watermark (no lag).
        def caught_up() -> bool:
            parts = consumer.status().get("kafka_partitions", {})
            return len(parts) == 4 and all(p["lag"] == 0 and p["committed"] == p["high"] for p in parts.values())
        wait_until(caught_up, 30, "lag 0 on all 4 partitions")
        status = consumer.status()
        assert status["input"] == "kafka"
        assert status["received_readings"] == 6000
        assert sum(p["high"] for p in status["kafka_partitions"].values()) == 3000 + 30  # records: 3000 + 30 batches
        out = CliRunner().invoke(cli, ["status", "--status-file", str(consumer.status_file)])
        assert out.exit_code == 0, out.output
        assert "kafka:          4 partitions assigned, lag 0 records" in out.output
        assert f"  {TOPIC}/0  committed " in out.output
        samples = metrics(port)
        assert {k: v for k, v in samples.items() if k.startswith("cloud_ingest_kafka_lag_records")} == {
            f'cloud_ingest_kafka_lag_records{{partition="{p}",topic="{TOPIC}"}}': 0.0 for p in range(4)}
        assert samples["cloud_ingest_kafka_records_total"] == 3030
        assert samples["cloud_ingest_kafka_poison_records_total"] == 0
        assert samples['cloud_ingest_kafka_rebalances_total{event="assigned"}'] == 1
    finally:
        assert consumer.stop() == 0, consumer.log.read_text()
    assert_exact(influxd, keys(first) | keys(second))


def test_a_poison_record_goes_to_the_dlq_with_its_reason_and_the_stream_goes_on(kafka: Kafka, influxd: Influxd,
                                                                                 tmp_path: Path) -> None:
    create_topics(kafka, partitions=2)
    url = create_db(influxd)
    before, after = readings(1000, tags=10), readings(1000, tags=10, start_ns=time.time_ns() - 10**12)
    p = producer(kafka)
    produce(kafka, before, p=p)
    poison = [(b"cb:b8:33:4c:00:01", b"{not json", [("content-type", b"application/json"), ("trace", b"t-1")]),
              (b"cb:b8:33:4c:00:02", b'{"measurement": "ruuvi"}', []),
              (b"cb:b8:33:4c:00:03", b"\x00\x01", [("content-type", b"application/avro"), ("record", b"reading")])]
    for key, value, headers in poison:
        p.produce(TOPIC, key=key, value=value, headers=headers)
    assert p.flush(30) == 0
    produce(kafka, after, p=p)
    consumer = start_consumer(kafka, url, tmp_path / "c1", "consumer-1")
    try:
        wait_until(lambda: count(influxd) >= 2000, 60, "2000 points")
        wait_until(lambda: sum(p["lag"] for p in consumer.status().get("kafka_partitions", {}).values()) == 0
                   and len(consumer.status().get("kafka_partitions", {})) == 2, 30, "lag 0")
        assert consumer.status()["dead_letters"] == 3
    finally:
        assert consumer.stop() == 0, consumer.log.read_text()
    assert_exact(influxd, keys(before) | keys(after))
    dead = read_dlq(kafka, 3)
    got = {}
    for m in dead:
        h = dict(m.headers())
        got[m.key()] = (m.value(), h)
    assert set(got) == {key for key, _, _ in poison}
    for key, value, headers in poison:
        v, h = got[key]
        assert v == value  # as it came
        assert {k: h[k] for k, _ in headers} == dict(headers)  # its own headers kept
        assert h["dlq-stage"] == b"parse"
        assert h["dlq-receiver"] == b"consumer-1"
        assert h["dlq-source"].startswith(f"{TOPIC}/".encode())
    assert got[b"cb:b8:33:4c:00:01"][1]["dlq-reason"].startswith(b"malformed JSON")
    assert got[b"cb:b8:33:4c:00:02"][1]["dlq-reason"] == b"reading.time_ns must be an integer, got NoneType"
    assert got[b"cb:b8:33:4c:00:03"][1]["dlq-reason"].startswith(b"malformed Avro")
    assert json.loads(consumer.status_file.read_bytes())["kafka_partitions"] is not None


def test_a_consumer_that_caught_up_writes_at_once_not_after_the_batch_interval(kafka: Kafka, influxd: Influxd,
                                                                              tmp_path: Path) -> None:
    """Read to the end of its partitions, it writes the partial batch it holds: waiting for batch.max_interval
    (here 60 s) would only delay what Kafka already keeps safe."""
    create_topics(kafka, partitions=4)
    url = create_db(influxd)
    port = free_port()
    consumer = start_consumer(kafka, url, tmp_path / "c1", "consumer-1", "batch.max_interval=60", metrics_port=port)
    try:
        wait_until(lambda: len(consumer.status().get("kafka_partitions", {})) == 4, 30, "4 partitions assigned")
        first = readings(700, tags=7)
        second = readings(300, tags=3, start_ns=first[-1].time_ns + 10**9)
        for batch, total in ((first, 700), (second, 1000)):
            produce(kafka, batch, kind="batch", encoding="json")
            t0 = time.monotonic()
            wait_until(lambda n=total: count(influxd) >= n, 10, f"{total} readings written")
            assert time.monotonic() - t0 < 10
        assert_exact(influxd, keys([*first, *second]))
        # Counted once the write returned, a moment after InfluxDB has the points: wait for it, do not race it.
        wait_until(lambda: metrics(port).get('cloud_ingest_batches_total{reason="caught_up"}', 0) >= 2, 5,
                   "both batches counted as closed because the consumer caught up")
    finally:
        assert consumer.stop() == 0, consumer.log.read_text()[-3000:]
