"""The receiver's counts, its Prometheus metrics and its status file (cloud/status.py), fed by the input and the
write path. Gauges are set after each write and by the status loop: per message they would cost more than the work.
So are the two counters every MQTT message moves (messages and readings received): an increment of a Prometheus
counter takes a lock, 0.5-0.8 µs, about 5 % of the receiver's CPU per one-reading message. They are counted in plain
ints here and added to Prometheus with the gauges; the status file is written from the running counts as before.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cloud import status
from cloud.broker_sys import BrokerDrops
from cloud.metrics import Metrics
from cloud.model import Parsed
from core.ratelog import RateLimitedLog

log = logging.getLogger("cloud.receiver")
# A flood of bad input is counted in full (metrics, status); the log says so every few seconds, not per record.
_dead_letters = RateLimitedLog(log, 10.0)


class _Batch(Protocol):
    reason: str
    n_points: int

    def __len__(self) -> int: ...


class _SinkState(Protocol):
    @property
    def state(self) -> str: ...

    @property
    def last_error(self) -> str | None: ...

    @property
    def failed_attempts(self) -> int: ...


@dataclass(slots=True)
class Live:
    """What the receiver holds right now (the rest of the status is running totals)."""

    mqtt_connected: bool = False
    queue_batches: int = 0
    queue_points: int = 0
    inflight_messages: int = 0
    input: str = "mqtt"  # or "kafka"
    kafka_partitions: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)


class Monitor:
    def __init__(self, metrics: Metrics, *, client_id: str, sink: _SinkState, status_file: Path | None = None,
                 clock: Callable[[], int] = time.time_ns,
                 format_of: Callable[[str], str | None] = lambda topic: None) -> None:
        self.metrics = metrics
        self.client_id = client_id
        self.sink = sink
        self.status_file = status_file
        self._clock = clock
        self.counts = status.Status()  # the running totals; snapshot() adds the live state
        self.last_write_ns = 0
        self.last_batch_points = 0
        self.started_ns = 0
        self._received_by_topic: dict[str, Any] = {}  # topic -> its counter child (of its format)
        self._unexported: dict[str, int] = {}  # topic -> messages received since the last export
        self._format_of = format_of  # a topic's input format, the label of messages_received
        self._unexported_readings = 0
        self._status_failed = False
        self._failed_attempts = 0
        self._restore_counts()
        # Starts at the lifetime total, not 0: drops counted at start-up (they happened while the receiver was down)
        # then show as an increase, not hidden in a counter reset.
        metrics.broker_dropped.inc(self.counts.broker_dropped)
        self.broker = BrokerDrops(self.counts, on_drops=metrics.broker_dropped.inc, clock=clock)

    # ---- what happened ----------------------------------------------------------------------------------------

    def held_back(self) -> None:
        self.counts.held_back_reconnects += 1
        self.metrics.held_back.inc()

    def received(self, topic: str, dup: bool) -> None:
        if dup:
            self.counts.redeliveries += 1
            self.metrics.redeliveries.inc()
        self.counts.received_messages += 1
        # Counted per topic, and turned into the per-format counter at the export: labels() and the format lookup
        # cost more than the rest of the bookkeeping (Ruuvi Gateway traffic has a topic per tag).
        try:
            self._unexported[topic] += 1
        except KeyError:
            self._unexported[topic] = 1

    def received_http(self) -> None:
        """One HTTP request body handed to the parser (its readings are counted by parsed() and http_readings())."""
        self.counts.received_messages += 1
        self.metrics.messages_received.labels("ruuvi_gateway_http").inc()

    def http_readings(self, n: int) -> None:
        self.counts.http_readings += n
        self.metrics.http_readings.inc(n)

    def http_answered(self, code: int) -> None:
        key = str(code)
        self.counts.http_requests[key] = self.counts.http_requests.get(key, 0) + 1
        self.metrics.http_requests.labels(key).inc()

    def records(self, records: int, readings: int) -> None:
        """Kafka records with this many readings in all, counted once per fetch (Metrics.kafka_records counts
        records; a poison record has no readings)."""
        self.counts.received_messages += records
        self.counts.received_readings += readings
        self.metrics.readings_received.inc(readings)

    def connection(self, up: bool) -> None:
        self.metrics.mqtt_connected.set(1 if up else 0)

    def parsed(self, parsed: Parsed, now_ns: int) -> None:
        n = len(parsed.points) + len(parsed.refused)
        self.counts.received_readings += n
        self._unexported_readings += n
        name = parsed.gateway or (parsed.status.gateway if parsed.status else None)
        if name is None:
            return
        gw = self.counts.gateways.get(name)
        if gw is None:
            gw = self.counts.gateways[name] = status.GatewayState()
        gw.last_seen_ns = now_ns
        gw.readings += n
        if parsed.status is not None:
            gw.state, gw.state_ns = parsed.status.state, parsed.status.time_ns

    def duplicates(self, by_gateway: dict[str, int], resent: int = 0) -> None:
        """Points dedup dropped: copies another gateway heard (by gateway), and points this gateway sent again."""
        if resent:
            self.metrics.resent_points.inc(resent)
            self.counts.resent_points += resent
        for gw, n in by_gateway.items():
            self.metrics.duplicates.labels(gw).inc(n)
            self.counts.duplicates += n
            if gw in self.counts.gateways:
                self.counts.gateways[gw].duplicates += n

    def written(self, n: int, newest_ns: int, now_ns: int) -> None:
        m = self.metrics
        self.counts.written += n
        m.points_written.inc(n)
        lag = max(0.0, (now_ns - newest_ns) / 1e9)
        m.lag_seconds.observe(lag)
        m.lag_last.set(lag)
        self.last_write_ns = now_ns
        m.last_write.set(now_ns / 1e9)

    def dead_letter(self, stage: str, topic: str, reason: str) -> None:
        self.counts.dead_letters += 1
        self.metrics.dead_letters.labels(stage).inc()
        _dead_letters.warning("dead letter (%s) from %s: %s", stage, topic, reason[:300])

    def refused(self, kind: str) -> None:
        """One reading refused on its own (its dead letter is counted by dead_letter())."""
        self.counts.refused_readings += 1
        self.metrics.readings_refused.labels(kind).inc()

    def confirmed(self, messages: int, seqs: int) -> None:
        self.counts.confirmations += messages
        self.counts.confirmed_seqs += seqs
        self.metrics.confirmations.inc(messages)
        self.metrics.confirmed_seqs.inc(seqs)

    def batch_written(self, batch: _Batch, points_after_dedup: int, seconds: float) -> None:
        m = self.metrics
        self.last_batch_points = points_after_dedup
        m.batches.labels(batch.reason).inc()
        m.batch_points.observe(batch.n_points)
        m.batch_messages.observe(len(batch))
        m.write_seconds.observe(seconds)

    # ---- gauges and the status file ---------------------------------------------------------------------------

    def update_gauges(self, live: Live) -> None:
        m = self.metrics
        self._export_counts()
        for name, gw in self.counts.gateways.items():
            m.gateway_last_seen.labels(name).set(gw.last_seen_ns / 1e9)
            m.gateway_online.labels(name).set(0 if gw.state == "offline" else 1)
        m.queue_batches.set(live.queue_batches)
        m.queue_points.set(live.queue_points)
        m.inflight.set(live.inflight_messages)
        m.mqtt_connected.set(1 if live.mqtt_connected else 0)
        m.broker_sys_ok.set(1 if self.counts.broker_sys == "ok" else 0)
        m.broker_last_drop.set(self.counts.broker_last_drop_ns / 1e9)

    def _export_counts(self) -> None:
        unexported, self._unexported = self._unexported, {}
        for topic, n in unexported.items():
            child = self._received_by_topic.get(topic)
            if child is None:
                if len(self._received_by_topic) > 50_000:
                    self._received_by_topic.clear()
                format_name = self._format_of(topic) or "unknown"
                child = self._received_by_topic[topic] = self.metrics.messages_received.labels(format_name)
            child.inc(n)
        if self._unexported_readings:
            self.metrics.readings_received.inc(self._unexported_readings)
            self._unexported_readings = 0

    def snapshot(self, live: Live) -> status.Status:
        return dataclasses.replace(
            self.counts,
            client_id=self.client_id,
            pid=os.getpid(),
            started_ns=self.started_ns,
            updated_ns=self._clock(),
            sink_state=str(self.sink.state),
            sink_error=str(self.sink.last_error or ""),
            sink_name=str(getattr(self.sink, "name", "")),  # only a sink that is not the database names itself
            sink_counts=dict(getattr(self.sink, "counts", {})),
            last_write_ns=self.last_write_ns,
            last_batch_points=self.last_batch_points,
            **dataclasses.asdict(live),
        )

    def _restore_counts(self) -> None:
        """Totals continue from the previous run's status file, so `status` shows lifetime counts."""
        if self.status_file is None:
            return
        try:
            prev = status.read(self.status_file)
        except (OSError, ValueError):
            return
        if prev is not None:
            self.counts = prev

    def write_status(self, live: Live) -> None:
        self.metrics.sink_ok.set(0 if self.sink.state == "retrying" else 1)
        if self.status_file is None:
            return
        try:
            status.write(self.status_file, self.snapshot(live))
        except OSError as e:
            if not self._status_failed:  # once, not every interval
                log.warning("cannot write the status file %s: %s", self.status_file, e)
            self._status_failed = True
        else:
            self._status_failed = False

    async def run(self, interval_s: float, live: Callable[[], Live]) -> None:
        """The status loop: sink errors, gauges and the status file, every interval."""
        while True:
            failed = int(getattr(self.sink, "failed_attempts", 0))
            if failed > self._failed_attempts:
                self.metrics.write_errors.inc(failed - self._failed_attempts)
                self._failed_attempts = failed
            self.broker.check()
            now = live()
            self.update_gauges(now)
            self.write_status(now)
            await asyncio.sleep(interval_s)
