"""Messages the broker drops (issue 17, item 6): Mosquitto's $SYS drop counter read by the receiver, as a metric, in
`cloud-ingest status` and in the alert rules. Against a real Mosquitto 2.0.11 with a queue of 10 and sys_interval 1."""

from __future__ import annotations

import logging
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from test_receiver_observability import RULES, exposed_names
from test_receiver_support import (
    Publisher,
    broker_settings,
    create_db,
    edge_batch,
    make_config,
    now_ns,
    reading,
    start_receiver,
    stored,
    wait_until,
)

from cloud import broker_sys, status
from cloud.broker_sys import DROPPED_TOPIC, UPTIME_TOPIC, BrokerDrops
from cloud.metrics import Metrics

MS = 1_000_000
QUEUE = 10
DROPPED = "cloud_ingest_broker_dropped_messages_total"


def small_queue_broker(factory: Any, workdir: Path, *extra: str) -> Any:
    # The shipped snippet, then a queue of 10 (Mosquitto takes the last value) and $SYS every second.
    return factory(workdir, extra=[*broker_settings(), f"max_queued_messages {QUEUE}", "sys_interval 1",
                                   *extra]).start()


def publish_batches(port: int, first_seq: int, n: int) -> None:
    t0 = now_ns() - 60_000 * MS
    pub = Publisher(port)
    try:
        pub.publish([("edge-gw/gw-d/batch", edge_batch("gw-d", s, [reading(1, s, t0 + s * MS)]))
                     for s in range(first_seq, first_seq + n)])
    finally:
        pub.close()


def run_until_drained(cfg: Any, influxd: Any, want_stored: int, want_dropped: int) -> status.Status:
    rx = start_receiver(cfg)
    try:
        wait_until(lambda: len(stored(influxd)) == want_stored, 30, f"{want_stored} points stored")
        wait_until(lambda: rx.metric(DROPPED) == want_dropped, 15, f"{want_dropped} drops counted")
        wait_until(lambda: rx.metric("cloud_ingest_broker_sys_ok") == 1, 5, "$SYS ok")
    finally:
        rx.stop()
    assert rx.metric(DROPPED) == want_dropped  # nothing more came while it drained
    got = status.read(Path(cfg.status.file))
    assert got is not None
    return got


def test_drops_while_the_receiver_is_down_are_counted_exactly(mosquitto_factory: Any, influxd: Any,
                                                              tmp_path: Path) -> None:
    broker = small_queue_broker(mosquitto_factory, tmp_path / "mq")
    cfg = make_config(broker.port, create_db(influxd), tmp_path, batch__max_interval="0.2",
                      rollups__enabled=False)
    # First start: the session exists, nothing was dropped yet.
    st = run_until_drained(cfg, influxd, 0, 0)
    assert (st.broker_sys, st.broker_dropped, st.broker_dropped_raw) == ("ok", 0, 0)

    # Receiver down, 30 batches: the broker queues 10 for its session and drops 20 (the gateway got PUBACKs).
    publish_batches(broker.port, 1, 30)
    st = run_until_drained(cfg, influxd, QUEUE, 20)
    assert (st.broker_dropped, st.broker_dropped_raw) == (20, 20)
    text = status.render(st, interval_s=0.2, offline_after_s=300)
    assert "broker drops:   DROPPING: 20 messages dropped by the broker (full session queues), the last seen " \
        in text
    assert 0 < now_ns() - st.broker_last_drop_ns < 30 * 10**9
    last_drop = st.broker_last_drop_ns

    # A restart with no new drops counts none again; the metric starts at the lifetime total (no counter reset).
    st = run_until_drained(cfg, influxd, QUEUE, 20)
    assert (st.broker_dropped, st.broker_last_drop_ns) == (20, last_drop)

    # The broker restarts (its counter starts at 0 again), then drops 5 of 15: the lifetime count goes on, 25.
    broker.restart()
    publish_batches(broker.port, 31, 15)
    st = run_until_drained(cfg, influxd, 2 * QUEUE, 25)
    assert (st.broker_dropped, st.broker_dropped_raw) == (25, 5)


