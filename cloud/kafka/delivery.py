"""Produce records and wait, in asyncio, until Kafka has acknowledged every one (docs/kafka.md "The bridge").

librdkafka reports deliveries in the thread that calls `poll()`. A thread of ours polls; each record's report
counts down its round, and only the round's last report wakes the event loop (one `call_soon_threadsafe` per
write, not per record: at 100k records/s the per-record wake-ups would cost more than the produce).

What `deliver()` guarantees: it returns only when every record is acknowledged (`acks=all`) or refused for good.
- A record whose delivery failed for a reason that can pass (the broker down, a leader change, `message.timeout.ms`
  expired while it waited in librdkafka's queue) is produced again, after a backoff, in its original order, until
  Kafka takes it. Kafka being away costs time, never records.
- A record Kafka refuses for what it is (too large, invalid) is returned as refused: the write path dead-letters it.
- An authorization or authentication failure raises SinkAuthError: retrying cannot fix it.
- A fatal producer error (the idempotent producer lost its state) purges that producer and opens a new one; the
  records it had not delivered are produced again through the new one.
Produced again means possibly twice: a record whose acknowledgement was lost, not the record itself, is written a
second time. The consumer side de-duplicates (the same dedup as the receiver); the bridge never drops.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

from confluent_kafka import KafkaError, KafkaException, Producer

from cloud.kafka.metrics import KafkaMetrics
from cloud.kafka.records import Record
from cloud.sinks.base import SinkAuthError
from core.backoff import Backoff

log = logging.getLogger("cloud.kafka")
# librdkafka's own log lines (connection failures, ...): through Python logging, in the daemon's format and level,
# instead of raw `%3|...` lines on stderr. Served by the poll thread's poll() calls. The consumer uses it too.
librdkafka_log = logging.getLogger("cloud.kafka.librdkafka")

# Refused for what the record is: producing it again would be refused again.
_REFUSED = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_RECORD, KafkaError.INVALID_MSG_SIZE,
                      KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_MSG})
_AUTH = frozenset({KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED,
                   KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._AUTHENTICATION,
                   KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED})
# What error_cb reports when no broker answers: the state turns "retrying" at once, not at the next timeout.
_UNREACHABLE = frozenset({KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._RESOLVE,
                          KafkaError._TIMED_OUT})


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    linger_ms: int = 5
    # How long librdkafka keeps trying one record before it reports it failed; then deliver() produces it again.
    # Finite, so that a record stuck behind a dead connection is handed back and retried through a fresh one.
    message_timeout_ms: int = 30_000
    compression: str = "lz4"  # cheap on CPU; JSON readings shrink about 4x
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0
    poll_interval_s: float = 0.05


ProducerConfig = dict[str, str | int | bool | Callable[..., None] | logging.Logger]


def producer_config(client: dict[str, str], s: DeliverySettings) -> ProducerConfig:
    return {
        **client,
        "logger": librdkafka_log,
        # Idempotence: librdkafka's own retries write each record once and keep a partition's records in order.
        "enable.idempotence": True,
        "acks": "all",  # implied by idempotence; said here so that a change of default shows
        "linger.ms": s.linger_ms,
        "message.timeout.ms": s.message_timeout_ms,
        "compression.type": s.compression,
        "partitioner": "murmur2_random",  # the Java client's partitioner: a MAC lands where Kafka Streams expects it
    }


class _Round:
    """The delivery reports of one produce of some records; `future` completes on the last one."""

    def __init__(self, n: int, loop: asyncio.AbstractEventLoop) -> None:
        self.left = n
        self.errors: list[tuple[int, KafkaError]] = []
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self._lock = threading.Lock()

    def report(self, index: int, err: KafkaError | None, _msg: object = None) -> None:
        with self._lock:  # the poll thread reports; the loop thread counts records produce() refused at once
            if err is not None:
                self.errors.append((index, err))
            self.left -= 1
            last = self.left == 0
        if last:
            self.loop.call_soon_threadsafe(self._finish)

    def _finish(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


class Delivery:
    """One librdkafka producer and the thread that polls it; `deliver()` as the module docstring says."""

    def __init__(self, client: dict[str, str], settings: DeliverySettings | None = None, *,
                 metrics: KafkaMetrics | None = None) -> None:
        self.settings = s = settings or DeliverySettings()
        self._config = producer_config(client, s)
        self._config["error_cb"] = self._on_error
        self.metrics = metrics or KafkaMetrics()
        self.state = "idle"
        self.last_error: str | None = None
        self.failed_attempts = 0  # produce rounds that had to be retried
        self.produced = 0  # records acknowledged
        self.errors = 0  # failed delivery reports (each retried or refused)
        self._pending = 0  # rounds waiting for reports
        self._fatal = False
        self._closing = False
        self._producer = Producer(self._config)
        self.metrics.queue_records.set_function(lambda: len(self._producer))
        self._thread = threading.Thread(target=self._poll_loop, name="kafka-poll", daemon=True)
        self._thread.start()

    def queued(self) -> int:
        """Records librdkafka holds that Kafka has not acknowledged yet."""
        return len(self._producer)

    # ---- the poll thread ---------------------------------------------------------------------------------------

    def _poll_loop(self) -> None:
        while not self._closing:
            self._producer.poll(self.settings.poll_interval_s)

    def _on_error(self, err: KafkaError) -> None:
        # Client-level errors (poll thread). librdkafka reconnects by itself; this only makes the outage visible.
        if err.fatal():
            self._fatal = True
            self.last_error = f"fatal: {err.name()}: {err.str()}"
            log.error("Kafka producer: %s; a new producer takes over the undelivered records", self.last_error)
        elif err.code() in _UNREACHABLE:
            self.last_error = f"{err.name()}: {err.str()}"
            if self._pending:
                self.state = "retrying"
            log.warning("Kafka: %s", self.last_error)
        else:
            log.info("Kafka: %s: %s", err.name(), err.str())

    # ---- deliver -----------------------------------------------------------------------------------------------

    async def deliver(self, topic: str, records: Sequence[Record]) -> list[tuple[int, str]]:
        """Produce the records to `topic` and return once each is acknowledged or refused: (index, reason) of
        those refused. Raises SinkAuthError when Kafka refuses our credentials."""
        loop = asyncio.get_running_loop()
        backoff = Backoff(self.settings.backoff_initial_s, self.settings.backoff_max_s)
        pending = list(range(len(records)))
        refused: list[tuple[int, str]] = []
        while pending:
            if self._fatal:
                self._renew()
            t0 = time.monotonic()
            rnd = _Round(len(pending), loop)
            self._pending += 1
            try:
                await self._produce_all(topic, records, pending, rnd)
                await self._reports(rnd)
            finally:
                self._pending -= 1
            retry: list[int] = []
            for index, err in sorted(rnd.errors, key=lambda e: e[0]):  # in produce order, for the retry
                self.errors += 1
                self.metrics.produce_errors.labels(topic, err.name()).inc()
                code = err.code()
                if code in _AUTH:
                    self.state, self.last_error = "auth_failed", f"{err.name()}: {err.str()}"
                    raise SinkAuthError(f"Kafka refused us on topic {topic!r}: {self.last_error}")
                if code in _REFUSED:
                    refused.append((index, f"Kafka refused the record: {err.name()}: {err.str()}"))
                else:
                    retry.append(index)
                    self.last_error = f"{err.name()}: {err.str()}"
            delivered = len(pending) - len(rnd.errors)
            self.produced += delivered
            self.metrics.records_produced.labels(topic).inc(delivered)
            self.metrics.delivery_seconds.observe(time.monotonic() - t0)
            if retry:
                self.state = "retrying"
                self.failed_attempts += 1
                delay = backoff.next_delay()
                log.warning("Kafka: %d of %d records to %s not delivered (%s); producing them again in %.1f s",
                            len(retry), len(pending), topic, self.last_error, delay)
                await asyncio.sleep(delay)
            pending = retry
        self.state = "ok"
        return sorted(refused)

    async def _produce_all(self, topic: str, records: Sequence[Record], indexes: list[int], rnd: _Round) -> None:
        produce = self._producer.produce
        for i in indexes:
            r = records[i]
            headers = cast(list[tuple[str, str | bytes | None]], r.headers)  # the stub's list is invariant
            while True:
                try:
                    produce(topic, r.value, r.key, headers=headers, on_delivery=functools.partial(rnd.report, i))
                    break
                except BufferError:
                    # librdkafka's queue is full (queue.buffering.max.messages): wait for deliveries to free it.
                    await asyncio.sleep(0.005)
                except KafkaException as e:
                    # Refused before it left (too large for message.max.bytes, ...): reported like a delivery.
                    rnd.report(i, e.args[0])
                    break

    async def _reports(self, rnd: _Round) -> None:
        while True:
            done, _ = await asyncio.wait({rnd.future}, timeout=1.0)
            if done:
                return
            if self._fatal:
                # A producer in a fatal state may keep its records; purged, each gets a report (retried above).
                self._producer.purge(in_queue=True, in_flight=True)

    def _renew(self) -> None:
        """A fatal error ends a producer for good; the records it still held failed with it, and are retried here."""
        old = self._producer
        self._producer = Producer(self._config)
        self._fatal = False
        old.purge()
        old.poll(0)
        log.warning("Kafka: opened a new producer after a fatal error")

    async def close(self, timeout_s: float = 10.0) -> None:
        """Flush what is queued (up to timeout_s), then stop the poll thread."""
        if self._closing:
            return
        loop = asyncio.get_running_loop()
        left = await loop.run_in_executor(None, self._producer.flush, timeout_s)
        if left:
            log.warning("Kafka: %d records not acknowledged at close; their messages stay unacknowledged", left)
        self._closing = True
        await loop.run_in_executor(None, self._thread.join, 5.0)
        self.metrics.queue_records.set_function(lambda: left)
        self._producer.close()  # its threads and connections end now, not whenever the object is collected
        self.state = "closed"
