"""`cloud-ingest bridge` with a real Mosquitto and a real Kafka: the three formats reach `ruuvi.readings` exactly,
keyed by MAC and in order per tag; nothing is acknowledged or confirmed before Kafka acknowledged it; a poison
message goes to `ruuvi.dlq` with its reason in the headers, and the stream goes on."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from bridge_support import bridge_config, read_topic, readings, start_bridge
from kafka_server import Kafka
from test_receiver_support import (
    Publisher,
    Subscriber,
    broker_settings,
    edge_batch,
    reading,
    ruuvi_gw_message,
    wait_until,
)

from cloud.config import Config, formats_config
from cloud.formats import Router
from cloud.kafka.delivery import DeliverySettings

MS = 1_000_000
S = 1_000_000_000


def traffic(t0_s: int) -> list[tuple[str, bytes]]:
    """Messages of all three formats, every reading with a time of its own."""
    msgs: list[tuple[str, bytes]] = []
    for b in range(20):  # an edge-gw gateway: 20 batches of 10 tags
        rs = [reading(tag, b, (t0_s + b) * S + tag * MS) for tag in range(10)]
        msgs.append(("edge-gw/gw-a/batch", edge_batch("gw-a", b + 1, rs)))
    for i in range(20):  # a Ruuvi Gateway: one message per advert, 3 tags
        msgs += [ruuvi_gw_message("AA:BB:CC:00:00:01", tag, i, t0_s + i) for tag in range(100, 103)]
    for i in range(10):  # flat JSON from two sensors
        for sensor in ("attic", "cellar"):
            msgs.append((f"sensors/{sensor}", json.dumps({"temperature": 20.5 + i, "timestamp": t0_s + i}).encode()))
    return msgs


def expected(cfg: Config, msgs: list[tuple[str, bytes]]) -> set[tuple[str, int]]:
    """(mac, time_ns) of every reading in the messages, as the receiver's own parsers read them."""
    router = Router(formats_config(cfg))
    return {(p.tags["mac"], p.time_ns) for t, m in msgs for p in router.route(t, m, received_ns=time.time_ns()).points}


@pytest.mark.parametrize(("encoding", "record"), [("json", "reading"), ("avro", "batch")])
def test_three_formats_reach_kafka_exactly_keyed_by_mac_and_in_order(mosquitto_factory: Any, kafka: Kafka,
                                                                      tmp_path: Path, encoding: str,
                                                                      record: str) -> None:
    mq = mosquitto_factory(tmp_path / "mq", extra=broker_settings()).start()
    cfg = bridge_config(mq.port, kafka.bootstrap, tmp_path, kafka__encoding=encoding, kafka__record=record)
    bridge = start_bridge(cfg)
    pub = Publisher(mq.port)
    msgs = traffic(int(time.time()) - 3600)
    want = expected(cfg, msgs)
    assert len(want) == 280
    try:
        pub.publish(msgs)
        wait_until(lambda: bridge.receiver.counts.written == len(want), 30, "every reading produced")
        got = read_topic(kafka.bootstrap, "ruuvi.readings", until=1)
        assert bridge.receiver.counts.dead_letters == 0
        assert bridge.metric("cloud_ingest_kafka_produce_errors_total", {"topic": "ruuvi.readings"}) == 0
    finally:
        pub.close()
        bridge.stop()
    ids = readings(got)
    assert len(ids) == len(want) and set(ids) == want  # exact: nothing lost, nothing twice
    assert {r.headers["content-type"] for r in got} == {f"application/{encoding}".encode()}
    assert {r.headers["record"] for r in got} == {record.encode()}
    per_key: dict[bytes, list[Any]] = defaultdict(list)
    for r in sorted(got, key=lambda r: (r.partition, r.offset)):
        per_key[r.key].append(r)
    assert set(per_key) == {mac.encode() for mac, _ in want}
    for key, recs in per_key.items():
        assert len({r.partition for r in recs}) == 1, key  # one partition per tag ...
        times = [t for _, t in readings(recs)]
        assert times == sorted(times), key  # ... in the order the tag sent
        assert {mac for mac, _ in readings(recs)} == {key.decode()}
    if record == "reading":
        assert len(got) == len(want)
    else:  # one record per tag and write batch: fewer records than readings
        assert len(got) < len(want)