def test_sys_denied_by_the_acl_logs_once(mosquitto_factory: Any, influxd: Any, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(broker_sys, "SILENT_AFTER_S", 1.0)
    work = tmp_path / "mq"
    work.mkdir()
    (work / "acl").write_text("user cloud-ingest\ntopic read edge-gw/#\n")  # the deployed ACL has no $SYS line
    (work / "passwd").write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(work / "passwd"), "cloud-ingest", "pw"], check=True)
    broker = mosquitto_factory(work, anonymous=False, extra=[
        *broker_settings(), "sys_interval 1", f"password_file {work / 'passwd'}", f"acl_file {work / 'acl'}"])
    broker.start()
    cfg = make_config(broker.port, create_db(influxd), tmp_path, batch__max_interval="0.2", rollups__enabled=False,
                      mqtt__url=f"mqtt://cloud-ingest:pw@127.0.0.1:{broker.port}")
    caplog.set_level(logging.WARNING, logger="cloud.receiver")
    rx = start_receiver(cfg)
    try:
        wait_until(lambda: rx.receiver.counts.broker_sys == "unavailable", 10, "$SYS found silent")
        wait_until(lambda: len([r for r in caplog.records if "broker drops" in r.getMessage()]) >= 1, 5, "warning")
        time.sleep(1.0)  # five more status intervals of silence: still one warning
        assert rx.receiver.input.connected
        assert rx.metric("cloud_ingest_broker_sys_ok") == 0
        assert rx.metric(DROPPED) == 0
    finally:
        rx.stop()
    assert [r.getMessage() for r in caplog.records if "broker drops" in r.getMessage()] == [
        f"cannot count the messages the broker drops: no {DROPPED_TOPIC} within 1 s of subscribing. If it is "
        f"Mosquitto, let the receiver's user read them (ACL: `topic read {DROPPED_TOPIC}` and `topic read "
        f"{UPTIME_TOPIC}`) and keep sys_interval above 0"]
    st = status.read(Path(cfg.status.file))
    assert st is not None and st.broker_sys == "unavailable" and st.broker_dropped == 0
    assert "broker drops:   unknown: no $SYS counters from the broker (ACL?)" in status.render(
        st, interval_s=0.2, offline_after_s=300)


class Clock:
    def __init__(self) -> None:
        self.ns = 1_700_000_000 * 10**9

    def __call__(self) -> int:
        return self.ns

    def step(self, s: float) -> None:
        self.ns += int(s * 1e9)


def reader(counts: status.Status, clock: Clock) -> tuple[BrokerDrops, list[int]]:
    seen: list[int] = []
    drops = BrokerDrops(counts, on_drops=seen.append, clock=clock)
    drops.subscribed()
    return drops, seen


def feed(drops: BrokerDrops, dropped: int, uptime_s: int) -> None:
    drops.message(DROPPED_TOPIC, str(dropped).encode())
    drops.message(UPTIME_TOPIC, f"{uptime_s} seconds".encode())


def test_counting_across_receiver_and_broker_restarts() -> None:
    clock, counts = Clock(), status.Status()
    drops, seen = reader(counts, clock)
    feed(drops, 7, 100)  # the first look counts everything since the broker started
    assert (seen, counts.broker_dropped, counts.broker_sys) == ([7], 7, "ok")
    clock.step(10)
    drops.message(UPTIME_TOPIC, b"110 seconds")
    drops.message(DROPPED_TOPIC, b"9")
    assert (seen, counts.broker_dropped, counts.broker_uptime_s) == ([7, 2], 9, 110)

    # Receiver restart (a new reader on the restored counts) an hour later; the broker ran on and dropped 1 more.
    clock.step(3600)
    drops, seen = reader(status.Status.from_json(counts.to_json()), clock)
    feed(drops, 10, 3710)
    assert (seen, drops.counts.broker_dropped) == ([1], 10)

    # The broker restarted while the receiver was away and has since dropped more than its old counter: only the
    # uptime tells (1000 s up, but 3 h passed since it was 3710 s up): all 12 are new.
    counts = drops.counts
    clock.step(3 * 3600)
    drops, seen = reader(counts, clock)
    feed(drops, 12, 1000)
    assert (seen, counts.broker_dropped, counts.broker_dropped_raw) == ([12], 22, 12)

    # A retained uptime up to RESTART_SLACK_S stale is the same broker, not a restart.
    clock.step(100)
    drops, seen = reader(counts, clock)
    feed(drops, 12, 1000 + 100 - 50)
    assert (seen, counts.broker_dropped) == ([], 22)

    # Within one connection a lower counter is a restart too (cannot really happen; the connection would drop).
    feed(drops, 3, 1060)
    assert (seen, counts.broker_dropped) == ([3], 25)


