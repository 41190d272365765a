"""The Kafka parts of `make demo KAFKA=1` (scripts/demo.py) against the real broker: the topics it makes, and the
consumer lag it shows. The bridge and the consumer it runs are issue 11's, not yet on this branch: until they exist,
`demo.py --kafka` stops at once, says why, and leaves nothing running."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from kafka_server import Kafka

REPO = Path(__file__).resolve().parents[2]


def demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo", REPO / "scripts" / "demo.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_demo_makes_the_topics_and_shows_the_consumer_lag(kafka: Kafka) -> None:
    d = demo()
    d.create_topics(kafka.bootstrap)
    d.create_topics(kafka.bootstrap)  # the second time finds them and changes nothing
    topics = AdminClient({"bootstrap.servers": kafka.bootstrap}).list_topics(timeout=30).topics
    assert len(topics[d.KAFKA_TOPIC].partitions) == d.KAFKA_PARTITIONS
    assert len(topics[d.KAFKA_DLQ].partitions) == 1

    # Before the group has committed anything, everything produced is lag.
    prod = Producer({"bootstrap.servers": kafka.bootstrap, "acks": "all"})
    for n in range(60):
        prod.produce(d.KAFKA_TOPIC, value=b"x", partition=n % 3)
    assert prod.flush(30) == 0
    before = d.kafka_lag(kafka.bootstrap)
    assert before.endswith("total lag: 60 records"), before
    assert before.splitlines()[1].split() == ["0", "-", "20", "20"]

    # The group commits 15 of partition 0's 20 and all of partition 1's: 5 + 0 + 20 left.
    group = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": d.KAFKA_GROUP, "enable.auto.commit": False})
    group.commit(offsets=[TopicPartition(d.KAFKA_TOPIC, 0, 15), TopicPartition(d.KAFKA_TOPIC, 1, 20)],
                 asynchronous=False)
    group.close()
    after = d.kafka_lag(kafka.bootstrap)
    rows = [line.split() for line in after.splitlines()[1:-1]]
    assert rows[:3] == [["0", "15", "20", "5"], ["1", "20", "20", "0"], ["2", "-", "20", "20"]], after
    assert after.endswith("total lag: 25 records")


def test_the_lag_view_survives_a_missing_broker() -> None:
    assert demo().kafka_lag("127.0.0.1:9").startswith("(lag not available: ")


def test_without_the_bridge_the_kafka_demo_stops_at_once_and_says_why(tmp_path: Path) -> None:
    """With a cloud-ingest that has no `bridge` command, no server is started."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "cloud-ingest").write_text("#!/bin/sh\necho \"Error: No such command '$1'.\" >&2\nexit 2\n")
    (fake / "cloud-ingest").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}
    p = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py"), "--kafka", "--seconds", "5"],
                       capture_output=True, text=True, env=env, timeout=60, check=False)
    assert p.returncode == 1
    assert "has no `bridge` yet" in p.stderr and "docs/kafka.md" in p.stderr
    assert "mosquitto pid" not in p.stdout


@pytest.mark.parametrize("flag", [[], ["--kafka"]])
def test_the_demo_help_names_the_kafka_option(flag: list[str]) -> None:
    p = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py"), *flag, "--help"], capture_output=True,
                       text=True, timeout=30, check=False)
    assert p.returncode == 0 and "--kafka" in p.stdout
