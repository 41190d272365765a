"""The cloud's confirmation (docs/wire-format.md "Confirmation") from the receiver, against a real Mosquitto and a
real influxd: exact bytes, published before the batch is acknowledged, re-sends confirmed without a second write,
refused points and poison batches dead-lettered and confirmed."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_receiver_support import (
    Publisher,
    Subscriber,
    count,
    create_db,
    edge_batch,
    make_config,
    now_ns,
    reading,
    start_receiver,
    wait_until,
)

from cloud.write_path import Message, confirmations

MS = 1_000_000
VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "confirm.json"


def batch_msg(gateway: str, seq: int, tags: range, t0: int) -> tuple[str, bytes]:
    return f"edge-gw/{gateway}/batch", edge_batch(gateway, seq, [reading(i, seq, t0 + i * MS) for i in tags])


@pytest.mark.parametrize("case", json.loads(VECTORS.read_text())["encode"], ids=lambda c: c["name"])
def test_confirmation_messages_are_the_canonical_vectors(case: dict[str, Any]) -> None:
    gw = case["gateway"]
    msgs = [Message(f"site/a/{gw}/batch", gateway=gw, seq=s) for s in case["seqs"]]
    msgs.append(Message(f"site/a/{gw}/status", gateway=gw))  # never confirmed
    want = [(f"site/a/{gw}/confirm", m.encode()) for m in case["messages"]]
    assert confirmations(msgs) == want


def test_each_gateway_gets_exactly_its_confirmation_before_the_acknowledgement(mosquitto: Any, influxd: Any,
                                                                               tmp_path: Path) -> None:
    url = create_db(influxd)
    cfg = make_config(mosquitto.port, url, tmp_path, batch__max_interval="1.0")
    rr = start_receiver(cfg)
    trace: list[tuple[str, ...]] = []
    rr.call(lambda: setattr(rr.receiver.write_path, "trace", trace))
    gw1 = Subscriber(mosquitto.port, "edge-gw/pi-1/confirm", client_id="pi-1")
    gw2 = Subscriber(mosquitto.port, "edge-gw/pi-2/confirm", client_id="pi-2")
    pub = Publisher(mosquitto.port)
    try:
        t0 = now_ns() - 60_000 * MS
        msgs = [batch_msg("pi-1", s, range(3), t0 + s * 1000 * MS) for s in (3, 1, 2, 7, 8)]
        msgs += [batch_msg("pi-2", 5, range(10, 12), t0)]
        msgs += [("edge-gw/pi-1/status", b'{"v":1,"gateway":"pi-1","state":"online"}')]
        pub.publish(msgs)
        wait_until(lambda: len(gw1.messages) == 1 and len(gw2.messages) == 1, 20, "confirmations")
        assert gw1.messages == [("edge-gw/pi-1/confirm", b'{"v":1,"gateway":"pi-1","seqs":[[1,3],[7,8]]}')]
        assert gw2.messages == [("edge-gw/pi-2/confirm", b'{"v":1,"gateway":"pi-2","seqs":[[5,5]]}')]
        assert count(influxd) == 17
        wait_until(lambda: rr.metric("cloud_ingest_inflight_messages") == 0, 10, "all acknowledged")
        # The confirmation went out before any message of its batch was acknowledged to the broker.
        confirms = [i for i, e in enumerate(trace) if e[0] == "confirm"]
        acks = [i for i, e in enumerate(trace) if e[0] == "ack"]
        assert len(confirms) == 2 and len(acks) == 7
        assert max(confirms) < min(acks)
        assert rr.metric("cloud_ingest_confirmations_total") == 2
        assert rr.metric("cloud_ingest_confirmed_seqs_total") == 6
        assert (rr.receiver.counts.confirmations, rr.receiver.counts.confirmed_seqs) == (2, 6)
    finally:
        rr.stop()
        pub.close()
        gw1.close()
        gw2.close()


def test_readings_sent_again_under_a_new_seq_are_confirmed_and_not_written_again(mosquitto: Any, influxd: Any,
                                                                               tmp_path: Path) -> None:
    """A gateway that got no confirmation re-sends its readings in a new batch; the receiver restarted in between, so
    only the dedup journal knows they are stored."""
    url = create_db(influxd)
    cfg = make_config(mosquitto.port, url, tmp_path, batch__max_interval="0.2")
    gw = Subscriber(mosquitto.port, "edge-gw/pi-1/confirm", client_id="pi-1")
    pub = Publisher(mosquitto.port)
    t0 = now_ns() - 60_000 * MS
    readings = [reading(i, 40, t0 + i * MS) for i in range(50)]
    try:
        rr = start_receiver(cfg)
        try:
            pub.publish([("edge-gw/pi-1/batch", edge_batch("pi-1", 100, readings))])
            wait_until(lambda: len(gw.messages) == 1, 20, "first confirmation")
            assert count(influxd) == 50
        finally:
            rr.stop()
        rr = start_receiver(cfg)
        try:
            pub.publish([("edge-gw/pi-1/batch", edge_batch("pi-1", 101, readings[:30])),
                         ("edge-gw/pi-1/batch", edge_batch("pi-1", 102, readings[30:]))])
            wait_until(lambda: len(gw.messages) >= 2, 20, "second confirmation")
            wait_until(lambda: rr.metric("cloud_ingest_inflight_messages") == 0, 10, "acknowledged")
            ranges = [r for _, p in gw.messages[1:] for r in orjson.loads(p)["seqs"]]
            assert sorted(ranges) in ([[101, 102]], [[101, 101], [102, 102]])
            assert rr.metric("cloud_ingest_points_written_total") == 0
            assert rr.metric("cloud_ingest_resent_points_total") == 50  # all 50 dropped as written before
            assert count(influxd) == 50
        finally:
            rr.stop()
    finally:
        pub.close()
        gw.close()


def test_more_than_a_window_of_refused_points_are_all_dead_lettered_and_confirmed(
        mosquitto_factory: Any, influxd: Any, tmp_path: Path) -> None:
    """1,100 points the database refuses (a field type conflict), through a broker that allows 20 publishes in
    flight: 1,100 dead letters (gmqtt would raise OverflowError past the 19th without the flow control), then the
    confirmation."""
    broker = mosquitto_factory(tmp_path / "mq", extra=["max_inflight_messages 20"]).start()
    url = create_db(influxd)
    t0 = now_ns() - 60_000 * MS
    conflict = f'ruuvi,mac=00:00:00:00:00:01 temperature="hot" {t0}\n'.encode()
    with urllib.request.urlopen(f"{influxd.url}/write?db=ruuvi&precision=ns", data=conflict, timeout=10) as r:
        assert r.status == 204
    cfg = make_config(broker.port, url, tmp_path, batch__max_interval="1.0")
    dlq = Subscriber(broker.port, "edge-gw/dlq")
    gw = Subscriber(broker.port, "edge-gw/pi-1/confirm", client_id="pi-1")
    rr = start_receiver(cfg)
    pub = Publisher(broker.port)
    try:
        assert rr.receiver.input.publisher.window == 17
        pub.publish([batch_msg("pi-1", 20, range(550), t0), batch_msg("pi-1", 21, range(550, 1100), t0)])
        wait_until(lambda: len(gw.messages) == 1, 120, "confirmation")
        assert gw.messages == [("edge-gw/pi-1/confirm", b'{"v":1,"gateway":"pi-1","seqs":[[20,21]]}')]
        wait_until(lambda: len(dlq.messages) >= 1100, 20, "dead letters")
        records = [orjson.loads(p) for _, p in dlq.messages]
        assert len(records) == 1100
        assert {r["stage"] for r in records} == {"write"}
        assert {r["topic"] for r in records} == {"edge-gw/pi-1/batch"}
        assert all("field type conflict" in r["reason"] for r in records)
        assert len({r["payload"] for r in records}) == 1100 and records[0]["payload"].startswith("ruuvi,")
        assert rr.metric("cloud_ingest_dead_letters_total", {"stage": "write"}) == 1100
        assert count(influxd) == 1
        wait_until(lambda: rr.metric("cloud_ingest_inflight_messages") == 0, 10, "acknowledged")
    finally:
        rr.stop()
        pub.close()
        dlq.close()
        gw.close()


def test_a_poison_batch_that_names_its_seq_is_dead_lettered_and_confirmed(mosquitto: Any, influxd: Any,
                                                                          tmp_path: Path) -> None:
    url = create_db(influxd)
    cfg = make_config(mosquitto.port, url, tmp_path, batch__max_interval="0.3")
    dlq = Subscriber(mosquitto.port, "edge-gw/dlq")
    gw = Subscriber(mosquitto.port, "edge-gw/+/confirm", client_id="pi-1")
    rr = start_receiver(cfg)
    pub = Publisher(mosquitto.port)
    try:
        pub.publish([
            ("edge-gw/pi-1/batch", b'{"v":1,"gateway":"pi-1","seq":33,"readings":"nope"}'),
            ("edge-gw/pi-1/batch", b'{"v":1,"gateway":"pi-1","readings":[]}'),  # no seq: nothing to confirm
            ("edge-gw/pi-1/batch", b'{"v":1,"gateway":"pi-1","seq":-4,"readings":[]}'),
            ("edge-gw/pi-2/batch", b'{"v":1,"gateway":"pi-1","seq":9,"readings":[]}'),  # to the topic's gateway
            ("edge-gw/pi-1/status", b'{"v":1,"gateway":"pi-1","state":"online","seq":5}'),  # never confirmed
        ])
        wait_until(lambda: len(dlq.messages) == 4, 20, "dead letters")
        wait_until(lambda: rr.metric("cloud_ingest_inflight_messages") == 0, 10, "acknowledged")
        wait_until(lambda: len(gw.messages) >= 2, 10, "confirmations")
        assert sorted(gw.messages) == [("edge-gw/pi-1/confirm", b'{"v":1,"gateway":"pi-1","seqs":[[33,33]]}'),
                                       ("edge-gw/pi-2/confirm", b'{"v":1,"gateway":"pi-2","seqs":[[9,9]]}')]
        assert [orjson.loads(p)["stage"] for _, p in dlq.messages] == ["parse"] * 4
    finally:
        rr.stop()
        pub.close()
        dlq.close()
        gw.close()


def test_confirmations_can_be_turned_off(mosquitto: Any, influxd: Any, tmp_path: Path) -> None:
    url = create_db(influxd)
    cfg = make_config(mosquitto.port, url, tmp_path, batch__max_interval="0.2", confirm__enabled=False)
    gw = Subscriber(mosquitto.port, "edge-gw/+/confirm", client_id="pi-1")
    rr = start_receiver(cfg)
    pub = Publisher(mosquitto.port)
    try:
        pub.publish([batch_msg("pi-1", 1, range(5), now_ns() - 60_000 * MS)])
        wait_until(lambda: count(influxd) == 5, 20, "written")
        wait_until(lambda: rr.metric("cloud_ingest_inflight_messages") == 0, 10, "acknowledged")
        assert gw.messages == [] and rr.metric("cloud_ingest_confirmations_total") == 0
    finally:
        rr.stop()
        pub.close()
        gw.close()