def test_counter_before_uptime_waits_and_junk_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    clock, counts = Clock(), status.Status(broker_dropped=4, broker_dropped_raw=4, broker_uptime_s=50,
                                           broker_seen_ns=Clock().ns)
    drops, seen = reader(counts, clock)
    clock.step(5)
    drops.message(DROPPED_TOPIC, b"6")
    assert seen == [] and counts.broker_dropped_raw == 4  # not judged before this broker's uptime is known
    drops.message(UPTIME_TOPIC, b"55 seconds")
    assert (seen, counts.broker_dropped) == ([2], 6)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cloud.receiver"):
        drops.message(DROPPED_TOPIC, b"lots")
        drops.message(UPTIME_TOPIC, b"")
    assert counts.broker_dropped == 6 and len(caplog.records) == 1  # logged once


def test_silence_and_refusal_log_once(caplog: pytest.LogCaptureFixture) -> None:
    clock, counts = Clock(), status.Status()
    drops, _ = reader(counts, clock)
    with caplog.at_level(logging.WARNING, logger="cloud.receiver"):
        clock.step(broker_sys.SILENT_AFTER_S - 1)
        drops.check()
        assert counts.broker_sys == "unknown"
        clock.step(1)
        drops.check()
        drops.subscribed()  # a reconnect
        clock.step(broker_sys.SILENT_AFTER_S)
        drops.check()
        drops.refused([0x87])
    assert counts.broker_sys == "unavailable" and counts.broker_dropped_raw == -1
    assert len(caplog.records) == 1
    # Counters that come later (the ACL was fixed and the receiver reconnected) make it ok again.
    drops.subscribed()
    feed(drops, 0, 5)
    assert counts.broker_sys == "ok"


def test_the_metric_starts_at_the_lifetime_total(tmp_path: Path) -> None:
    from cloud.monitor import Monitor

    path = tmp_path / "status.json"
    status.write(path, status.Status(broker_dropped=20, broker_dropped_raw=20, broker_sys="ok"))
    m = Metrics()

    class Sink:
        state, last_error, failed_attempts = "ok", None, 0

    mon = Monitor(m, client_id="x", sink=Sink(), status_file=path)
    assert m.registry.get_sample_value(DROPPED) == 20
    assert mon.counts.broker_sys == "unknown"  # live state is not restored


def test_alert_rules_cover_broker_drops() -> None:
    text = RULES.read_text()
    assert {DROPPED.removesuffix("_total"), "cloud_ingest_broker_sys_ok"} <= {
        n.removesuffix("_total") for n in re.findall(r"\bcloud_ingest_[a-z_]+", text)}
    assert set(re.findall(r"\bcloud_ingest_[a-z_]+", text)) <= exposed_names(Metrics())
    assert {"CloudIngestBrokerDropping", "CloudIngestBrokerDropsUnknown"} <= set(
        re.findall(r"- alert: (\w+)", text))


def test_drops_while_the_database_is_down_add_up(mosquitto_factory: Any, influxd: Any, tmp_path: Path) -> None:
    """The receiver connected, its database down: the broker sends the window, queues 10 and drops the rest. Every
    batch published is either stored or counted as dropped. The receiver reads nothing while it holds back (the
    window is full), $SYS included, so it counts these drops once the database is back and it reads again."""
    broker = small_queue_broker(mosquitto_factory, tmp_path / "mq")
    window, published = 50, 300
    cfg = make_config(broker.port, create_db(influxd), tmp_path, batch__max_interval="0.2", rollups__enabled=False,
                      mqtt__receive_maximum=window)
    rx = start_receiver(cfg)
    try:
        wait_until(lambda: rx.receiver.counts.broker_sys == "ok", 10, "$SYS seen")
        influxd.stop()
        publish_batches(broker.port, 1, published)
        wait_until(lambda: rx.receiver.input.inflight >= window, 15, "the window full")
        influxd.start()
        wait_until(lambda: len(stored(influxd)) + rx.metric(DROPPED) == published, 60, "stored + dropped")
        time.sleep(2)  # two more $SYS intervals: nothing more
        n_stored, n_dropped = len(stored(influxd)), int(rx.metric(DROPPED))
    finally:
        rx.stop()
    print(f"published {published}, stored {n_stored}, dropped {n_dropped}")
    # Measured: exactly the window and the queue stored (no PUBACK flowed, so Mosquitto kept to the window).
    assert (n_stored, n_dropped) == (window + QUEUE, published - window - QUEUE)
