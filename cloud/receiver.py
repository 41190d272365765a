"""The receiver: MQTT in (cloud/mqtt_input.py) or Kafka in (cloud/kafka/consumer.py, `run --kafka`), messages parsed
and batched here, batches through the one write path (cloud/write_path.py), counts and status in cloud/monitor.py.
Docs: docs/cloud-ingest.md, docs/kafka.md.

An input hands over Message objects that acknowledge themselves (a PUBACK, an offset to commit); everything from
the batcher on is the same for both.

Nothing is lost:
- a message is acknowledged to the broker only after the batch holding it is written, its dead letters are
  PUBACKed and its confirmation is published (the write path's order);
- the window: the broker sends at most `receive_maximum` unacknowledged messages, so a batch also closes when it holds
  `batch_max_messages` of them, half the window by default: one batch fills while the one before it is written.
  Otherwise one-reading-per-message traffic would stall at the window until the timer (see batcher.py);
- backpressure: the receiver stops reading its socket while `receive_maximum` messages are unacknowledged, or while
  `queue_batches` closed batches wait for a writer. The broker's window alone is not enough: Mosquitto 2.0.11 sends
  past the client's Receive Maximum once PUBACKs start to flow (measured here; eclipse-mosquitto/mosquitto#2301);
- after a disconnect, messages not yet being written are dropped from memory (the broker resends them), so a
  flapping connection cannot pile up copies;
- dedup survives restarts: a new process loads the dedup journal (cloud/dedup_journal.py) first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from cloud import status
from cloud.alert_hook import AlertHook
from cloud.batcher import Batch, Batcher
from cloud.dedup import Dedup
from cloud.dedup_journal import DedupJournal, JournalError
from cloud.formats import Router
from cloud.formats.edge_batch import batch_seq
from cloud.homeassistant import CloudHa
from cloud.metrics import Metrics
from cloud.model import InvalidMessage, Point
from cloud.monitor import Live, Monitor
from cloud.mqtt_input import InputError, MqttInput, MqttMessage
from cloud.receiver_settings import ReceiverSettings
from cloud.sinks.base import Sink, SinkAuthError
from cloud.write_path import AfterWrite, DeadLetter, Message, ParseFailure, Publish, WritePath, WritePathSettings

if TYPE_CHECKING:
    from cloud.http_input import HttpInput, HttpMessage
    from cloud.kafka.consumer import KafkaInput, KafkaMessage
    from cloud.kafka.delivery import Delivery
    from cloud.receiver_settings import KafkaSettings

log = logging.getLogger("cloud.receiver")
M = TypeVar("M", bound=Message)

DRAIN_TIMEOUT_S = 20.0


class ReceiverError(Exception):
    """The receiver had to stop: the database refused our credentials, or the broker refused the connection."""


class Input(Protocol):
    """What the receiver needs of an input (MqttInput, KafkaInput)."""

    connected: bool
    inflight: int  # messages handed over and not acknowledged
    subscribed: asyncio.Event  # set once messages can come (subscribed; partitions assigned)

    def pause(self, pause: bool) -> None: ...

    async def connect(self, stop: asyncio.Event) -> None: ...

    def give_up_all(self) -> None: ...

    async def disconnect(self, *, end_session: bool) -> None: ...


async def _no_mqtt(topic: str, payload: bytes) -> Awaitable[None]:
    # The Kafka input has no MQTT connection: confirmations are off (the bridge sent them) and dead letters go to
    # Kafka, so nothing may publish. Alerts and Home Assistant (MQTT publishers) are refused in Kafka mode.
    raise RuntimeError(f"no MQTT connection in Kafka mode (publish to {topic})")


class Receiver:
    def __init__(
        self,
        settings: ReceiverSettings,
        *,
        sink: Sink,
        router: Router,
        rollups: AfterWrite | None = None,
        metrics: Metrics | None = None,
        status_file: Path | None = None,
        clock: Callable[[], int] = time.time_ns,
        homeassistant: CloudHa | None = None,
        dead_letter: DeadLetter | None = None,
    ) -> None:
        self.settings = s = settings
        self.homeassistant = homeassistant
        self.sink = sink
        self.router = router
        self.metrics = metrics or Metrics()
        self._clock = clock
        client_id = s.mqtt.client_id if s.kafka is None else s.kafka.client_id
        self.monitor = Monitor(self.metrics, client_id=client_id, sink=sink, status_file=status_file,
                               clock=clock, format_of=router.format_of)
        # A Kafka record holds one reading or more and has no broker window to respect: the points close a batch.
        max_messages = s.batch_max_messages if s.kafka is None else s.batch_max_points
        self.batcher: Batcher[Message] = Batcher(max_points=s.batch_max_points, max_interval_s=s.batch_max_interval_s,
                                                 max_messages=max_messages)
        dedup = Dedup(window_s=s.dedup_window_s, max_entries=s.dedup_max_entries) if s.dedup else None
        self.journal = self._open_journal(dedup, s.dedup_state_file) if dedup is not None else None
        self.mqtt: MqttInput | None = None
        self.kafka: KafkaInput | None = None
        self.kafka_dlq: Delivery | None = None  # the producer of run --kafka's dead letters
        self.input: Input
        publish: Publish
        if s.kafka is None:
            self.mqtt = self.input = MqttInput(s.mqtt, self._accept, on_connection=self._on_connection,
                                               sys_reader=self.monitor.broker, on_held_back=self.monitor.held_back)
            self._max_inflight = s.mqtt.receive_maximum
            publish = self.mqtt.publisher.publish
        else:
            if s.alerts is not None or homeassistant is not None:
                raise ReceiverError("alerts and homeassistant publish over MQTT: not available with --kafka")
            self.kafka = self.input = self._kafka_input(s.kafka)
            # Enough for every batch the queue and the writers hold, and the one filling.
            self._max_inflight = s.kafka.max_records
            publish = _no_mqtt
            if dead_letter is None:
                from cloud.kafka.delivery import Delivery, DeliverySettings
                from cloud.kafka.dlq import KafkaDeadLetter
                from cloud.kafka.metrics import KafkaMetrics

                # The same dead letters as the bridge's (cloud/kafka/dlq.py), with the record's own key and headers,
                # and the same kafka.delivery_timeout as the bridge's producer (cloud/kafka/bridge.py).
                delivery = DeliverySettings(message_timeout_ms=int(s.kafka.delivery_timeout_s * 1000))
                self.kafka_dlq = Delivery(s.kafka.client, delivery, metrics=KafkaMetrics(self.metrics.registry))
                dead_letter = KafkaDeadLetter(self.kafka_dlq, topic=s.kafka.dlq_topic, receiver=client_id,
                                              max_payload=s.dlq_max_payload, origin=self.kafka.dead_letter_origin)
        self.alerts = AlertHook(s.alerts, publish=self.mqtt.publisher.publish, metrics=self.metrics,
                                receiver=client_id, on_firing=self._alerts_firing,
                                clock=clock) if s.alerts is not None and self.mqtt is not None else None
        self.write_path = WritePath(
            WritePathSettings(receiver=client_id, dlq_topic=s.dlq_topic, dlq_max_payload=s.dlq_max_payload,
                              confirm=s.confirm and s.kafka is None),
            sink=sink, publish=publish, monitor=self.monitor, dedup=dedup,
            journal=self.journal, rollups=rollups, alerts=self.alerts, dead_letter=dead_letter, clock=clock)
        self.http: HttpInput | None = None
        if s.http is not None:
            from cloud.http_input import HttpInput  # aiohttp only when the listener is on

            self.http = HttpInput(s.http, self._accept_http, busy=self._http_busy,
                                  answered=self.monitor.http_answered)
        self._urgent = False  # the open batch holds an HTTP request: a free writer takes it at once
        self._ready: deque[Batch[Message]] = deque()
        self._writing = 0  # batches the writers hold
        self._writing_points = 0
        self._wake = asyncio.Event()
        self._stopping = False
        self._fatal: BaseException | None = None
        self._last_message = 0.0

    def _kafka_input(self, settings: KafkaSettings) -> KafkaInput:
        from cloud.kafka.consumer import KafkaInput
        from cloud.kafka.records import Codec

        return KafkaInput(settings, self._accept_records, codec=Codec("json"), metrics=self.metrics,
                          fetched=self._fetched,
                          close_batch=self._close_open, drop_unwritten=self._drop_unwritten,
                          on_connection=self.monitor.connection, on_fatal=self._fail, clock=self._clock)

    @property
    def counts(self) -> status.Status:
        """The running totals."""
        return self.monitor.counts

    def _alerts_firing(self, firing: list[dict[str, object]]) -> None:
        self.monitor.counts.alerts_firing = firing

    def _open_journal(self, dedup: Dedup, path: Path | None) -> DedupJournal | None:
        if path is None:
            return None
        t0 = time.monotonic()
        try:
            journal = DedupJournal(path, max_entries=self.settings.dedup_max_entries)
            dedup.remember(journal.load())
        except JournalError as e:
            raise ReceiverError(str(e)) from None
        log.info("dedup: %d measurements remembered from %s (%.2f s)", len(dedup), path, time.monotonic() - t0)
        return journal

    # ---- messages in ------------------------------------------------------------------------------------------

    def _accept(self, topic: str, payload: bytes, qos: int, dup: bool) -> MqttMessage | None:
        now_ns = self._clock()
        self._last_message = now = time.monotonic()
        if topic == self.settings.dlq_topic:
            return None  # our own dead letters, if a wildcard subscription catches them: never loop
        self.monitor.received(topic, dup)
        try:
            parsed = self.router.route(topic, payload, received_ns=now_ns)
        except InvalidMessage as e:
            return self._add(self._failed(topic, payload, str(e), qos, now_ns), [])
        except Exception as e:  # a parser bug must not stall the stream either
            log.exception("parser failed on a message from %s", topic)
            reason = f"internal parser error: {type(e).__name__}: {e}"
            return self._add(self._failed(topic, payload, reason, qos, now_ns), [])
        self.monitor.parsed(parsed, now_ns)
        if self.homeassistant is not None and parsed.points and self.router.format_of(topic) == "ruuvi_gateway":
            self.homeassistant.offer(parsed.points)  # a dict store per point; its own task publishes
        assert self.mqtt is not None
        return self._add(self.mqtt.new_message(topic, qos, parsed.gateway, parsed.seq, None, parsed.refused),
                         parsed.points, now)

    def _failed(self, topic: str, payload: bytes, reason: str, qos: int, now_ns: int) -> MqttMessage:
        """A message to dead-letter; an edge-gw batch that still names its seq is confirmed too, or its gateway
        would send the poison batch forever."""
        assert self.mqtt is not None
        seq = batch_seq(topic, payload) if self.router.format_of(topic) == "edge" else None
        gateway = topic.rsplit("/", 2)[-2] if seq is not None else None
        return self.mqtt.new_message(topic, qos, gateway=gateway, seq=seq,
                                     failure=ParseFailure(payload, reason, now_ns))

    def _fetched(self, records: int, readings: int) -> None:
        self._last_message = time.monotonic()
        self.monitor.records(records, readings)

    def _accept_records(self, taken: list[tuple[KafkaMessage, list[Point]]]) -> None:
        """The Kafka records of one fetch, decoded by the input (a poison record comes with its failure and no
        points)."""
        add, now = self.batcher.add, time.monotonic()
        for msg, points in taken:
            closed = add(points, msg, now)
            if closed is not None:
                self._enqueue(closed)
        if taken:
            self._wake.set()  # a batch may have opened: the writer starts its timer
        self._update_flow()

    def _accept_http(self, topic: str, body: bytes) -> HttpMessage:
        """One Ruuvi Gateway HTTP body, as one message: parsed, and in the open batch, which the next free writer
        takes at once (a request must not wait for batch.max_interval). While the writers are busy, requests
        gather in it: one write for all of them."""
        from cloud.http_input import HttpMessage

        now_ns = self._clock()
        self._last_message = time.monotonic()
        self.monitor.received_http()
        future = asyncio.get_running_loop().create_future()
        points: list[Point] = []
        try:
            parsed = self.router.route_format("ruuvi_gateway_http", topic, body, received_ns=now_ns)
        except InvalidMessage as e:
            msg = HttpMessage(topic, failure=ParseFailure(body, str(e), now_ns), future=future)
        except Exception as e:  # a parser bug must not stall the stream either
            log.exception("parser failed on an HTTP body")
            reason = f"internal parser error: {type(e).__name__}: {e}"
            msg = HttpMessage(topic, failure=ParseFailure(body, reason, now_ns), future=future)
        else:
            self.monitor.parsed(parsed, now_ns)
            self.monitor.http_readings(len(parsed.points) + len(parsed.refused))
            msg = HttpMessage(topic, gateway=parsed.gateway, refused=parsed.refused, future=future,
                              readings=len(parsed.points))
            points = parsed.points
        self._urgent = True
        self._add(msg, points)
        self._wake.set()
        return msg

    def _http_busy(self) -> str | None:
        if self._stopping:
            return "the receiver is stopping"
        if self.sink.state == "retrying":
            return f"the database is unavailable ({self.sink.last_error or 'retrying'})"
        if len(self._ready) >= self.settings.queue_batches:
            return "the write queue is full"
        return None

    def _add(self, msg: M, points: list[Point], now: float | None = None) -> M:
        batcher = self.batcher
        opens = batcher.open_batch is None
        closed = batcher.add(points, msg, time.monotonic() if now is None else now)
        if closed is not None:
            self._enqueue(closed)  # which updates the flow
            return msg
        if opens:
            self._wake.set()  # a new batch is open: the writer starts its timer
        # Without a closed batch the queue is as it was: only one more message in flight can fill the window.
        if self.input.inflight >= self._max_inflight or self._stopping:
            self._update_flow()
        return msg

    def _on_connection(self, up: bool) -> None:
        self.monitor.connection(up)
        if up and self.homeassistant is not None:
            self.homeassistant.connected()
        if not up and not self._stopping:
            log.warning("disconnected from the broker")
            self._drop_unwritten()

    def _drop_unwritten(self) -> None:
        """Forget the messages no writer has started on that the input will get again: MQTT QoS 1 messages of a
        lost connection (the broker resends them; QoS 0 messages stay, nobody resends those), Kafka records of
        revoked partitions (their new owner reads them)."""
        batches = list(self._ready)
        if self.batcher.open_batch is not None:
            batches.append(self.batcher.open_batch)
        dropped = 0
        for b in batches:
            if self.mqtt is not None:
                for msg in b.drop(lambda m: isinstance(m, MqttMessage) and m.mid is not None):
                    assert isinstance(msg, MqttMessage)
                    self.mqtt.finish(msg, ack=False)
                    dropped += 1
            elif self.kafka is not None:
                for msg in b.drop(self.kafka.unwanted):
                    self.kafka.forget(msg)
                    dropped += 1
        if dropped:
            log.info("dropped %d unwritten messages the %s will deliver again", dropped,
                     "broker" if self.mqtt is not None else "partitions' new owner")
        self._ready = deque(b for b in self._ready if len(b))
        self._update_flow()  # the queue may have room now: nothing else would resume the input
        self.monitor.update_gauges(self.live())

    def _close_open(self, reason: str) -> None:
        """Close the open batch now (a rebalance waits for it to be written; a retiring receiver saw the end)."""
        closed = self.batcher.close(reason, time.monotonic())
        if closed is not None:
            self._enqueue(closed)

    # ---- batches ----------------------------------------------------------------------------------------------

    def _enqueue(self, batch: Batch[Message]) -> None:
        if self.batcher.open_batch is None:
            self._urgent = False
        self._ready.append(batch)
        self._wake.set()
        self._update_flow()

    def _update_flow(self) -> None:
        full = self.input.inflight >= self._max_inflight or \
            len(self._ready) >= self.settings.queue_batches
        self.input.pause(full or self._stopping)

    async def _next_batch(self) -> Batch[Message] | None:
        while True:
            if self._ready:
                batch = self._ready.popleft()
                self._update_flow()
                return batch
            if self._stopping:
                closed = self.batcher.close("drain", time.monotonic())
                if closed is None:
                    return None
                self._enqueue(closed)
                continue
            now = time.monotonic()
            closed = self.batcher.due(now)
            if closed is None and self._urgent:
                closed = self.batcher.close("http", now)
            if closed is not None:
                self._enqueue(closed)
                continue
            deadline = self.batcher.deadline()
            self._wake.clear()
            timeout = None if deadline is None else max(0.0, deadline - now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _writer(self) -> None:
        while True:
            batch = await self._next_batch()
            if batch is None:
                return
            self._writing += 1
            self._writing_points += batch.n_points
            try:
                await self.write_path.write(batch)
            except SinkAuthError as e:
                log.critical("the database refused our credentials; stopping without acknowledging: %s", e)
                self._fail(e)
                return
            except Exception as e:
                # The sink retries what can be retried; anything else is a bug. Stalling silently with the window
                # full would be worse than stopping: the broker keeps the messages for the next start.
                log.critical("writing a batch failed unexpectedly; stopping without acknowledging", exc_info=True)
                self._fail(e)
                return
            finally:
                self._writing -= 1
                self._writing_points -= batch.n_points
            self._update_flow()
            self.monitor.update_gauges(self.live())

    def _fail(self, exc: BaseException) -> None:
        if self._fatal is None:
            self._fatal = exc
        self._stopping = True
        self._wake.set()

    def live(self) -> Live:
        points = sum(b.n_points for b in self._ready) + self._writing_points + self.batcher.open_points
        return Live(mqtt_connected=self.input.connected, queue_batches=len(self._ready), queue_points=points,
                    inflight_messages=self.input.inflight,
                    input="mqtt" if self.kafka is None else "kafka",
                    kafka_partitions=self.kafka.status() if self.kafka is not None else {})

    # ---- lifecycle --------------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None, *, ready: Callable[[], Awaitable[None] | None] | None = None,
                  retire: bool = False, idle_s: float = 3.0) -> None:
        """Receive and write until `stop` is set (then drain: write and acknowledge what is in memory, up to
        DRAIN_TIMEOUT_S) or until the database refuses our credentials (ReceiverError).

        `retire`: leave for good. Unsubscribe (the rest of a shared group takes over), write what the broker had
        queued for this session until nothing came for `idle_s`, then end the session. Without it, Mosquitto keeps
        queueing a stopped member's share of a shared subscription until the session expires."""
        stop = stop or asyncio.Event()
        if self.mqtt is not None:
            self.mqtt.retire = retire
        self.monitor.started_ns = self._clock()
        idle_task: asyncio.Future[None] | None = None
        watch_task: asyncio.Future[None] | None = None
        writers = [asyncio.create_task(self._writer(), name=f"cloud-ingest-writer-{i}")
                   for i in range(self.settings.writers)]
        status_task = asyncio.create_task(self.monitor.run(self.settings.status_interval_s, self.live),
                                          name="cloud-ingest-status")
        alerts_task = asyncio.create_task(self.alerts.run(), name="cloud-ingest-alerts") \
            if self.alerts is not None else None
        ha_task = None if self.homeassistant is None or self.mqtt is None else \
            asyncio.create_task(self.homeassistant.run(self.mqtt.publisher.publish), name="cloud-ingest-ha")
        try:
            if self.http is not None:
                # Before the broker: readings can be stored while it is away (only dead letters need it).
                h = self.http.settings
                try:
                    await self.http.start()
                except OSError as e:
                    raise ReceiverError(f"http.listen: cannot listen on {h.host}:{h.port}: {e.strerror or e}") \
                        from None
                self.monitor.counts.http_listen = self.http.url
                log.info("Ruuvi Gateway HTTP listener on %s", self.http.url)
            else:
                self.monitor.counts.http_listen = ""
            try:
                await self.input.connect(stop)
            except InputError as e:
                raise ReceiverError(str(e)) from None
            if not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.input.subscribed.wait(), 10)
                if self.settings.kafka is not None:
                    k = self.settings.kafka
                    log.info("consuming %s in group %s", k.topic, k.group)
                else:
                    log.info("%s %s", "unsubscribed from" if retire else "subscribed to",
                             ", ".join(self.settings.mqtt.subscriptions))
                if ready is not None:
                    r = ready()
                    if r is not None:
                        await r
            if retire and not stop.is_set():
                idle_task = asyncio.ensure_future(self._stop_when_idle(stop, idle_s))
            if self.mqtt is not None:
                watch_task = asyncio.ensure_future(self.mqtt.watch(stop))
            fatal_wait = asyncio.ensure_future(self._wait_fatal())
            stop_wait = asyncio.ensure_future(stop.wait())
            await asyncio.wait({fatal_wait, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            fatal_wait.cancel()
            stop_wait.cancel()
            await self._shutdown(writers)
        finally:
            for t in (idle_task, watch_task):
                if t is not None:
                    t.cancel()
            tasks = [*writers, status_task, *(t for t in (alerts_task, ha_task) if t is not None)]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.alerts is not None:
                self.alerts.save()
            self.monitor.write_status(self.live())
            if self.http is not None:
                self.http.give_up_all()
                await self.http.stop()
            if self.kafka_dlq is not None:
                await self.kafka_dlq.close()
            with contextlib.suppress(Exception):
                await self.sink.close()
            self.write_path.close()
            if self.journal is not None:
                self.journal.close()
        if self._fatal is not None:
            detail = str(self._fatal) or type(self._fatal).__name__
            named = isinstance(self._fatal, (SinkAuthError, InputError))  # they say what failed themselves
            raise ReceiverError(detail if named else f"write failed: {detail}") \
                from self._fatal

    async def _stop_when_idle(self, stop: asyncio.Event, idle_s: float) -> None:
        self._last_message = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.1)
            idle = time.monotonic() - self._last_message >= idle_s
            if idle:
                self._close_open("drain")  # nothing else is coming: don't wait
            if idle and self.input.inflight == 0 and not self._ready and not self._writing \
                    and self.batcher.open_batch is None:
                log.info("retire: nothing more queued for %s; ending its session", self.monitor.client_id)
                stop.set()

    async def _wait_fatal(self) -> None:
        while self._fatal is None:
            await asyncio.sleep(0.1)

    async def _shutdown(self, writers: list[asyncio.Task[None]]) -> None:
        self._stopping = True
        self.input.pause(True)  # no new messages; those the broker sent stay unacknowledged and come back
        self._wake.set()
        if self._fatal is None:
            done, _ = await asyncio.wait(writers, timeout=DRAIN_TIMEOUT_S)
            if len(done) < len(writers):
                log.warning("could not write everything within %.0f s; the broker will redeliver the rest",
                            DRAIN_TIMEOUT_S)
        for t in writers:
            t.cancel()
        await asyncio.gather(*writers, return_exceptions=True)
        self.input.give_up_all()  # whatever was not written is not acknowledged
        if self.alerts is not None and self._fatal is None:
            await self.alerts.close()  # the PUBACKs of the alert events, then their state on disk
        if self.http is not None:
            self.http.give_up_all()  # 503: the gateway sends it again
        retiring = self.mqtt is not None and self.mqtt.retire
        await self.input.disconnect(end_session=retiring and self._fatal is None)
        self.monitor.update_gauges(self.live())