def test_nothing_is_acknowledged_or_confirmed_before_kafka_acknowledges(mosquitto_factory: Any, kafka: Kafka,
                                                                         tmp_path: Path) -> None:
    mq = mosquitto_factory(tmp_path / "mq", extra=broker_settings()).start()
    cfg = bridge_config(mq.port, kafka.bootstrap, tmp_path)
    # A short delivery timeout: while Kafka is down, records time out in librdkafka and are produced again.
    bridge = start_bridge(cfg, delivery=DeliverySettings(message_timeout_ms=1500, backoff_max_s=0.5))
    confirms = Subscriber(mq.port, "edge-gw/+/confirm")
    pub = Publisher(mq.port)
    t0 = int(time.time()) - 600
    try:
        rs = [reading(tag, 1, t0 * S + tag * MS) for tag in range(5)]
        pub.publish([("edge-gw/gw-k/batch", edge_batch("gw-k", 7, rs))])
        wait_until(lambda: bridge.receiver.counts.written == 5, 20, "the first batch in Kafka")
        wait_until(lambda: len(confirms.messages) == 1, 10, "its confirmation")
        kafka.stop()
        rs2 = [reading(tag, 2, (t0 + 1) * S + tag * MS) for tag in range(5)]
        pub.publish([("edge-gw/gw-k/batch", edge_batch("gw-k", 8, rs2))])
        wait_until(lambda: bridge.receiver.sink.state == "retrying", 15, "the sink retrying")
        time.sleep(4)  # more than two delivery timeouts: the records were handed back and produced again
        assert bridge.receiver.sink.failed_attempts >= 2
        assert bridge.receiver.counts.written == 5
        assert bridge.receiver.input.inflight == 1  # not acknowledged: the broker still holds the message
        assert len(confirms.messages) == 1  # and the gateway was not told
        assert bridge.metric("cloud_ingest_kafka_produce_errors_total",
                             {"topic": "ruuvi.readings", "error": "_MSG_TIMED_OUT"}) >= 5
        kafka.start()
        wait_until(lambda: bridge.receiver.counts.written == 10, 60, "the second batch in Kafka")
        wait_until(lambda: len(confirms.messages) == 2, 10, "its confirmation")
        wait_until(lambda: bridge.receiver.input.inflight == 0, 10, "the PUBACK")
        assert bridge.receiver.sink.state == "ok"
        got = readings(read_topic(kafka.bootstrap, "ruuvi.readings", until=10))
    finally:
        pub.close()
        confirms.close()
        bridge.stop()
    assert sorted(got) == sorted({(r.mac, r.time_ns) for r in rs + rs2})  # exact, no copy


def test_a_poison_message_goes_to_the_dlq_with_its_reason_and_the_stream_goes_on(mosquitto_factory: Any,
                                                                                 kafka: Kafka,
                                                                                 tmp_path: Path) -> None:
    mq = mosquitto_factory(tmp_path / "mq", extra=broker_settings()).start()
    bridge = start_bridge(bridge_config(mq.port, kafka.bootstrap, tmp_path))
    pub = Publisher(mq.port)
    t0 = int(time.time()) - 600
    good = []
    try:
        for b in range(6):
            rs = [reading(tag, b, (t0 + b) * S + tag * MS) for tag in range(4)]
            good += rs
            pub.publish([("edge-gw/gw-p/batch", edge_batch("gw-p", b + 1, rs))])
            if b == 2:
                pub.publish([("sensors/attic", b"{not json"), ("edge-gw/gw-p/batch", b'{"v":1,"gateway":"gw-p"}')])
        wait_until(lambda: bridge.receiver.counts.written == len(good), 30, "the good readings")
        wait_until(lambda: bridge.receiver.counts.dead_letters == 2, 10, "two dead letters")
        dlq = read_topic(kafka.bootstrap, "ruuvi.dlq", until=2)
        got = readings(read_topic(kafka.bootstrap, "ruuvi.readings", until=len(good)))
    finally:
        pub.close()
        bridge.stop()
    assert sorted(got) == sorted((r.mac, r.time_ns) for r in good)
    h = ("dlq-source", "dlq-stage", "dlq-receiver")
    assert {(d.key, d.value, *(d.headers[k] for k in h)) for d in dlq} == {
        (b"sensors/attic", b"{not json", b"sensors/attic", b"parse", b"bridge-test"),
        (b"edge-gw/gw-p/batch", b'{"v":1,"gateway":"gw-p"}', b"edge-gw/gw-p/batch", b"parse", b"bridge-test"),
    }
    reasons = {d.key: d.headers["dlq-reason"].decode() for d in dlq}
    assert "JSON" in reasons[b"sensors/attic"], reasons
    assert reasons[b"edge-gw/gw-p/batch"], reasons
    assert all(int(d.headers["dlq-time-ns"]) > t0 * S for d in dlq)


def test_the_bridge_closes_its_rounds_at_kafka_bridge_batch_points(mosquitto_factory: Any, kafka: Kafka,
                                                                   tmp_path: Path) -> None:
    """kafka.bridge_batch_points, not batch.max_points (the InfluxDB writes' size), closes the bridge's rounds: with
    100, 200 readings of 10 tags make 2 rounds of 10 records of 10 readings each, long before max_interval."""
    mq = mosquitto_factory(tmp_path / "mq", extra=broker_settings()).start()
    cfg = bridge_config(mq.port, kafka.bootstrap, tmp_path, kafka__bridge_batch_points=100, batch__max_points=5,
                        batch__max_interval="60s")
    bridge = start_bridge(cfg)
    pub = Publisher(mq.port)
    t0 = int(time.time()) - 600
    sent = [[reading(tag, b, (t0 + b) * S + tag * MS) for tag in range(10)] for b in range(20)]
    try:
        assert bridge.receiver.settings.batch_max_points == 100
        pub.publish([("edge-gw/gw-r/batch", edge_batch("gw-r", b + 1, rs)) for b, rs in enumerate(sent)])
        wait_until(lambda: bridge.receiver.counts.written == 200, 30, "both rounds produced")
        got = read_topic(kafka.bootstrap, "ruuvi.readings", until=20)
    finally:
        pub.close()
        bridge.stop()
    assert sorted(readings(got)) == sorted((r.mac, r.time_ns) for rs in sent for r in rs)
    assert len(got) == 20
    assert [len(readings([r])) for r in got] == [10] * 20
