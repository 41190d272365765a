"""A message Mosquitto 2.0.11 holds back after a reconnect (cloud/mqtt_gaps.py): the pure tracker of skipped
packet ids, and the receiver against the real broker, which reproduces the hold-back and gets the message."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from test_receiver_support import (
    Publisher,
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

from cloud.mqtt_gaps import MAX_ID, MAX_TRACKED, SkippedIds

MS = 1_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_ids_in_order_leave_nothing_missing_across_the_wrap() -> None:
    ids = SkippedIds(5, Clock())
    for mid in [*range(65530, MAX_ID + 1), *range(1, 6)]:
        ids.seen(mid)
    assert ids.missing == 0 and ids.held_back() is None


def test_a_skipped_id_is_held_back_once_it_has_been_missing_long_enough() -> None:
    clock = Clock()
    ids = SkippedIds(5, clock)
    for mid in (7, 8, 11, 12):  # 9 and 10 skipped
        ids.seen(mid)
    assert ids.missing == 2
    clock.now += 4.9
    assert ids.held_back() is None
    clock.now += 0.1
    assert ids.held_back() == 9
    ids.seen(9)  # it came after all (late, not lost): the count goes on from 13
    assert ids.held_back() == 10
    ids.seen(10)
    ids.seen(13)
    assert ids.missing == 0 and ids.held_back() is None


def test_a_skip_across_the_wrap_names_the_right_ids() -> None:
    clock = Clock()
    ids = SkippedIds(1, clock)
    ids.seen(MAX_ID - 1)
    ids.seen(2)  # MAX_ID and 1 skipped; 0 is never a packet id
    clock.now += 1
    assert ids.missing == 2 and ids.held_back() == MAX_ID
    ids.seen(MAX_ID)
    assert ids.held_back() == 1


def test_a_jump_too_large_to_be_a_held_back_message_is_not_tracked_and_reset_forgets() -> None:
    clock = Clock()
    ids = SkippedIds(1, clock)
    ids.seen(1)
    ids.seen(2 + MAX_TRACKED + 1)
    assert ids.missing == 0
    ids.seen(2 + MAX_TRACKED + 3)
    assert ids.missing == 1
    ids.reset()
    ids.seen(50)  # a new connection: its first id starts the count
    clock.now += 10
    assert ids.missing == 0 and ids.held_back() is None


def backlog(pub: Publisher, gateway: str, tags: int, t0: int, ts_s: int) -> set[tuple[int, str, str]]:
    """30 edge batches of one reading (tags `tags`..) at QoS 1, then a Ruuvi Gateway advert (tag `tags` + 100) at
    QoS 0, as the gateway publishes them: the queue that makes Mosquitto 2.0.11 hold one back. Returns the
    (time, mac, gateway) the database must end up with."""
    pub.publish([(f"edge-gw/{gateway}/batch", edge_batch(gateway, b, [reading(tags + b, b, t0 + b * MS)]))
                 for b in range(30)])
    pub.publish([ruuvi_gw_message("C8:25:2D:8E:9C:2C", tags + 100, 1, ts_s)], qos=0)
    time.sleep(0.3)  # QoS 0: no acknowledgement to wait for
    want = {(t0 + b * MS, mac_text(tags + b), gateway) for b in range(30)}
    return want | {(ts_s * 10**9 + 1, mac_text(tags + 100), "c8:25:2d:8e:9c:2c")}


def keys(influxd: Any) -> set[tuple[int, str, str]]:
    return {(p["time"], p["mac"], p["gateway"]) for p in stored(influxd)}


def test_the_receiver_reconnects_for_a_message_the_broker_held_back(mosquitto_factory: Any, influxd: Any,
                                                                     tmp_path: Path) -> None:
    broker = mosquitto_factory(tmp_path / "mq", extra=broker_settings()).start()
    url = create_db(influxd)
    settings = {"mqtt__receive_maximum": "10", "batch__max_interval": "0.2"}
    for d in ("off", "on"):
        (tmp_path / d).mkdir()
    off = make_config(broker.port, url, tmp_path / "off", mqtt__held_back_reconnect="0", **settings)
    on = make_config(broker.port, url, tmp_path / "on", mqtt__held_back_reconnect="2", **settings)
    pub = Publisher(broker.port)
    t0 = now_ns() - 3600 * 10**9
    ts_s = now_ns() // 10**9 - 60
    try:
        start_receiver(off).stop()  # the persistent session: the broker queues for it from now on
        # Without the reconnect: the broker's bug, as this test reproduces it. One edge batch never comes.
        want_a = backlog(pub, "gw-a", 0, t0, ts_s)
        rr = start_receiver(off)
        try:
            wait_until(lambda: len(keys(influxd)) == 30, 20, "30 of the 31 readings")
            time.sleep(3)
            missing = want_a - keys(influxd)
            assert len(missing) == 1 and next(iter(missing))[2] == "gw-a", missing
            assert rr.metric("cloud_ingest_inflight_messages") == 0  # nothing the receiver holds: the broker does
        finally:
            rr.stop()
        # With it: a new backlog, with a message held back again. The start-up's connection brings the one held
        # back before (a reconnect resets the broker's in-flight list); the watch gets the new one.
        want_b = backlog(pub, "gw-b", 30, t0, ts_s)
        rr = start_receiver(on)
        try:
            wait_until(lambda: keys(influxd) == want_a | want_b, 30, "all 62 readings")
            assert rr.metric("cloud_ingest_held_back_reconnects_total") == 1
            assert rr.receiver.monitor.counts.held_back_reconnects == 1
        finally:
            rr.stop()
        assert len(stored(influxd)) == 62  # each once
    finally:
        pub.close()


def test_a_receiver_that_stopped_has_no_sys_messages_queued_to_trigger_it(mosquitto_factory: Any, influxd: Any,
                                                                          tmp_path: Path) -> None:
    """The receiver's own `$SYS` subscription is the other trigger: the broker publishes `$SYS/broker/uptime` (QoS 0)
    every `sys_interval` and would queue it for the stopped receiver behind its backlog. A receiver that stops
    unsubscribes from `$SYS` first, so every message of the backlog comes with no reconnect needed."""
    broker = mosquitto_factory(tmp_path / "mq", extra=[*broker_settings(), "sys_interval 1"]).start()
    url = create_db(influxd)
    cfg = make_config(broker.port, url, tmp_path, mqtt__receive_maximum="10", batch__max_interval="0.2",
                      mqtt__held_back_reconnect="0")
    pub = Publisher(broker.port)
    t0 = now_ns() - 3600 * 10**9
    try:
        start_receiver(cfg).stop()
        pub.publish([("edge-gw/gw-a/batch", edge_batch("gw-a", b, [reading(b, b, t0 + b * MS)])) for b in range(30)])
        time.sleep(2.5)  # two uptime messages while it is away
        rr = start_receiver(cfg)
        try:
            wait_until(lambda: len(stored(influxd)) == 30, 20, "all 30 readings")
        finally:
            rr.stop()
        assert keys(influxd) == {(t0 + b * MS, mac_text(b), "gw-a") for b in range(30)}
    finally:
        pub.close()
