"""The uplink against a real Mosquitto: batching, delete-after-PUBACK, broker restarts, status, seq, settings."""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from fakeclock import FakeClock
from servers import Mosquitto, free_port
from test_uplink_support import (
    FAST,
    buffered,
    fill,
    keys,
    make_readings,
    running_uplink,
    subscriber,
)

from edge.metrics import Counters
from edge.mqtt import MqttSettings, UplinkError
from edge.store import Store
from edge.uplink import Backoff, Uplink, UplinkSettings


def test_every_reading_arrives_in_batches_and_the_buffer_empties(tmp_path: Path, mosquitto: Mosquitto) -> None:
    db = tmp_path / "buf.db"
    readings = make_readings(3000, tag=1) + make_readings(2000, tag=2)
    fill(db, readings)
    counters = Counters()
    with subscriber(mosquitto.port) as sub, running_uplink(db, mosquitto.url, counters=counters) as up:
        assert up.wait_drained(20)
        assert sub.wait(lambda s: len(s.received()) >= 5000)
        got = sub.received()
    assert sorted(got) == sorted(keys(readings))  # every reading exactly once
    assert len(sub.batches) == 10
    assert [len(b.keys) for b in sub.batches] == [500] * 10
    assert sorted(b.seq for b in sub.batches) == list(range(10))
    assert {b.gateway for b in sub.batches} == {"gw-1"}
    assert buffered(db) == 0
    snap = counters.snapshot()
    assert (snap["batches_published"], snap["readings_acked"], snap["publish_errors"]) == (10, 5000, 0)


def test_readings_are_deleted_only_after_puback(tmp_path: Path, mosquitto: Mosquitto) -> None:
    db = tmp_path / "buf.db"
    fill(db, [])
    counters = Counters()
    assert mosquitto.proc is not None
    with subscriber(mosquitto.port) as sub, running_uplink(db, mosquitto.url, counters=counters) as up:
        assert up.wait_connected(5)
        os.kill(mosquitto.proc.pid, signal.SIGSTOP)  # the broker stops reading and acknowledging
        try:
            fill(db, make_readings(1200))
            deadline = time.monotonic() + 5
            while counters.snapshot()["batches_published"] < 3 and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.5)
            assert counters.snapshot()["batches_published"] == 3  # 500 + 500 + 200, sent ...
            assert counters.snapshot()["readings_acked"] == 0  # ... but not acknowledged
            assert buffered(db) == 1200  # so all still buffered
            assert up.state()["inflight"] == 3
        finally:
            os.kill(mosquitto.proc.pid, signal.SIGCONT)
        assert up.wait_drained(10)
        assert sub.wait(lambda s: len(s.received()) == 1200)
    assert counters.snapshot()["readings_acked"] == 1200


def test_batches_unacked_when_the_broker_dies_are_sent_again(tmp_path: Path, mosquitto: Mosquitto) -> None:
    db = tmp_path / "buf.db"
    fill(db, [])
    counters = Counters()
    with subscriber(mosquitto.port) as sub, running_uplink(db, mosquitto.url, counters=counters) as up:
        assert up.wait_connected(5)
        # Until the broker's autosave (every 1 s) has written the subscriber's session to disk.
        saved = mosquitto.workdir / "mosquitto.db"
        subscribed = time.time()
        assert sub.wait(lambda _s: saved.exists() and saved.stat().st_mtime > subscribed, timeout=10)
        assert mosquitto.proc is not None
        os.kill(mosquitto.proc.pid, signal.SIGSTOP)
        fill(db, make_readings(1200))
        deadline = time.monotonic() + 5
        while counters.snapshot()["batches_published"] < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        mosquitto.kill()  # dies holding three unacknowledged batches
        mosquitto.start()
        assert up.wait_drained(15)
        assert sub.wait(lambda s: len(s.received()) >= 1200)
        time.sleep(0.2)
        got = sub.received()
    assert sorted(got) == sorted(keys(make_readings(1200)))  # each exactly once: the dead broker never forwarded
    snap = counters.snapshot()
    assert (snap["publish_errors"], snap["batches_published"], snap["readings_acked"]) == (3, 6, 1200)
    assert snap["uplink_reconnects"] >= 1


