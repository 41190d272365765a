"""A gateway's clock steps (issue 17, item 4), on the real pipeline with exact sets.

The gateway's clock is stepped in its own process with the test-only knob EDGE_GW_TEST_CLOCK_STEPS (edge/clock.py),
set for the `edge-gw run` subprocess only; the host's clock is not touched.

- 17-clock-step-ahead: a gateway's clock steps an hour ahead mid-run, then back. Every reading with a valid time is
  stored; each reading from the future is refused on its own by cloud-ingest, dead-lettered (one record with the
  reading) and counted; the batches are confirmed, so the gateway deletes them; nothing else is lost.
- 18-skewed-gateways: two gateways hear the same tags, one an hour behind. Dedup keys on what the tag says, so each
  measurement is stored once.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator

import faults_pipeline
import paho.mqtt.client as mqtt
import pytest
from faults_pipeline import Outcome, Pipeline, Point, collected, compare_shared, wait_until
from paho.mqtt.enums import CallbackAPIVersion

from edge.clock import TEST_STEPS_ENV

Record = Callable[[Outcome], None]
S = 1_000_000_000

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def clock_steps(monkeypatch: pytest.MonkeyPatch, steps: str) -> Iterator[None]:
    """Gateways started inside get EDGE_GW_TEST_CLOCK_STEPS=steps (clean_env() drops every other EDGE_GW_ var)."""
    base = faults_pipeline.clean_env
    with monkeypatch.context() as m:
        m.setattr(faults_pipeline, "clean_env", lambda: {**base(), TEST_STEPS_ENV: steps})
        yield


class DeadLetters:
    """A persistent-session subscriber to the dead-letter topic: every record, as (mac, sequence, time_ns) of the
    reading it carries, in the order they came."""

    def __init__(self, port: int) -> None:
        self.records: list[dict[str, object]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fault-dlq", clean_session=False)
        self.client.max_inflight_messages_set(1000)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("edge-gw/dlq", qos=1)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise TimeoutError("dead-letter subscriber did not subscribe")

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.records.append(json.loads(msg.payload))

    def readings(self) -> list[Point]:
        with self.lock:
            out = []
            for rec in self.records:
                assert rec["stage"] == "reading", rec
                r = json.loads(str(rec["payload"]))
                out.append((r["mac"], r["fields"]["measurement_sequence_number"], r["time_ns"]))
            return out

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_a_gateway_clock_steps_an_hour_ahead_then_back(pipeline: Pipeline, record: Record,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    started = time.monotonic()
    dlq = DeadLetters(pipeline.broker.port)
    gw = pipeline.gateway("gw-17", ledger=True)
    with clock_steps(monkeypatch, "4:3600,9:0"):  # right for 4 s, an hour ahead for 5 s, then right again
        gw.start(seed=171, tags=20, rate=1000)
    wait_until(lambda: len(dlq.readings()) >= 500, 60, "readings from the future dead-lettered")
    wait_until(lambda: gw.status()["counters"]["clock_steps_back"] == 1, 60, "the step back")
    at_back = collected(pipeline, "gw-17")
    wait_until(lambda: collected(pipeline, "gw-17") >= at_back + 1000, 60, "readings after the step back")
    assert pipeline.receiver is not None
    committed = pipeline.settle()["gw-17"]  # the ledger: every reading the gateway committed
    counters = gw.status()["counters"]
    # Readings an hour ahead of the real time: whatever the run's length, none of the others comes near.
    limit = time.time_ns() + 1800 * S
    future = {pt for pt in committed if pt[2] > limit}
    valid = committed - future
    with contextlib.suppress(TimeoutError):
        pipeline.wait_stored(len(valid))
    wait_until(lambda: set(dlq.readings()) >= future, 30, "every refused reading's dead letter")
    pipeline.wait_receiver_idle()
    stored = pipeline.stored()
    have = set(stored)
    want = {("gw-17", *pt) for pt in valid}
    dead = dlq.readings()
    rx = pipeline.receiver.status()
    outcome = Outcome("17-clock-step-ahead", len(committed), len(stored), len(future), lost=len(want - have),
                      duplicated=len(have - want) + len(stored) - len(have), seconds=time.monotonic() - started)
    outcome.note = (f"{len(future)} readings taken while the gateway's clock was an hour ahead were refused one by "
                    f"one (shown as dropped): {len(dead)} dead-letter records for {len(set(dead))} readings, "
                    f"refused_readings {rx.get('refused_readings')} at the receiver; the gateway counted "
                    f"{counters['clock_steps_ahead']} step ahead and {counters['clock_steps_back']} back")
    record(outcome)
    if outcome.lost or outcome.duplicated:
        pipeline.explain({"gw-17": valid}, stored)
    dlq.close()
    assert (outcome.lost, outcome.duplicated) == (0, 0), outcome
    assert outcome.stored == len(valid)
    assert len(future) >= 500 and len(valid) >= 1500
    # Each refused reading is dead-lettered, and nothing else is: a batch re-sent for want of a confirmation
    # would dead-letter its refused readings again, so every record is counted, and every one is a future reading.
    assert set(dead) == future
    assert rx["refused_readings"] == len(dead) == rx["dead_letters"]
    assert (counters["clock_steps_ahead"], counters["clock_steps_back"]) == (1, 1)
    # The gateway deleted the refused readings too: their batches were confirmed.
    assert gw.buffered() == 0


def test_two_gateways_hear_the_same_tags_one_an_hour_behind(pipeline: Pipeline, record: Record,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    started = time.monotonic()
    a, b = pipeline.gateway("gw-18a"), pipeline.gateway("gw-18b")
    a.start(seed=181, tags=20, rate=1000)
    with clock_steps(monkeypatch, "0:-3600"):
        b.start(seed=181, tags=20, rate=1000)
    wait_until(lambda: min(collected(pipeline, "gw-18a"), collected(pipeline, "gw-18b")) >= 3000, 60,
               "both gateways forwarding")
    committed = pipeline.settle()
    measurements = {(mac, seq) for points in committed.values() for mac, seq, _t in points}
    assert len(measurements) < 0.6 * sum(len(v) for v in committed.values())  # mostly the same measurements
    # gw-18b's copies carry times an hour before gw-18a's.
    times = {g: {(mac, seq): t for mac, seq, t in pts} for g, pts in committed.items()}
    both = times["gw-18a"].keys() & times["gw-18b"].keys()
    skews = sorted((times["gw-18a"][k] - times["gw-18b"][k]) / S for k in both)
    assert 3590 < skews[len(skews) // 2] < 3610
    with contextlib.suppress(TimeoutError):
        pipeline.wait_stored(len(measurements))
    stored = pipeline.stored()
    outcome = compare_shared("18-skewed-gateways", committed, stored, started)
    by_gw = {g: sum(1 for row in stored if row[0] == g) for g in ("gw-18a", "gw-18b")}
    outcome.note = (f"{outcome.sent} readings committed by the two gateways are {len(measurements)} measurements "
                    f"({len(both)} heard by both, median skew {skews[len(skews) // 2]:.0f} s); stored "
                    f"{by_gw['gw-18a']} under gw-18a and {by_gw['gw-18b']} under gw-18b")
    record(outcome)
    if outcome.lost or outcome.duplicated:
        pipeline.explain(committed, stored)
    assert (outcome.lost, outcome.duplicated) == (0, 0), outcome
    assert outcome.stored == len(measurements)
    assert {g for g, *_ in stored} <= {"gw-18a", "gw-18b"}
