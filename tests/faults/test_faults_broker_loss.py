"""The broker loses what it acknowledged: five ways (issue 10). The gateway deletes only what the cloud confirmed, so
each ends with committed == stored, exactly, all the same.

The collector loses those messages too, so here the committed set comes from each gateway's ledger table (see
Gateway.add_ledger). Each scenario first shows that the broker really lost readings: the gateway had to send some
again because their confirmation never came (`readings_resent` in `edge-gw status --json`), and reports how many.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest
from faults_pipeline import Gateway, Outcome, Pipeline, assert_exact, finish, wait_until
from servers import free_port

Record = Callable[[Outcome], None]
MakePipeline = Callable[..., Pipeline]

pytestmark = pytest.mark.slow


def resent(gw: Gateway) -> int:
    return int(gw.status()["counters"]["readings_resent"])


def resent_note(gws: list[Gateway], before: dict[str, int] | None = None) -> Callable[[object], str]:
    counts = {gw.name: resent(gw) - (before or {}).get(gw.name, 0) for gw in gws}
    return lambda _committed: "sent again for want of a confirmation: " + ", ".join(
        f"{name} {n}" for name, n in counts.items())


def build_backlog(gw: Gateway, adverts: int, seed: int) -> int:
    """Readings buffered with no broker to reach (about one per 2.5 adverts); returns how many were committed."""
    proc = gw.start(seed=seed, tags=40, rate=0, mqtt_url=f"mqtt://127.0.0.1:{free_port()}", count=adverts)
    assert proc.wait(120) == 1, gw.tail()
    assert gw.buffered() == gw.committed() > adverts // 3
    return gw.committed()


def test_receiver_starts_for_the_first_time_after_the_drain(make_pipeline: MakePipeline, record: Record) -> None:
    started = time.monotonic()
    p = make_pipeline(receiver=False)
    gw = p.gateway("gw-late", ledger=True)
    gw.start(seed=81, tags=20, rate=1500)
    assert p.collector is not None
    wait_until(lambda: p.collector.count("gw-late") >= 3000, 60, "3000 readings through the broker")  # type: ignore[union-attr]
    # Every batch was acknowledged by the broker and dropped (no session to queue it for): nothing is deleted.
    assert gw.buffered() == gw.committed() >= 3000
    assert resent(gw) > 0
    assert p.count_stored() == 0
    assert p.receiver is not None
    p.receiver.start()
    wait_until(lambda: p.count_stored() >= 3000, 60, "the re-sent readings stored")
    outcome, _ = finish(p, record, "8-receiver-starts-late", started, note=resent_note([gw]))
    assert_exact(outcome)


def pause_receiver_and_restart_broker(p: Pipeline, gw: Gateway, *, kill: bool) -> None:
    """Mid-drain: pause the receiver so the broker queues for it, then restart (or kill -9 and start) the broker."""
    assert p.receiver is not None and p.receiver.proc is not None and p.collector is not None
    wait_until(lambda: p.count_stored() >= 2000, 60, "the drain under way")
    os.kill(p.receiver.proc.pid, signal.SIGSTOP)
    try:
        at_pause = p.collector.count(gw.name)
        wait_until(lambda: p.collector.count(gw.name) >= at_pause + 3000, 60,  # type: ignore[union-attr]
                   "the broker queueing for the paused receiver")
        if kill:
            p.broker.kill()
        else:
            p.broker.stop()
        p.broker.start()
    finally:
        os.kill(p.receiver.proc.pid, signal.SIGCONT)


@pytest.mark.parametrize(("scenario", "kill", "broker_extra"), [
    ("9-broker-restart-no-persistence", False, ["persistence false"]),
    ("10-broker-kill9", True, []),  # the shipped autosave_interval 5 (cloud/mosquitto/cloud-ingest.conf)
])
def test_broker_loses_its_queue_mid_drain(make_pipeline: MakePipeline, record: Record, scenario: str, kill: bool,
                                          broker_extra: list[str]) -> None:
    started = time.monotonic()
    p = make_pipeline(broker_extra)
    gw = p.gateway("gw-drain", ledger=True, **{"uplink.backfill_rate": "4000.0"})
    backlog = build_backlog(gw, 50_000, seed=90 + kill)
    gw.start(seed=92 + kill, tags=10, rate=300)
    pause_receiver_and_restart_broker(p, gw, kill=kill)
    wait_until(lambda: p.count_stored() >= backlog, 120, "the backlog stored")
    outcome, _ = finish(p, record, scenario, started, note=resent_note([gw]))
    assert resent(gw) > 0, "the broker lost nothing: the scenario did not happen"
    assert_exact(outcome)


def test_receiver_away_longer_than_its_session_expiry(make_pipeline: MakePipeline, record: Record) -> None:
    started = time.monotonic()
    p = make_pipeline(receiver_settings=["mqtt.session_expiry=60s"])
    gw = p.gateway("gw-expiry", ledger=True)
    gw.start(seed=111, tags=20, rate=500)
    wait_until(lambda: p.count_stored() >= 500, 60, "readings stored")
    assert p.receiver is not None
    p.receiver.stop()
    time.sleep(65)  # the broker ends the session 60 s after the disconnect, and drops its queue with it
    p.receiver.start()
    wait_until(lambda: gw.committed() - p.count_stored() < 2000, 120, "the gap filled")
    outcome, _ = finish(p, record, "11-receiver-session-expired", started, note=resent_note([gw]))
    assert resent(gw) > 0
    assert_exact(outcome)


def test_broker_queue_limit_exceeded(make_pipeline: MakePipeline, record: Record) -> None:
    started = time.monotonic()
    p = make_pipeline(["max_queued_messages 100"])
    gw = p.gateway("gw-queue", ledger=True, **{"uplink.batch_max_readings": "50"})
    gw.start(seed=121, tags=20, rate=1500)
    wait_until(lambda: p.count_stored() >= 500, 60, "readings stored")
    assert p.receiver is not None
    p.receiver.stop()
    time.sleep(8)  # about 160 batch messages, and the re-sends: well past 100
    p.receiver.start()
    outcome, _ = finish(p, record, "12-broker-queue-limit", started, note=resent_note([gw]))
    assert resent(gw) > 0
    assert_exact(outcome)