def test_broker_down_and_up_under_load_loses_nothing(tmp_path: Path, mosquitto: Mosquitto) -> None:
    db = tmp_path / "buf.db"
    fill(db, make_readings(4000, tag=9))  # a backlog, plus live readings written throughout
    produced = make_readings(4000, tag=9)
    stop = threading.Event()

    def produce() -> None:
        store = Store(db, clock=FakeClock())
        tag, i = 10, 0
        try:
            while not stop.is_set():
                batch = make_readings(200, tag=tag, start=i)
                store.add(batch)
                produced.extend(batch)
                i += 200
                time.sleep(0.02)
        finally:
            store.close()

    counters = Counters()
    with subscriber(mosquitto.port, client_id="persistent-counter") as sub:
        with running_uplink(db, mosquitto.url, counters=counters) as up:
            producer = threading.Thread(target=produce)
            producer.start()
            try:
                time.sleep(0.7)
                mosquitto.stop()  # SIGTERM: connections drop, in-flight batches get no PUBACK
                time.sleep(1.0)
                assert up.state()["connected"] is False
                mosquitto.start()  # same port, same persistence: the subscriber's session survives
                time.sleep(0.7)
            finally:
                stop.set()
                producer.join()
            assert up.wait_drained(30)
        expected = keys(produced)
        assert sub.wait(lambda s: set(s.received()) >= expected, timeout=20)
        got = sub.received()
    assert len(expected) == len(produced) > 8000
    assert set(got) == expected  # nothing lost, nothing invented
    # At-least-once: a batch in flight when the broker went away is sent again (uplink side), and a message in
    # flight to the subscriber is delivered again (broker side). Both show up as repeated (mac, time_ns).
    duplicates = len(got) - len(set(got))
    print(f"received {len(got)} readings, {len(set(got))} distinct, {duplicates} duplicates")
    snap = counters.snapshot()
    assert snap["uplink_reconnects"] >= 1
    assert snap["readings_acked"] == len(produced)  # each reading deleted once, after one PUBACK
    assert buffered(db) == 0


def test_retained_online_then_offline_on_clean_stop(tmp_path: Path, mosquitto: Mosquitto) -> None:
    db = tmp_path / "buf.db"
    with running_uplink(db, mosquitto.url, gateway="pi-kitchen") as up:
        assert up.wait_connected(5)
        time.sleep(0.2)
        # A subscriber that arrives later still sees the retained state.
        with subscriber(mosquitto.port, client_id="late") as late:
            assert late.wait(lambda s: s.states("pi-kitchen") == ["online"])
            assert late.status["edge-gw/pi-kitchen/status"][0]["retain"] is True
            up.stop()
            assert late.wait(lambda s: s.states("pi-kitchen") == ["online", "offline"])
            assert late.status["edge-gw/pi-kitchen/status"][0] == {
                "v": 1, "gateway": "pi-kitchen", "state": "online", "retain": True}
    with subscriber(mosquitto.port, client_id="later") as later:
        assert later.wait(lambda s: s.states("pi-kitchen") == ["offline"])
    assert up.state()["state"] == "stopped"


def test_seq_continues_across_restarts_and_status_is_saved(tmp_path: Path, mosquitto: Mosquitto) -> None:
    db = tmp_path / "buf.db"
    settings = UplinkSettings(batch_max_readings=100, backoff_min_s=0.05, backoff_max_s=0.3)
    with subscriber(mosquitto.port) as sub:
        for run in range(3):
            fill(db, make_readings(250, start=run * 1000))
            with running_uplink(db, mosquitto.url, settings=settings) as up:
                assert up.wait_drained(10)
        assert sub.wait(lambda s: len(s.batches) == 9)
        seqs = [b.seq for b in sub.batches]
    assert sorted(seqs) == list(range(9))
    store = Store(db, clock=FakeClock())
    status = store.load_status()["uplink"]
    store.close()
    assert status["state"] == "stopped"
    assert status["seq"] == status["seq_reserved"] == 9
    assert status["broker"] == f"127.0.0.1:{mosquitto.port}"
    assert status["last_ack_ns"] == FakeClock().wall_ns()
    assert status["inflight"] == 0
    assert status["reconnects"] == 0


def test_seq_is_never_reused_after_a_crash(tmp_path: Path, mosquitto: Mosquitto) -> None:
    db = tmp_path / "buf.db"
    store = Store(db, clock=FakeClock())
    # What a crashed uplink leaves: the last reservation, not the exact next seq.
    store.save_status("uplink", {"seq": 17, "seq_reserved": 1017})
    store.close()
    fill(db, make_readings(10))
    with subscriber(mosquitto.port) as sub, running_uplink(db, mosquitto.url) as up:
        assert up.wait_drained(10)
        assert sub.wait(lambda s: len(s.batches) == 1)
    assert sub.batches[0].seq == 1017


def test_unreachable_broker_backs_off_and_counts_reconnects(tmp_path: Path) -> None:
    counters = Counters()
    port = free_port()
    with running_uplink(tmp_path / "buf.db", f"mqtt://127.0.0.1:{port}", counters=counters) as up:
        time.sleep(1.0)
        st = up.state()
        assert st["state"] in ("backoff", "connecting")
        assert st["connected"] is False
        assert f"cannot connect to mqtt://127.0.0.1:{port}" in st["last_error"]
        with pytest.raises(UplinkError, match="cannot connect"):
            up.wait_connected(0.1)
    assert st["reconnects"] >= 2
    assert counters.snapshot()["uplink_reconnects"] >= st["reconnects"]


