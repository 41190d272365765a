"""The bridge's producer and topic check against a real Kafka: a record Kafka refuses for what it is comes back as
refused (the write path dead-letters it) while the others of the same write are acknowledged; missing topics are a
one-line error when the bridge may not create them, and are created when it may."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bridge_support import bridge_process, read_topic
from kafka_server import Kafka
from servers import stop_pid
from test_receiver_support import wait_until

from cloud.kafka.delivery import Delivery
from cloud.kafka.records import Record
from cloud.kafka.topics import ensure_topics


def test_a_record_kafka_refuses_is_returned_and_the_others_are_acknowledged(kafka: Kafka) -> None:
    client = {"bootstrap.servers": kafka.bootstrap}
    assert ensure_topics(client, ["t"], create=True, partitions=1, replication_factor=1) == ["t"]
    assert ensure_topics(client, ["t"], create=True, partitions=1, replication_factor=1) == []  # idempotent
    records = [Record(b"k", b"small-%d" % i, [("n", b"%d" % i)], 1) for i in range(3)]
    records[1] = Record(b"k", b"x" * (2 << 20), [], 1)  # over librdkafka's message.max.bytes (1 MB)

    async def go() -> tuple[list[tuple[int, str]], int, str]:
        d = Delivery(client)
        try:
            refused = await d.deliver("t", records)
            return refused, d.produced, d.state
        finally:
            await d.close()

    refused, produced, state = asyncio.run(go())
    assert [i for i, _ in refused] == [1]
    assert refused[0][1].startswith("Kafka refused the record: MSG_SIZE_TOO_LARGE"), refused
    assert (produced, state) == (2, "ok")
    got = read_topic(kafka.bootstrap, "t", until=2)
    assert [(g.value, g.headers) for g in got] == [(b"small-0", {"n": b"0"}), (b"small-2", {"n": b"2"})]


def test_missing_topics_are_a_one_line_error_unless_the_bridge_may_create_them(kafka: Kafka, tmp_path: Path) -> None:
    log = tmp_path / "bridge.log"
    p = bridge_process("--mqtt", "mqtt://127.0.0.1:9", "--kafka", kafka.bootstrap, "--metrics-port", "0",
                       "--status-file", str(tmp_path / "status.json"), "--set", "kafka.create_topics=false", log=log)
    assert p.wait(60) == 1
    lines = [ln for ln in log.read_text().splitlines() if not ln.startswith("%")]  # librdkafka's own log lines
    assert lines == [f"Error: Kafka topic 'ruuvi.readings', 'ruuvi.dlq' does not exist on {kafka.bootstrap} "
                     "(create it, or set kafka.create_topics = true)"]
    # Allowed to create them, the bridge gets past the topics (and then waits for the MQTT broker, which is away).
    p = bridge_process("--mqtt", "mqtt://127.0.0.1:9", "--kafka", kafka.bootstrap, "--metrics-port", "0",
                       "--status-file", str(tmp_path / "status.json"), "--set", "kafka.partitions=2", log=log)
    try:
        wait_until(lambda: b"created Kafka topic ruuvi.dlq" in log.read_bytes(), 60, "the topics created")
    finally:
        stop_pid(p)
    text = log.read_text()
    assert "created Kafka topic ruuvi.readings (2 partitions, replication factor 1)" in text, text[-2000:]
    assert "created Kafka topic ruuvi.dlq (2 partitions, replication factor 1)" in text
