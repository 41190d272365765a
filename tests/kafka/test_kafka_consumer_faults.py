"""`run --kafka` through faults, with a real Kafka broker, real InfluxDB and real consumer processes: a broker
restart mid-stream, a consumer SIGKILLed mid-batch, a second consumer joining and the first leaving mid-stream, and
InfluxDB down and back. Each ends with exactly the produced readings stored: 0 lost, 0 duplicate points."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from kafka_server import Kafka
from kafka_support import (
    Consumer,
    assert_exact,
    count,
    create_topics,
    keys,
    produce,
    producer,
    readings,
    start_consumer,
)
from servers import Influxd
from test_receiver_support import create_db, wait_until

from cloud.model import Point


class Stream(threading.Thread):
    """Produces the readings in chunks, `rate` readings a second, through broker faults (an idempotent producer
    keeps the records queued while the broker is away). `gates`: before the reading at that index, wait for the
    event, so that a step of the test surely lands mid-stream however slow the machine is."""

    def __init__(self, kafka: Kafka, points: list[Point], rate: float, chunk: int = 500,
                 gates: dict[int, threading.Event] | None = None) -> None:
        super().__init__(name="stream", daemon=True)
        self.kafka, self.points, self.rate, self.chunk = kafka, points, rate, chunk
        self.gates = gates or {}
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            p = producer(self.kafka)
            t0 = time.monotonic()
            for i in range(0, len(self.points), self.chunk):
                gate = self.gates.get(i)
                if gate is not None:
                    assert gate.wait(120), f"gate at {i} not opened"
                    t0 = time.monotonic() - self.sent / self.rate
                produce(self.kafka, self.points[i:i + self.chunk], p=p)
                self.sent = i + self.chunk
                time.sleep(max(0.0, t0 + self.sent / self.rate - time.monotonic()))
        except BaseException as e:  # handed to the test
            self.error = e

    def finish(self, timeout: float = 120.0) -> None:
        self.join(timeout)
        assert not self.is_alive(), "the producer did not finish"
        assert self.error is None, self.error


def wait_drained(influxd: Influxd, points: list[Point], consumer: Consumer) -> None:
    """Every point stored and every offset committed (lag 0 on all 4 partitions, all owned by `consumer`)."""
    wait_until(lambda: count(influxd) >= len(points), 60, "every point")
    wait_until(lambda: lag_zero([consumer], 4), 30, "every offset committed")
    assert consumer.proc.poll() is None


def lag_zero(consumers: list[Consumer], partitions: int) -> bool:
    parts: dict[str, int] = {}
    for c in consumers:
        if c.proc.poll() is None:
            parts.update({k: v["lag"] for k, v in c.status().get("kafka_partitions", {}).items()})
    return len(parts) == partitions and all(v == 0 for v in parts.values())


def test_a_broker_restart_mid_stream_loses_and_duplicates_nothing(kafka: Kafka, influxd: Influxd,
                                                                  tmp_path: Path) -> None:
    create_topics(kafka, partitions=4)
    url = create_db(influxd)
    points = readings(20_000, tags=40)
    consumer = start_consumer(kafka, url, tmp_path / "c1", "consumer-1")
    stream = Stream(kafka, points, rate=4000)
    stream.start()
    try:
        wait_until(lambda: count(influxd) >= 4000, 60, "4000 points before the restart")
        kafka.restart()
        stream.finish()
        wait_drained(influxd, points, consumer)
    finally:
        assert consumer.stop() == 0, consumer.log.read_text()[-3000:]
    assert_exact(influxd, keys(points))


def test_a_consumer_sigkilled_mid_batch_loses_and_duplicates_nothing(kafka: Kafka, influxd: Influxd,
                                                                     tmp_path: Path) -> None:
    create_topics(kafka, partitions=4)
    url = create_db(influxd)
    points = readings(30_000, tags=60)
    produce(kafka, points)
    # Small batches: the kill lands with batches being written, others queued and offsets partly committed.
    first = start_consumer(kafka, url, tmp_path / "c1", "consumer-1", "batch.max_points=500")
    wait_until(lambda: count(influxd) >= 6000, 60, "6000 points before the kill")
    first.kill()
    written_at_kill = count(influxd)
    assert 6000 <= written_at_kill < len(points)
    second = start_consumer(kafka, url, tmp_path / "c2", "consumer-2")
    try:
        wait_drained(influxd, points, second)
        # It started from the first one's commits, not from the beginning.
        assert second.status()["received_readings"] < len(points)
    finally:
        assert second.stop() == 0, second.log.read_text()[-3000:]
    assert_exact(influxd, keys(points))


def test_two_consumers_rebalance_mid_stream_one_joining_then_one_leaving(kafka: Kafka, influxd: Influxd,
                                                                         tmp_path: Path) -> None:
    create_topics(kafka, partitions=4)
    url = create_db(influxd)
    points = readings(24_000, tags=40)
    joined, leaving = threading.Event(), threading.Event()
    first = start_consumer(kafka, url, tmp_path / "c1", "consumer-1")
    # A third of the stream before the join, a third between, a third while the first leaves.
    stream = Stream(kafka, points, rate=3000, gates={8000: joined, 16_000: leaving})
    stream.start()
    second: Consumer | None = None
    try:
        wait_until(lambda: count(influxd) >= 3000, 60, "3000 points before the second consumer")
        second = start_consumer(kafka, url, tmp_path / "c2", "consumer-2")
        # Both own partitions: the group split them.
        wait_until(lambda: len(first.status().get("kafka_partitions", {})) == 2
                   and len(second.status().get("kafka_partitions", {})) == 2, 30, "2 + 2 partitions")
        # Cooperative assignment (kafka.assignment): the first gave up only the two partitions that moved, and
        # kept consuming the other two through the rebalance.
        revoked = [ln for ln in first.log.read_text().splitlines() if "kafka: revoked" in ln]
        assert len(revoked) == 1 and revoked[0].count("ruuvi.readings/") == 2, revoked
        joined.set()
        wait_until(lambda: second.status().get("written", 0) >= 2000, 60, "2000 points written by the second")
        leaving.set()
        assert first.stop() == 0, first.log.read_text()[-3000:]  # leaves: the second takes all four
        stream.finish()
        wait_drained(influxd, points, second)
        # The status file is written every status.interval: the one that showed lag 0 may predate the last fetch.
        received = first.status()["received_readings"]
        wait_until(lambda: received + second.status()["received_readings"] >= len(points), 10,
                   "every reading counted as received by one of the two")
    finally:
        first.stop()
        if second is not None:
            assert second.stop() == 0, second.log.read_text()[-3000:]
    assert_exact(influxd, keys(points))


def test_influxdb_down_then_back_loses_and_duplicates_nothing(kafka: Kafka, influxd: Influxd,
                                                              tmp_path: Path) -> None:
    create_topics(kafka, partitions=4)
    url = create_db(influxd)
    points = readings(20_000, tags=40)
    # A small queue (2 batches of 500, so at most 2500 records in hand): the outage fills it and pauses the
    # partitions, which must then resume where they stopped.
    consumer = start_consumer(kafka, url, tmp_path / "c1", "consumer-1", "batch.max_points=500",
                              "batch.queue_batches=2", "log.level=debug")
    stream = Stream(kafka, points, rate=4000)
    stream.start()
    try:
        wait_until(lambda: count(influxd) >= 3000, 60, "3000 points before the outage")
        influxd.stop()
        wait_until(lambda: "kafka: paused" in consumer.log.read_text(), 20, "the partitions paused")
        assert consumer.status()["sink_state"] == "retrying"
        # The cap is 2500 records (batch.max_points x (queue_batches + writers (2 by default) + 1)), plus up to two
        # fetches of 1000 that the poll thread had handed over before the queue filled.
        assert consumer.status()["inflight_messages"] <= 500 * (2 + 2 + 1) + 2 * 1000
        influxd.start()
        stream.finish()
        wait_drained(influxd, points, consumer)
    finally:
        assert consumer.stop() == 0, consumer.log.read_text()[-3000:]
    assert_exact(influxd, keys(points))