def test_backoff_is_capped_jittered_exponential() -> None:
    import random

    b = Backoff(0.5, 8.0, random.Random(1))
    delays = [b.next_delay() for _ in range(8)]
    ceilings = [0.5, 1, 2, 4, 8, 8, 8, 8]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == 8  # jittered
    b.reset()
    assert b.next_delay() <= 0.5


def test_mqtt_settings_from_url() -> None:
    s = MqttSettings.from_url("mqtts://gw-1:s%40cret@broker.example:8884", ca_file=None, keepalive=15,
                              topic_prefix="site/a")
    assert (s.host, s.port, s.tls, s.username, s.password, s.keepalive) == (
        "broker.example", 8884, True, "gw-1", "s@cret", 15)
    assert "s@cret" not in repr(s) and "cret" not in s.describe()
    assert s.describe() == "mqtts://gw-1@broker.example:8884"
    assert MqttSettings.from_url("mqtt://h").port == 1883
    assert MqttSettings.from_url("mqtts://h").port == 8883
    assert MqttSettings.from_url("mqtt://h", username="u", password="p").username == "u"
    for bad, match in [("http://h", "expected mqtt"), ("mqtt://h:99999", "bad port"), ("mqtt://h/x", "no path"),
                       ("mqtt://u:pw@h/x", "no path")]:
        with pytest.raises(UplinkError, match=match) as err:
            MqttSettings.from_url(bad)
        assert "pw" not in str(err.value)
    with pytest.raises(UplinkError, match="ruuvi"):
        MqttSettings.from_url("mqtt://h", topic_prefix="ruuvi")
    with pytest.raises(UplinkError, match="unknown MQTT setting"):
        MqttSettings.from_url("mqtt://h", hots="x")
    with pytest.raises(UplinkError, match="need TLS"):
        MqttSettings.from_url("mqtt://h", ca_file="/etc/ssl/certs/ca-certificates.crt")


def test_bad_gateway_id_is_refused_up_front(tmp_path: Path) -> None:
    with pytest.raises(UplinkError, match="gateway id"):
        Uplink(tmp_path / "b.db", "dlq", MqttSettings(), FAST, Counters())


def test_status_writes_are_throttled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[tuple[float, dict[str, object]]] = []

    class CountingStore(Store):
        def save_status(self, section: str, data: dict[str, object]) -> None:
            writes.append((time.monotonic(), data))
            super().save_status(section, data)

    monkeypatch.setattr(Uplink, "_open_store", lambda self: CountingStore(self.db_path, clock=self.clock))
    settings = UplinkSettings(backoff_min_s=0.02, backoff_max_s=0.05, status_interval_s=0.5)
    with running_uplink(tmp_path / "buf.db", f"mqtt://127.0.0.1:{free_port()}", settings=settings) as up:
        deadline = time.monotonic() + 20
        while up.state()["reconnects"] < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert up.state()["reconnects"] >= 20  # many attempts ...
    times = [t for t, _ in writes[:-1]]  # (the last one is the final write at stop)
    assert len(times) <= 5  # ... but at most one status write per 0.5 s
    assert all(b - a >= 0.45 for a, b in itertools.pairwise(times))
    final = writes[-1][1]
    assert final["state"] == "stopped"
    assert final["broker"].startswith("127.0.0.1:")  # type: ignore[union-attr]
    assert "cannot connect" in str(final["last_error"])


def test_state_while_online(tmp_path: Path, mosquitto: Mosquitto) -> None:
    with running_uplink(tmp_path / "buf.db", mosquitto.url) as up:
        assert up.wait_connected(5)
        st = up.state()
    assert (st["state"], st["connected"], st["broker"], st["inflight"], st["last_error"]) == (
        "online", True, f"127.0.0.1:{mosquitto.port}", 0, None)


def test_a_broker_that_stops_answering_is_given_up_after_the_ack_timeout(tmp_path: Path, mosquitto: Mosquitto) -> None:
    db = tmp_path / "buf.db"
    fill(db, [])
    counters = Counters()
    settings = UplinkSettings(ack_timeout_s=0.5, backoff_min_s=0.05, backoff_max_s=0.2)
    assert mosquitto.proc is not None
    readings = make_readings(600)
    with subscriber(mosquitto.port) as sub, \
            running_uplink(db, mosquitto.url, settings=settings, counters=counters, connect_timeout_s=0.5) as up:
        assert up.wait_connected(5)
        os.kill(mosquitto.proc.pid, signal.SIGSTOP)
        try:
            fill(db, readings)
            deadline = time.monotonic() + 5
            while counters.snapshot()["uplink_reconnects"] < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert counters.snapshot()["publish_errors"] == 2  # the two batches given up on
            assert counters.snapshot()["uplink_reconnects"] >= 1
            assert buffered(db) == 600
        finally:
            os.kill(mosquitto.proc.pid, signal.SIGCONT)
        assert up.wait_drained(10)
        assert sub.wait(lambda s: set(s.received()) == keys(readings))
    assert counters.snapshot()["readings_acked"] == 600
