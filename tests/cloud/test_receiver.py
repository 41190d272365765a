"""The receiver against a real Mosquitto and a real influxd: acknowledgement after the write, the in-flight window,
dead letters, cross-gateway dedup and shared subscriptions."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import orjson
from test_receiver_support import (
    Publisher,
    Subscriber,
    broker_settings,
    create_db,
    edge_batch,
    mac_text,
    make_config,
    now_ns,
    reading,
    ruuvi_gw_message,
    start_receiver,
    stored,
    wait_until,
)

from cloud import status

MS = 1_000_000


def edge_traffic(gateway: str, batches: int, per_batch: int, t0: int, tag_offset: int = 0,
                 seq_offset: int = 0) -> list[tuple[str, bytes]]:
    msgs = []
    for b in range(batches):
        rs = [reading(tag_offset + i, seq_offset + b, t0 + b * 1000 * MS + i * MS) for i in range(per_batch)]
        msgs.append((f"edge-gw/{gateway}/batch", edge_batch(gateway, b, rs)))
    return msgs


def keys(points: list[dict[str, Any]]) -> set[tuple[int, str, str]]:
    return {(p["time"], p["mac"], p["gateway"]) for p in points}


def test_edge_batches_and_status_end_to_end(mosquitto: Any, influxd: Any, tmp_path: Path) -> None:
    url = create_db(influxd)
    cfg = make_config(mosquitto.port, url, tmp_path, batch__max_interval="0.3")
    rr = start_receiver(cfg)
    pub = Publisher(mosquitto.port)
    try:
        t0 = now_ns() - 60_000 * MS
        pub.publish([("edge-gw/pi-1/status", b'{"v":1,"gateway":"pi-1","state":"online"}')])
        pub.publish(edge_traffic("pi-1", 20, 25, t0))
        wait_until(lambda: len(stored(influxd)) == 500, 20, "500 points")
        pts = stored(influxd)
        want = {(t0 + b * 1000 * MS + i * MS, mac_text(i), "pi-1") for b in range(20) for i in range(25)}
        assert keys(pts) == want
        one = next(p for p in pts if p["time"] == t0 and p["mac"] == mac_text(0))
        assert (one["temperature"], one["humidity"], one["pressure"], one["battery_voltage"], one["rssi"],
                one["measurement_sequence_number"], one["data_format"]) == (21.5, 40.0, 100044.0, 2977, -70, 0, "5")
        wait_until(lambda: rr.metric("cloud_ingest_inflight_messages") == 0, 10, "all acknowledged")
        pub.publish([("edge-gw/pi-1/status", b'{"v":1,"gateway":"pi-1","state":"offline"}')])
        wait_until(lambda: rr.receiver.counts.gateways["pi-1"].state == "offline", 10, "offline status")
        assert rr.metric("cloud_ingest_points_written_total") == 500
        # Counted at once in the status, in Prometheus with the gauges (after a write, and every status interval).
        assert rr.receiver.counts.received_messages == 22
        wait_until(lambda: rr.metric("cloud_ingest_messages_received_total", {"format": "edge"}) == 22, 5,
                   "the count exported")
        wait_until(lambda: rr.metric("cloud_ingest_gateway_online", {"gateway": "pi-1"}) == 0, 5, "gauge updated")
    finally:
        rr.stop()
        pub.close()
    st = status.read(Path(cfg.status.file))
    assert st is not None
    assert (st.written, st.received_messages, st.received_readings, st.dead_letters, st.inflight_messages,
            st.queue_points) == (500, 22, 500, 0, 0, 0)
    assert st.gateways["pi-1"].state == "offline" and st.gateways["pi-1"].readings == 500
    text = status.render(st, interval_s=1, offline_after_s=300)
    assert "dead letters:   0" in text and "pi-1" in text and "OFFLINE" in text


def test_nothing_is_acknowledged_until_written(mosquitto_factory: Any, influxd: Any, tmp_path: Path) -> None:
    """influxd down: messages stay unacknowledged and the broker redelivers them after a reconnect; influxd back:
    every reading is stored exactly once. The broker runs with the shipped settings snippet."""
    mosquitto = mosquitto_factory(tmp_path / "mq", extra=broker_settings()).start()
    url = create_db(influxd)
    cfg = make_config(mosquitto.port, url, tmp_path, batch__max_interval="0.2", batch__max_points="100")
    rr = start_receiver(cfg)
    pub = Publisher(mosquitto.port)
    try:
        influxd.stop()
        t0 = now_ns() - 60_000 * MS
        msgs = edge_traffic("gw-a", 30, 10, t0)
        msgs += [ruuvi_gw_message("C8:25:2D:8E:9C:2C", 100 + i, i, t0 // 10**9 + i) for i in range(40)]
        pub.publish(msgs)
        wait_until(lambda: rr.metric("cloud_ingest_readings_received_total") == 340, 20, "all received")
        time.sleep(1.0)
        assert rr.metric("cloud_ingest_points_written_total") == 0
        assert rr.metric("cloud_ingest_inflight_messages") == 70  # nothing acknowledged
        assert rr.receiver.sink.state == "retrying"
        # The broker restarts (a reconnect): it resends every unacknowledged message, with DUP set.
        mosquitto.restart()
        wait_until(lambda: rr.metric("cloud_ingest_redeliveries_total") == 70, 30, "70 redeliveries")
        influxd.start()
        wait_until(lambda: rr.metric("cloud_ingest_inflight_messages") == 0, 60, "everything acknowledged")
        pts = stored(influxd)
        assert len(pts) == 340
        want = {(t0 + b * 1000 * MS + i * MS, mac_text(i), "gw-a") for b in range(30) for i in range(10)}
        # Ruuvi Gateway's whole-second ts plus the sequence number (i) as nanoseconds (cloud/formats/ruuvi_gateway.py).
        want |= {((t0 // 10**9 + i) * 10**9 + i, mac_text(100 + i), "c8:25:2d:8e:9c:2c") for i in range(40)}
        assert keys(pts) == want
        # The redelivered copies were acknowledged, so another reconnect brings nothing back.
        before = rr.metric("cloud_ingest_messages_received_total", {"format": "edge"})
        mosquitto.restart()
        wait_until(lambda: rr.metric("cloud_ingest_mqtt_connected") == 1, 20, "reconnected")
        time.sleep(1.0)
        assert rr.metric("cloud_ingest_messages_received_total", {"format": "edge"}) == before
    finally:
        rr.stop()
        pub.close()


def test_receive_maximum_lets_a_flush_carry_more_than_20_messages(mosquitto_factory: Any, influxd: Any,
                                                                    tmp_path: Path) -> None:
    """Mosquitto's default in-flight window is 20. One reading per message (Ruuvi Gateway): the receiver's Receive
    Maximum opens the window and a full window closes the batch, long before 5000 points or 10 s."""
    broker = mosquitto_factory(tmp_path / "mq", extra=["max_inflight_messages 20"]).start()
    url = create_db(influxd)
    cfg = make_config(broker.port, url, tmp_path, mqtt__receive_maximum="200")
    assert cfg.batch.max_points == 5000 and cfg.batch.max_interval == 10.0
    start_receiver(cfg).stop()  # creates the persistent session: the broker queues for it from now on
    pub = Publisher(broker.port)
    t0 = now_ns() // 10**9 - 60
    pub.publish([ruuvi_gw_message("C8:25:2D:8E:9C:2C", i, i, t0) for i in range(1000)])
    started = time.monotonic()
    rr = start_receiver(cfg)
    try:
        wait_until(lambda: len(stored(influxd)) == 1000, 20, "1000 points")
        assert time.monotonic() - started < 8  # not one 10 s timer
        batches = rr.metric("cloud_ingest_batch_messages_count")
        messages = rr.metric("cloud_ingest_batch_messages_sum")
        # Ten flushes of 100 messages (half the window of 200), every one closed by the window.
        assert (messages, batches) == (1000, 10)
        assert rr.metric("cloud_ingest_batches_total", {"reason": "window"}) == 10
        assert rr.metric("cloud_ingest_batch_messages_bucket", {"le": "50.0"}) == 0
        assert rr.metric("cloud_ingest_batch_messages_bucket", {"le": "100.0"}) == 10
    finally:
        rr.stop()
        pub.close()


def test_dead_letters_are_published_acknowledged_and_the_stream_goes_on(mosquitto: Any, influxd: Any,
                                                                       tmp_path: Path) -> None:
    url = create_db(influxd)
    cfg = make_config(mosquitto.port, url, tmp_path, batch__max_interval="0.3", formats__max_payload="2KiB",
                      mqtt__client_id="dlq-test")
    dlq = Subscriber(mosquitto.port, "edge-gw/dlq")
    rr = start_receiver(cfg)
    pub = Publisher(mosquitto.port)
    t0 = now_ns() - 60_000 * MS
    good = edge_traffic("gw-a", 2, 3, t0)
    ok_reading = json.loads(good[0][1])["readings"][0]
    wrong_type = {**json.loads(good[0][1]), "readings": [{**ok_reading, "fields": {"temperature": "hot"}}]}
    bad: list[tuple[str, bytes, str]] = [
        ("edge-gw/gw-a/batch", b'{"v":1,"gateway":"gw-a","seq":', "malformed JSON"),
        ("edge-gw/gw-a/batch", orjson.dumps(wrong_type), "'temperature' must be a number"),
        ("edge-gw/gw-a/batch", b" " * 3000 + b"{}", "payload of 3002 bytes exceeds 2048"),
        ("edge-gw/gw-a/batch", good[0][1].replace(b'"temperature":21.5', b'"temperature":NaN'), "malformed JSON"),
        ("edge-gw/gw-a/batch", good[0][1].replace(b'"temperature":21.5', b'"temperature":1e999'), "malformed JSON"),
        ("edge-gw/gw-a/batch", good[0][1].replace(b'"v":1', b'"v":2'), "unknown wire format version 2"),
        ("edge-gw/gw-b/batch", good[0][1], "differs from 'gw-b' in the topic"),
        ("sensors/x", b"\xff\xfe\x00binary", "malformed JSON"),
    ]
    try:
        pub.publish([good[0]] + [(t, p) for t, p, _ in bad] + [good[1]])
        wait_until(lambda: len(dlq.messages) == len(bad), 20, "dead letters")
        wait_until(lambda: len(stored(influxd)) == 6, 20, "the good messages around them")
        records = [orjson.loads(p) for _, p in dlq.messages]
        for rec, (topic, payload, reason) in zip(records, bad, strict=True):
            assert rec["topic"] == topic and rec["stage"] == "parse" and rec["receiver"] == "dlq-test"
            assert reason in rec["reason"], (reason, rec["reason"])
            assert rec["payload_size"] == len(payload)
            if rec["payload_encoding"] == "base64":
                assert base64.b64decode(rec["payload"]) == payload
            else:
                assert rec["payload"].encode() == payload
        assert records[-1]["payload_encoding"] == "base64"
        assert rr.metric("cloud_ingest_dead_letters_total", {"stage": "parse"}) == len(bad)
        wait_until(lambda: rr.metric("cloud_ingest_inflight_messages") == 0, 10, "all acknowledged")
    finally:
        rr.stop()
        pub.close()
        dlq.close()
    # They were acknowledged: the same session gets nothing back.
    rr2 = start_receiver(cfg)
    try:
        time.sleep(1.0)
        assert rr2.metric("cloud_ingest_redeliveries_total") == 0
        assert sum(rr2.metric("cloud_ingest_messages_received_total", {"format": f}) for f in ("edge", "flat")) == 0
    finally:
        rr2.stop()


def test_same_measurement_from_two_gateways_is_written_once(mosquitto: Any, influxd: Any, tmp_path: Path) -> None:
    url = create_db(influxd)
    cfg = make_config(mosquitto.port, url, tmp_path, batch__max_interval="1.0")
    rr = start_receiver(cfg)
    pub = Publisher(mosquitto.port)
    try:
        t0 = now_ns() - 60_000 * MS
        # gw-b heard tags 0..9 (seq 5) 40 ms after gw-a did, but its batch arrives first; tags 10/11 only gw-b heard.
        # The first copy to arrive is written: the gateways' clocks play no part (they may be skewed).
        late = [reading(i, 5, t0 + 40 * MS + i) for i in range(10)] + [reading(10, 5, t0), reading(11, 5, t0)]
        early = [reading(i, 5, t0 + i) for i in range(10)]
        pub.publish([("edge-gw/gw-b/batch", edge_batch("gw-b", 1, late))])
        pub.publish([("edge-gw/gw-a/batch", edge_batch("gw-a", 1, early))])
        wait_until(lambda: rr.metric("cloud_ingest_duplicates_total", {"gateway": "gw-a"}) == 10
                   and rr.metric("cloud_ingest_points_written_total") == 12, 20, "written, gw-a's copies counted")
        pts = stored(influxd)
        assert keys(pts) == {(t0 + 40 * MS + i, mac_text(i), "gw-b") for i in range(10)} | \
            {(t0, mac_text(10), "gw-b"), (t0, mac_text(11), "gw-b")}
        assert rr.metric("cloud_ingest_duplicates_total", {"gateway": "gw-b"}) == 0
        # A third gateway, an hour behind, in a later batch: the written copies stay, this one is counted.
        pub.publish([("edge-gw/gw-c/batch", edge_batch("gw-c", 1, [reading(3, 5, t0 + 3 - 3_600_000 * MS)]))])
        wait_until(lambda: rr.metric("cloud_ingest_duplicates_total", {"gateway": "gw-c"}) == 1, 20, "gw-c counted")
        assert len(stored(influxd)) == 12
        assert rr.receiver.counts.gateways["gw-a"].duplicates == 10
    finally:
        rr.stop()
        pub.close()


def test_shared_subscription_splits_the_load_between_two_receivers(mosquitto: Any, influxd: Any,
                                                                   tmp_path: Path) -> None:
    url = create_db(influxd)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    common = {"batch__max_interval": "0.3", "mqtt__shared_group": "ingest"}
    a = start_receiver(make_config(mosquitto.port, url, tmp_path / "a", mqtt__client_id="rx-a", **common))
    b = start_receiver(make_config(mosquitto.port, url, tmp_path / "b", mqtt__client_id="rx-b", **common))
    pub = Publisher(mosquitto.port)
    try:
        t0 = now_ns() - 60_000 * MS
        pub.publish(edge_traffic("gw-a", 100, 10, t0) + edge_traffic("gw-b", 100, 10, t0, tag_offset=50))
        wait_until(lambda: len(stored(influxd)) == 2000, 30, "2000 points")
        # InfluxDB answers queries with a batch before its writer has counted it: wait for the counters too.
        wait_until(lambda: a.metric("cloud_ingest_points_written_total")
                   + b.metric("cloud_ingest_points_written_total") == 2000, 10, "both receivers' counts")
        got_a = a.metric("cloud_ingest_messages_received_total", {"format": "edge"})
        got_b = b.metric("cloud_ingest_messages_received_total", {"format": "edge"})
        assert got_a + got_b == 200 and got_a > 0 and got_b > 0
        assert len(keys(stored(influxd))) == 2000
    finally:
        a.stop()
        b.stop()
        pub.close()


class BrokenSink:
    """A sink with a bug: the receiver must stop loudly, not sit on a full window."""

    state = "ok"
    last_error = None
    last_write_ns = None
    failed_attempts = 0

    async def write(self, points: Any) -> Any:
        raise RuntimeError("bug in the sink")

    async def close(self) -> None:
        pass


def test_an_unexpected_write_error_stops_the_receiver_without_acknowledging(mosquitto: Any, influxd: Any,
                                                                          tmp_path: Path) -> None:
    url = create_db(influxd)
    cfg = make_config(mosquitto.port, url, tmp_path, batch__max_interval="0.1")
    rr = start_receiver(cfg, sink=BrokenSink())
    pub = Publisher(mosquitto.port)
    try:
        t0 = now_ns() - 60_000 * MS
        pub.publish(edge_traffic("gw-a", 1, 5, t0))
        rr.thread.join(10)
        assert not rr.thread.is_alive()
        assert len(rr.error) == 1 and str(rr.error[0]) == "write failed: bug in the sink"
        # Not acknowledged: a working receiver with the same session gets the message.
        good = start_receiver(cfg)
        try:
            wait_until(lambda: len(stored(influxd)) == 5, 20, "5 points")
            assert good.metric("cloud_ingest_redeliveries_total") == 1
        finally:
            good.stop()
    finally:
        pub.close()


def test_retire_writes_a_stopped_members_share_and_leaves_the_group(mosquitto: Any, influxd: Any,
                                                                    tmp_path: Path) -> None:
    """Mosquitto queues a stopped member's share of a shared subscription for its session; `retire` takes it over
    and ends the session, after which the rest of the group gets everything."""
    from click.testing import CliRunner

    from cloud.cli import cli

    url = create_db(influxd)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    common = {"batch__max_interval": "0.2", "mqtt__shared_group": "ingest"}
    a = start_receiver(make_config(mosquitto.port, url, tmp_path / "a", mqtt__client_id="rx-a", **common))
    start_receiver(make_config(mosquitto.port, url, tmp_path / "b", mqtt__client_id="rx-b", **common)).stop()
    pub = Publisher(mosquitto.port)
    try:
        t0 = now_ns() - 400_000 * MS
        pub.publish(edge_traffic("gw-a", 100, 1, t0))
        wait_until(lambda: a.metric("cloud_ingest_points_written_total") == 50, 20, "a's half")
        time.sleep(0.5)
        assert len(stored(influxd)) == 50  # the other half waits for rx-b
        result = CliRunner().invoke(cli, ["retire", "--mqtt", f"mqtt://127.0.0.1:{mosquitto.port}", "--influx", url,
                                          "--client-id", "rx-b", "--shared-group", "ingest", "--idle", "0.5",
                                          "--set", "rollups.enabled=false"], env={})
        assert result.exit_code == 0, result.output
        assert "retired rx-b: 50 points written, session ended" in result.output
        assert len(stored(influxd)) == 100
        # New measurements (the same sequence numbers and values again would be copies of the first ones).
        pub.publish(edge_traffic("gw-a", 100, 1, t0 + 150_000 * MS, seq_offset=100))
        wait_until(lambda: a.metric("cloud_ingest_points_written_total") == 150, 20, "all of it to rx-a")
        assert len(stored(influxd)) == 200
    finally:
        a.stop()
        pub.close()
