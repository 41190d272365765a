"""Helpers for the bridge tests and its benchmark (no tests here): the bridge in a thread of its own or as a
`cloud-ingest bridge` process, and a reader of every record of a Kafka topic."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, Message
from test_receiver_support import RunningReceiver, make_config, start_receiver

from cloud.config import Config
from cloud.kafka.bridge import bridge_receiver, prepare_topics
from cloud.kafka.delivery import DeliverySettings
from cloud.kafka.records import Codec
from cloud.metrics import Metrics

NO_INFLUX = "http://127.0.0.1:9/unused"  # the bridge has no database; the config still wants a valid URL


def bridge_config(mqtt_port: int, bootstrap: str, tmp: Path, **settings: object) -> Config:
    base: dict[str, object] = {"kafka__bootstrap": bootstrap, "kafka__partitions": 3, "batch__max_interval": "0.1",
                               "mqtt__client_id": "bridge-test"}
    return make_config(mqtt_port, NO_INFLUX, tmp, **{**base, **settings})


def start_bridge(cfg: Config, *, delivery: DeliverySettings | None = None,
                 ready_timeout: float = 30.0) -> RunningReceiver:
    """The bridge (topics prepared) on its own thread and event loop, as `cloud-ingest bridge` runs it."""
    prepare_topics(cfg)
    return start_receiver(cfg, ready_timeout=ready_timeout, make=lambda: bridge_receiver(
        cfg, metrics=Metrics(), status_file=Path(cfg.status.file), delivery=delivery))


def bridge_process(*args: str, log: Path) -> subprocess.Popen[bytes]:
    """`cloud-ingest bridge ARGS` as a process of its own, its output appended to `log`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUD_INGEST_")}
    with open(log, "ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen([sys.executable, "-c", "from cloud.cli import main; main()", "bridge", *args],
                                stdout=out, stderr=subprocess.STDOUT, env=env)


@dataclass(frozen=True)
class Got:
    """One record as read back: where it is, its key, its headers and its points (decoded with the contract)."""

    topic: str
    partition: int
    offset: int
    key: bytes
    headers: dict[str, bytes]
    value: bytes


def read_topic(bootstrap: str, topic: str, *, until: int, timeout: float = 60.0, settle: float = 1.0) -> list[Got]:
    """Every record of `topic` from the start, until `until` records were read (then `settle` s more, so that a
    duplicate would show), in the order of each partition."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4()}", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got: list[Got] = []
    deadline = time.monotonic() + timeout

    def take(msgs: list[Message]) -> None:
        for m in msgs:
            assert m.error() is None, m.error()
            got.append(Got(m.topic() or "", m.partition() or 0, m.offset() or 0, m.key() or b"",
                           {k: v or b"" for k, v in m.headers() or []}, m.value() or b""))

    try:
        while len(got) < until and time.monotonic() < deadline:
            take(c.consume(num_messages=1000, timeout=0.5))
        end = time.monotonic() + settle
        while time.monotonic() < end:
            take(c.consume(num_messages=1000, timeout=0.2))
    finally:
        c.close()
    return got


def readings(records: list[Got]) -> list[tuple[str, int]]:
    """(mac, time_ns) of every point the records hold, in record order: the identity of a reading in these tests
    (every reading they send has a time of its own)."""
    codec = Codec("json")  # reads Avro too (by the headers)
    return [(p.tags["mac"], p.time_ns) for r in records for p in codec.decode(r.value, list(r.headers.items()))]
