"""The Kafka input of `cloud-ingest run --kafka`: a consumer group member whose records enter the receiver's write
path (the same batcher, dedup and sink as MQTT), one `KafkaMessage` per record.

- Offsets are committed only after the write: the write path acknowledges messages in order, which marks each
  partition's next offset to commit; once per loop iteration those go to the poll thread, which commits them
  (asynchronously: a lost commit can only make a restart write the same points again, and InfluxDB overwrites a
  point with the same series and timestamp, so that is no duplicate).
- confluent-kafka's calls block, so one thread polls, commits and runs the rebalance callbacks; the event loop
  decodes the records and does everything else. Every change to the assignment goes through the loop, in the order
  the records before it came, so the loop never sees a record of a partition it no longer owns as owned.
- A rebalance: `on_revoke` closes the open batch and waits (up to `revoke_timeout_s`) for the revoked partitions'
  records to be written, then commits them synchronously before the partitions move. What is not written by then
  is abandoned: dropped from the queue, and its later acknowledgement (a batch already at the database) commits
  nothing, so the new owner reads it again from the last commit.
- Backpressure: while the receiver's queue is full the poll thread stops taking records from librdkafka (which
  prefetches up to its own queue limit meanwhile); when that lasts PAUSE_AFTER_S (the database is away) it pauses
  its partitions and polls again, so that it stays in the group and rebalances are served. Pausing at every full
  queue would cost a fetch round trip each time: librdkafka drops what it prefetched for a paused partition. It
  never has more than two unhandled fetches waiting for the loop either.
- Caught up (a consume() that brings nothing for 0.1 s after records came): the open batch is written at once, not
  after `batch.max_interval`. The records are already safe in Kafka, so gathering more only adds latency; at a high
  rate consume() is never empty and batches still fill to `batch.max_points`. (A drain of 1M readings by two
  consumers had ended with each one's last partial batch waiting the full 10 s.)
- Poison records (RecordError) become dead letters like unparseable MQTT messages; `dead_letter_origin` gives the
  Kafka DLQ (cloud/kafka/dlq.py) their original key and headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from cloud.kafka.delivery import librdkafka_log
from cloud.kafka.records import Codec, RecordError
from cloud.kafka.topics import REFUSED_US
from cloud.metrics import Metrics
from cloud.model import Point
from cloud.mqtt_input import InputError
from cloud.receiver_settings import KafkaSettings
from cloud.write_path import Message, ParseFailure
from core.ratelog import RateLimitedLog

log = logging.getLogger("cloud.receiver")
_client_errors = RateLimitedLog(log, 10.0)

FETCH_RECORDS = 1000  # records per consume() call
MAX_WAITING_FETCHES = 2  # fetches handed to the loop and not yet taken: more, and the poll thread waits
WATERMARK_INTERVAL_S = 2.0
PAUSE_AFTER_S = 1.0  # a full queue for this long pauses the partitions (see above)
NO_OFFSET = -1


@dataclass(slots=True, eq=False)
class Partition:
    """One assigned partition, for as long as it stays assigned (a new assignment is a new object)."""

    topic: str
    partition: int
    next_commit: int = NO_OFFSET  # one past the last written record; what the next commit says
    unacked: int = 0  # records handed to the receiver and not yet acknowledged
    revoked: bool = False


class KafkaMessage(Message, eq=False):
    """One record. `topic` is "<topic>/<partition>/<offset>": what logs and dead letters name it by."""

    offset: int = 0
    part: Partition | None = None
    key: bytes | None = None  # kept for a poison record's dead letter only
    headers: list[tuple[str, bytes]] | None = None
    input: KafkaInput | None = None

    def acknowledge(self) -> None:
        if self.input is not None:
            self.input.acknowledge(self)


# The (message, its points) pairs of one fetch -> the receiver's batches
Handler = Callable[[list[tuple[KafkaMessage, list[Point]]]], object]


@dataclass
class PartitionStatus:
    committed: int = NO_OFFSET
    high: int = NO_OFFSET
    low: int = NO_OFFSET

    @property
    def lag(self) -> int:
        start = self.committed if self.committed >= 0 else self.low
        return max(0, self.high - start) if self.high >= 0 and start >= 0 else -1


class KafkaInput:
    """`connect()` starts the poll thread, `disconnect()` commits what is written and leaves the group."""

    def __init__(self, settings: KafkaSettings, handler: Handler, *, codec: Codec, metrics: Metrics,
                 fetched: Callable[[int, int], None], close_batch: Callable[[str], None],
                 drop_unwritten: Callable[[], None], on_connection: Callable[[bool], None],
                 on_fatal: Callable[[BaseException], None] | None = None,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.settings = settings
        self._handler = handler
        self._fetched = fetched  # (records, readings) of each fetch: counted once, not per record
        self._codec = codec
        self._metrics = metrics
        self._close_batch = close_batch
        self._drop_unwritten = drop_unwritten
        self._on_connection = on_connection
        self._on_fatal = on_fatal
        self._clock = clock
        self.connected = False
        self.inflight = 0  # records handed over and not acknowledged (revoked ones are no longer counted)
        self.subscribed = asyncio.Event()  # set at the first assignment
        self._loop: asyncio.AbstractEventLoop | None = None
        self._parts: dict[tuple[str, int], Partition] = {}  # loop thread only
        self._poison: dict[str, KafkaMessage] = {}  # poison records waiting for their dead letter
        self._dirty: set[Partition] = set()
        self._flush_scheduled = False
        self._closing = False
        # Shared with the poll thread, under _lock: offsets to commit, partition status.
        self._lock = threading.Lock()
        self._to_commit: dict[tuple[str, int], int] = {}
        self.partitions: dict[tuple[str, int], PartitionStatus] = {}
        # Written by one thread each: the poll thread hands fetches over, the loop takes them.
        self._handed = 0
        self._taken = 0
        self._want_pause = False
        self._want_pause_since = 0.0
        self._pause_applied = False
        self._stop = threading.Event()
        self._wake = threading.Event()  # the loop took a fetch, or has room again
        self._thread: threading.Thread | None = None
        self._consumer: Any = None
        self._assigned: set[tuple[str, int]] = set()  # poll thread's view

    # ---- the receiver's side (event loop) ---------------------------------------------------------------------

    def pause(self, pause: bool) -> None:
        if pause == self._want_pause:
            return
        if pause:
            self._want_pause_since = time.monotonic()
        self._want_pause = pause
        if not pause:
            self._wake.set()

    async def connect(self, stop: asyncio.Event) -> None:
        """Create the consumer and start polling. The group join itself happens in the background (`subscribed`)."""
        self._loop = asyncio.get_running_loop()
        s = self.settings
        conf: dict[str, Any] = {
            **s.client,
            "group.id": s.group,
            "client.id": s.client_id,
            "enable.auto.commit": False,  # we commit after the write
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",  # a new group starts at the oldest record: nothing is skipped
            # Cooperative: a rebalance revokes and assigns only the partitions that move (the callbacks get just
            # those; confluent-kafka then assigns incrementally), and the rest are consumed throughout.
            "partition.assignment.strategy": s.assignment,
            "session.timeout.ms": int(s.session_timeout_s * 1000),
            "heartbeat.interval.ms": max(100, int(s.session_timeout_s * 1000 / 4)),
            "on_commit": self._on_commit,
            "error_cb": self._on_error,
            "logger": librdkafka_log,  # not librdkafka's own stderr lines
        }
        try:
            self._consumer = Consumer(conf)
            self._consumer.subscribe([s.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                     on_lost=self._on_lost)
        except (KafkaException, ValueError, TypeError) as e:
            raise InputError(f"kafka: cannot start the consumer: {e}") from None
        self._thread = threading.Thread(target=self._poll_loop, name="cloud-ingest-kafka-poll", daemon=True)
        self._thread.start()

    def give_up_all(self) -> None:
        """Stopping: what is written gets committed (disconnect), the rest is left for the next consumer."""
        self._flush_acks()
        self._closing = True

    async def disconnect(self, *, end_session: bool = False) -> None:
        self._flush_acks()
        self._closing = True
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        self.connected = False

    def acknowledge(self, msg: KafkaMessage) -> None:
        part = msg.part
        if msg.failure is not None:
            self._poison.pop(msg.topic, None)
        if part is None or part.revoked:
            return  # abandoned at a rebalance: the new owner reads it again
        part.unacked -= 1
        self.inflight -= 1
        if msg.offset >= part.next_commit:
            part.next_commit = msg.offset + 1
        self._dirty.add(part)
        if not self._flush_scheduled and self._loop is not None:
            # A batch acknowledges all its messages in one loop iteration: one commit for all of them.
            self._flush_scheduled = True
            self._loop.call_soon(self._flush_acks)

    def dead_letter_origin(self, topic: str) -> tuple[bytes | None, list[tuple[str, bytes]]] | None:
        """The key and headers of the poison record named `topic` (KafkaMessage.topic), if it is one."""
        msg = self._poison.get(topic)
        return None if msg is None else (msg.key, msg.headers or [])

    @staticmethod
    def unwanted(msg: Message) -> bool:
        """A message of a revoked partition: not to be written by this consumer any more."""
        return isinstance(msg, KafkaMessage) and msg.part is not None and msg.part.revoked

    def forget(self, msg: Message) -> None:
        if isinstance(msg, KafkaMessage):
            self._poison.pop(msg.topic, None)

    def _flush_acks(self) -> None:
        self._flush_scheduled = False
        if not self._dirty:
            return
        with self._lock:
            for part in self._dirty:
                if not part.revoked:
                    self._to_commit[(part.topic, part.partition)] = part.next_commit
        self._dirty.clear()

    def _take(self, records: list[Any]) -> None:
        """A fetch from the poll thread: decode each record and hand it to the receiver."""
        self._taken += 1
        self._wake.set()
        now_ns = self._clock()
        consumed = poison = readings = 0
        taken: list[tuple[KafkaMessage, list[Point]]] = []
        for rec in records:
            err = rec.error()
            if err is not None:
                _client_errors.warning("kafka: %s", err)
                continue
            part = self._parts.get((rec.topic(), rec.partition()))
            if part is None or part.revoked:
                continue  # fetched before a rebalance took the partition: its new owner reads it again
            consumed += 1
            offset = rec.offset()
            value = rec.value()
            headers = rec.headers()
            try:
                points = self._codec.decode(value, headers)
                failure = None
            except RecordError as e:
                points = []
                failure = ParseFailure(value or b"", str(e), now_ns)
                poison += 1
            msg = KafkaMessage(f"{part.topic}/{part.partition}/{offset}", failure=failure, offset=offset, part=part,
                               input=self)
            if failure is not None:
                msg.key, msg.headers = rec.key(), [(k, v or b"") for k, v in headers or ()]
                self._poison[msg.topic] = msg
            part.unacked += 1
            self.inflight += 1
            readings += len(points)
            taken.append((msg, points))
        self._handler(taken)  # once per fetch: the receiver's flow control need not look after every record
        self._fetched(consumed, readings)
        self._metrics.kafka_records.inc(consumed)
        if poison:
            self._metrics.kafka_poison.inc(poison)
        if consumed and not self.connected:
            self._connection(True)

    def _connection(self, up: bool) -> None:
        if up != self.connected:
            self.connected = up
            self._on_connection(up)

    def _assigned_on_loop(self, tps: list[tuple[str, int]]) -> None:
        for tp in tps:
            old = self._parts.get(tp)
            if old is not None:
                old.revoked = True
            self._parts[tp] = Partition(*tp)
        self._connection(True)
        self.subscribed.set()

    async def _revoke_on_loop(self, tps: list[tuple[str, int]], wait: bool) -> dict[tuple[str, int], int]:
        """Finish the revoked partitions' records within revoke_timeout_s, or abandon them; return the offsets to
        commit for them before they go."""
        parts = [p for tp in tps if (p := self._parts.get(tp)) is not None]
        if wait and not self._closing and any(p.unacked for p in parts):
            self._close_batch("revoke")
            deadline = time.monotonic() + self.settings.revoke_timeout_s
            while any(p.unacked for p in parts) and time.monotonic() < deadline and not self._closing:
                await asyncio.sleep(0.01)
        self._flush_acks()
        final: dict[tuple[str, int], int] = {}
        abandoned = 0
        with self._lock:
            for p in parts:
                tp = (p.topic, p.partition)
                pending = self._to_commit.pop(tp, None)
                if pending is not None:
                    final[tp] = pending
                abandoned += p.unacked
                self.inflight -= p.unacked
                p.unacked = 0
                p.revoked = True
                del self._parts[tp]
        if abandoned:
            log.warning("kafka rebalance: %d records of the revoked partitions not written in time; abandoned "
                        "uncommitted (their new owner reads them again)", abandoned)
            self._drop_unwritten()
            self._poison = {k: m for k, m in self._poison.items() if not self.unwanted(m)}
        return final

    # ---- the poll thread --------------------------------------------------------------------------------------

    def _poll_loop(self) -> None:
        c = self._consumer
        next_look = 0.0
        fresh = False  # a fetch was handed over since the last time the partitions were read to their end
        try:
            while not self._stop.is_set():
                self._apply_pause()
                self._commit(asynchronous=True)
                now = time.monotonic()
                if now >= next_look:
                    self._look_at_watermarks()
                    next_look = now + WATERMARK_INTERVAL_S
                if self._holding_back():
                    # Not poll(): on a consumer that returns, and would drop, a record. The loop wakes us when it
                    # takes a fetch or its queue has room; the timeout covers the wake between check and wait.
                    self._wake.clear()
                    if self._holding_back():
                        self._wake.wait(0.05)
                    continue
                records = c.consume(num_messages=FETCH_RECORDS, timeout=0.1)
                if records:
                    self._handed += 1
                    fresh = True
                    self._call_loop(self._take, records)
                elif fresh:
                    # Nothing for 0.1 s: every partition is read to its end for now. Write what is open (after the
                    # fetches handed over: the loop runs calls in order) rather than wait up to batch.max_interval
                    # for more: the records are safe in Kafka already, and waiting would only add latency.
                    fresh = False
                    self._call_loop(self._close_batch, "caught_up")
        except Exception:
            log.exception("the Kafka poll thread failed")
        finally:
            self._close()

    def _holding_back(self) -> bool:
        """The loop has fetches to take, or a full queue not yet long enough to pause the partitions."""
        return self._handed - self._taken >= MAX_WAITING_FETCHES or (self._want_pause and not self._pause_applied)

    def _close(self) -> None:
        c = self._consumer
        with contextlib.suppress(Exception):
            self._commit(asynchronous=False)
        try:
            c.close()  # leaves the group: on_revoke commits what is left
        except Exception as e:
            log.warning("kafka: closing the consumer: %s", e)

    def _call_loop(self, fn: Callable[..., object], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(fn, *args)

    def _run_on_loop(self, coro_fn: Callable[[], Any], timeout: float) -> Any:
        loop = self._loop
        if loop is None or loop.is_closed():
            return None
        try:
            fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro_fn(), loop)
        except RuntimeError:
            return None
        try:
            return fut.result(timeout)
        except Exception as e:
            log.warning("kafka rebalance: the receiver did not answer (%s)", type(e).__name__)
            fut.cancel()
            return None

    def _apply_pause(self) -> None:
        want = self._want_pause
        if want == self._pause_applied or (want and time.monotonic() - self._want_pause_since < PAUSE_AFTER_S):
            return
        parts = [TopicPartition(t, p) for t, p in self._assigned]
        try:
            if parts:
                (self._consumer.pause if want else self._consumer.resume)(parts)
            self._pause_applied = want
            log.debug("kafka: %s %s", "paused" if want else "resumed", _names(list(self._assigned)))
        except KafkaException as e:
            _client_errors.warning("kafka: cannot %s the partitions: %s", "pause" if want else "resume", e)

    def _commit(self, *, asynchronous: bool) -> None:
        with self._lock:
            offsets, self._to_commit = self._to_commit, {}
        mine = [TopicPartition(t, p, off) for (t, p), off in offsets.items() if (t, p) in self._assigned]
        if mine:
            self._commit_offsets(mine, asynchronous=asynchronous)

    def _commit_offsets(self, offsets: list[TopicPartition], *, asynchronous: bool) -> None:
        try:
            done = self._consumer.commit(offsets=offsets, asynchronous=asynchronous)
        except KafkaException as e:
            self._commit_failed(offsets, str(e))
            return
        if not asynchronous and done:
            self._on_commit(None, done)

    def _on_commit(self, err: KafkaError | None, tps: Sequence[TopicPartition]) -> None:
        failed = [tp for tp in tps if err is not None or tp.error is not None]
        if failed:
            self._commit_failed(failed, str(err or failed[0].error))
        lags = []
        with self._lock:
            for tp in tps:
                if err is None and tp.error is None and tp.offset >= 0:
                    key = (tp.topic, tp.partition)
                    st = self.partitions.setdefault(key, PartitionStatus())
                    st.committed = tp.offset
                    if key in self._assigned:  # a revoked partition's gauge is gone, and stays gone
                        lags.append((key, st.lag))
        # The gauge moves with the commit, as `status` does, not only at the next look at the watermarks.
        for (t, p), lag in lags:
            if lag >= 0:
                self._metrics.kafka_lag.labels(t, str(p)).set(lag)

    def _commit_failed(self, tps: Sequence[TopicPartition], why: str) -> None:
        """Count it, and try the offset again unless a later one is waiting (a revoked partition is not ours)."""
        self._metrics.kafka_commit_failures.inc()
        _client_errors.warning("kafka: commit failed (retried): %s", why)
        with self._lock:
            for tp in tps:
                key = (tp.topic, tp.partition)
                if key in self._assigned and tp.offset >= 0:
                    self._to_commit.setdefault(key, tp.offset)

    def _look_at_watermarks(self) -> None:
        """Committed offset, high watermark and lag of each assigned partition, for status and metrics. The
        watermarks are the ones the last fetch brought (cached): asking the broker would queue behind the
        long-polling fetches on the same connection and stall this thread."""
        c = self._consumer
        for t, p in list(self._assigned):
            try:
                low, high = c.get_watermark_offsets(TopicPartition(t, p), cached=True)
            except KafkaException:
                continue
            with self._lock:
                st = self.partitions.setdefault((t, p), PartitionStatus())
                if high >= 0:
                    st.low, st.high = low, high
                lag = st.lag
            if lag >= 0:
                self._metrics.kafka_lag.labels(t, str(p)).set(lag)

    def _starting_offsets(self, tps: list[TopicPartition]) -> None:
        """The group's committed offsets of newly assigned partitions (what `status` shows until we commit)."""
        try:
            got = self._consumer.committed(tps, timeout=5.0)
        except KafkaException as e:
            _client_errors.warning("kafka: cannot read the committed offsets: %s", e)
            return
        with self._lock:
            for tp in got:
                st = self.partitions.setdefault((tp.topic, tp.partition), PartitionStatus())
                if tp.offset >= 0 and st.committed < 0:
                    st.committed = tp.offset

    def _on_assign(self, consumer: Any, tps: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in tps]
        self._metrics.kafka_rebalances.labels("assigned").inc()
        log.info("kafka: assigned %s", _names(keys))
        self._assigned.update(keys)
        self._pause_applied = False  # new partitions start unpaused; the next round pauses them if needed
        self._call_loop(self._assigned_on_loop, keys)
        self._starting_offsets(tps)

    def _on_revoke(self, consumer: Any, tps: list[TopicPartition]) -> None:
        self._give_back([(tp.topic, tp.partition) for tp in tps], lost=False)

    def _on_lost(self, consumer: Any, tps: list[TopicPartition]) -> None:
        self._give_back([(tp.topic, tp.partition) for tp in tps], lost=True)

    def _give_back(self, keys: list[tuple[str, int]], *, lost: bool) -> None:
        self._metrics.kafka_rebalances.labels("lost" if lost else "revoked").inc()
        log.info("kafka: %s %s", "lost" if lost else "revoked", _names(keys))
        s = self.settings
        final = self._run_on_loop(lambda: self._revoke_on_loop(keys, wait=not lost), s.revoke_timeout_s + 5.0)
        if final and not lost:
            # Lost partitions already have another owner: committing for them could skip its work.
            self._commit_offsets([TopicPartition(t, p, off) for (t, p), off in final.items()], asynchronous=False)
        self._assigned.difference_update(keys)
        # librdkafka keeps a partition's pause across a rebalance: one paused now would stay paused when it is
        # assigned again, and nothing would resume it.
        with contextlib.suppress(KafkaException):
            consumer_tps = [TopicPartition(t, p) for t, p in keys]
            self._consumer.resume(consumer_tps)
        with self._lock:
            for key in keys:
                self.partitions.pop(key, None)
                with contextlib.suppress(KeyError):
                    self._metrics.kafka_lag.remove(key[0], str(key[1]))

    def _on_error(self, err: KafkaError) -> None:
        if err.code() in REFUSED_US and self._on_fatal is not None:
            # Wrong credentials or an untrusted certificate: no retry fixes them, and retrying would only log the
            # same failure twice a second for ever. Stop, named, as the bridge does at start (and as a 401 from
            # the database does). librdkafka's text never holds the password.
            bootstrap = self.settings.client.get("bootstrap.servers", "?")
            self._call_loop(self._on_fatal, InputError(
                f"Kafka at {bootstrap} refused the connection: {err.name()}: {err.str()}"))
            return
        _client_errors.warning("kafka: %s", err)
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self._call_loop(self._connection, False)

    # ---- status -----------------------------------------------------------------------------------------------

    def status(self) -> dict[str, dict[str, int]]:
        """Per partition ("<topic>/<partition>"): committed offset, high watermark, lag."""
        with self._lock:
            return {f"{t}/{p}": {"committed": st.committed, "high": st.high, "lag": st.lag}
                    for (t, p), st in sorted(self.partitions.items())}


def _names(keys: list[tuple[str, int]]) -> str:
    return ", ".join(f"{t}/{p}" for t, p in sorted(keys)) or "nothing"
