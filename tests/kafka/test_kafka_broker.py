"""The real Kafka broker of tests/kafka_server.py with the client the Kafka path will use (confluent-kafka): it runs,
keeps what it acknowledged across a clean restart and a SIGKILL, and an idempotent keyed producer plus a consumer
group that commits after processing lose nothing through either."""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka_server import Kafka

TOPIC = "ruuvi.readings"


def create_topic(kafka: Kafka, name: str = TOPIC, partitions: int = 3) -> None:
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    for future in admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)]).values():
        future.result(timeout=30)


def producer(kafka: Kafka) -> Producer:
    return Producer({
        "bootstrap.servers": kafka.bootstrap,
        "enable.idempotence": True,  # implies acks=all and retries; said twice so a change of default shows here
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": 120_000,  # outlives a broker restart: records wait in librdkafka's queue meanwhile
    })


def consumer(kafka: Kafka, group: str) -> Consumer:
    return Consumer({
        "bootstrap.servers": kafka.bootstrap,
        "group.id": group,
        "enable.auto.commit": False,  # offsets are committed only after the records are processed
        "auto.offset.reset": "earliest",
    })


def read_all(kafka: Kafka, expected: int, group: str = "reader", timeout: float = 60.0) -> list[Message]:
    c = consumer(kafka, group)
    c.subscribe([TOPIC])
    got: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < expected and time.monotonic() < deadline:
            for m in c.consume(num_messages=1000, timeout=0.5):
                assert m.error() is None, m.error()
                got.append(m)
        # A little longer: a duplicate written by the producer would arrive after the expected count.
        for m in c.consume(num_messages=1000, timeout=1.0):
            got.append(m)
    finally:
        c.close()
    return got


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_the_broker_keeps_acknowledged_records_across_stop_and_sigkill(kafka: Kafka) -> None:
    assert kafka.started_in < 30
    create_topic(kafka, partitions=1)
    p = producer(kafka)
    for i in range(100):
        p.produce(TOPIC, key=b"k", value=b"%d" % i)
    assert p.flush(30) == 0

    pid = kafka.proc.pid  # type: ignore[union-attr]
    kafka.stop()  # SIGTERM: a controlled shutdown
    assert gone(pid)
    kafka.start()  # the same data folder, cluster id and ports
    for i in range(100, 200):
        p.produce(TOPIC, key=b"k", value=b"%d" % i)
    assert p.flush(60) == 0

    pid = kafka.proc.pid  # type: ignore[union-attr]
    kafka.kill()  # SIGKILL: a crash; what was acknowledged is in the page cache, which the process's death keeps
    assert gone(pid)
    kafka.start()
    values = [m.value() for m in read_all(kafka, 200)]
    assert values == [b"%d" % i for i in range(200)]
    assert "Kafka Server started" in kafka.log.read_text()
    assert "SLF4J: Defaulting to no-operation" not in kafka.log.read_text()  # the log4j2 binding is on the classpath


def test_kafka_needs_the_installed_jars(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"run `make install`"):
        Kafka(tmp_path / "k", jars=tmp_path / "no-jars").start()


def test_10k_keyed_records_survive_a_restart_and_a_sigkill_on_both_sides(kafka: Kafka) -> None:
    n, keys = 10_000, 50
    create_topic(kafka)
    p = producer(kafka)
    delivered: list[tuple[int, int, int]] = []  # (value, partition, offset) as the broker acknowledged them
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(err)
        else:
            delivered.append((int(msg.value()), msg.partition(), msg.offset()))

    def produce(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            p.produce(TOPIC, key=b"tag-%02d" % (i % keys), value=b"%d" % i, on_delivery=on_delivery)
            p.poll(0)

    # Producing: a clean restart and a crash, each while records are in flight, and records queued while it is down.
    produce(0, 2_500)
    kafka.restart()
    produce(2_500, 5_000)
    kafka.kill()
    produce(5_000, 7_500)
    kafka.start()
    produce(7_500, n)
    assert p.flush(120) == 0
    assert errors == []
    assert sorted(v for v, _, _ in delivered) == list(range(n))  # each acknowledged once
    assert len({(part, off) for _, part, off in delivered}) == n  # at n distinct places in the log

    # Consuming in a group that commits each batch after processing it; the broker restarts, then is killed between
    # the processing of a batch and its commit, and comes back.
    c = consumer(kafka, "writers")
    c.subscribe([TOPIC])
    seen: list[tuple[int, int]] = []  # (value, partition) in the order processed
    uncommitted_at_kill: set[int] = set()
    restarted = killed = False
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            batch = c.consume(num_messages=500, timeout=0.5)
            records = [m for m in batch if m.error() is None]
            if not records:
                if len({v for v, _ in seen}) == n:
                    break
                continue
            seen.extend((int(m.value()), m.partition()) for m in records)  # processing
            if not restarted and len(seen) >= 3_000:
                kafka.restart()
                restarted = True
            elif not killed and len(seen) >= 6_000:
                kafka.kill()
                uncommitted_at_kill = {int(m.value()) for m in records}
                kafka.start()
                killed = True
            offsets: dict[int, int] = {}
            for m in records:
                offsets[m.partition()] = max(offsets.get(m.partition(), -1), m.offset() + 1)
            commit_until = time.monotonic() + 60
            while True:  # a commit refused while the coordinator comes back is tried again, never skipped
                try:
                    c.commit(offsets=[TopicPartition(TOPIC, part, off) for part, off in offsets.items()],
                             asynchronous=False)
                    break
                except KafkaException:
                    if time.monotonic() > commit_until:
                        raise
                    time.sleep(0.2)
    finally:
        c.close()
    assert restarted and killed

    counts = Counter(v for v, _ in seen)
    assert set(counts) == set(range(n))  # nothing lost
    duplicates = {v for v, k in counts.items() if k > 1}
    # At-least-once: a duplicate can only be a record whose commit the crash interrupted.
    assert duplicates <= uncommitted_at_kill, sorted(duplicates - uncommitted_at_kill)[:10]
    print(f"consumer duplicates after the SIGKILL: {len(duplicates)} of a {len(uncommitted_at_kill)}-record batch")

    # Each key keeps its order: its records are in one partition, in the order produced.
    by_key: dict[int, list[int]] = {}
    first_seen: dict[int, None] = {}
    for v, _ in seen:
        first_seen.setdefault(v)
    for v in first_seen:
        by_key.setdefault(v % keys, []).append(v)
    assert all(vs == sorted(vs) for vs in by_key.values())
    assert all(len({part for v, part in seen if v % keys == k}) == 1 for k in range(keys))
