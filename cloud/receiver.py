"""The MQTT side: gmqtt (MQTT v5) in, batches out, PUBACK only once the batch holding a message is written.

How nothing is lost (docs/cloud-ingest.md explains the broker side):
- `optimistic_acknowledgement=False` and an `async` on_message: gmqtt sends the PUBACK with the int the coroutine
  returns, when it returns. The coroutine returns 0 only after the message's batch was written (or the message was
  dead-lettered). It raises NotAcknowledged instead when the message must not be acknowledged; gmqtt then sends
  nothing and the broker redelivers it.
- A fixed client id, `clean_start=False` and a session expiry: after a crash, a restart or a database outage the
  broker still holds every unacknowledged message and redelivers it.
- A PUBACK answers one delivery on one connection. A message received before a reconnect is still written, but not
  acknowledged: the broker resends it on the new connection (same packet id, DUP set) and that copy is acknowledged,
  after its own batch, which is written after the first one. Acknowledging the old copy could otherwise hit a packet
  id the broker has since given to a different message.
- The window: the broker sends at most `receive_maximum` unacknowledged messages, so a batch also closes when it holds
  `batch_max_messages()` of them, half the window by default: one batch fills while the one before it is written.
  Otherwise one-reading-per-message traffic would stall at the window until the timer (see batcher.py).
- Backpressure: the receiver stops reading its socket while `receive_maximum` messages are unacknowledged, or while
  `queue_batches` closed batches wait for a writer. The broker's window alone is not enough: Mosquitto 2.0.11 sends
  past the client's Receive Maximum once PUBACKs start to flow (measured here; eclipse-mosquitto/mosquitto#2301).
- After a disconnect, messages not yet being written are dropped from memory (the broker resends them), so a
  flapping connection cannot pile up copies.
- Dedup survives restarts: each written batch's points go to the dedup journal (cloud/dedup_journal.py) after the
  database write and before the batch's PUBACKs, and a new process loads the journal first. Never before the write:
  a journaled point counts as written, so its redelivered copy would be dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import gmqtt
from gmqtt.mqtt.constants import MQTTv50

from cloud import dlq, status
from cloud.batcher import Batch, Batcher
from cloud.config import Config, dedup_state_file, mqtt_credentials
from cloud.dedup import Dedup
from cloud.dedup_journal import DedupJournal, JournalError
from cloud.formats import Router
from cloud.lineproto import encode
from cloud.metrics import Metrics
from cloud.model import InvalidMessage, Parsed, Point
from cloud.sink import Sink, SinkAuthError, WriteOutcome

log = logging.getLogger("cloud.receiver")

DRAIN_TIMEOUT_S = 20.0
CONNECT_RETRY_MAX_S = 30.0


class ReceiverError(Exception):
    """The receiver had to stop: the database refused our credentials, or the broker refused the connection."""


class NotAcknowledged(Exception):
    """Raised from on_message so that gmqtt sends no PUBACK; the broker will redeliver the message."""


class AfterWrite(Protocol):
    async def after_write(self, points: Sequence[Point]) -> None: ...


@dataclass(slots=True, eq=False)
class _Msg:
    """One received message, from its arrival to its acknowledgement."""

    topic: str
    n_points: int
    generation: int  # the MQTT connection it arrived on
    future: asyncio.Future[None] | None  # None for QoS 0: nothing to acknowledge


@dataclass(slots=True)
class _Queued:
    seq: int
    batch: Batch[_Msg]
    outcome_done: bool = False


class Receiver:
    def __init__(
        self,
        cfg: Config,
        *,
        sink: Sink,
        router: Router,
        rollups: AfterWrite | None = None,
        metrics: Metrics | None = None,
        status_file: Path | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.cfg = cfg
        self.sink = sink
        self.router = router
        self.rollups = rollups
        self.metrics = metrics or Metrics()
        self.status_file = status_file
        self._clock = clock
        self.batcher: Batcher[_Msg] = Batcher(
            max_points=cfg.batch.max_points,
            max_interval_s=float(cfg.batch.max_interval),
            max_messages=cfg.batch_max_messages(),
        )
        self.dedup = Dedup(window_s=float(cfg.dedup.window), max_entries=cfg.dedup.max_entries) \
            if cfg.dedup.enabled else None
        self.journal: DedupJournal | None = None
        self._journal_failed = False
        state_file = dedup_state_file(cfg)
        if self.dedup is not None and state_file is not None:
            self._open_journal(self.dedup, state_file)
        self.counts = status.Status()  # the running totals; snapshot() adds the live state
        self.last_write_ns = 0
        self.last_batch_points = 0
        self.started_ns = 0
        self._ready: deque[_Queued] = deque()
        self._writing: dict[int, _Queued] = {}
        self._next_seq = 0
        self._next_ack = 0
        self._inflight = 0  # QoS 1 messages received and not yet acknowledged or given up
        self._generation = 0
        self._connected = False
        self._paused = False
        self._wake = asyncio.Event()
        self._stopping = False
        self._fatal: BaseException | None = None
        self._client: Any = None
        self._subscribed: asyncio.Event = asyncio.Event()
        self._received_by_topic: dict[str, Any] = {}
        self._retire = False
        self._last_message = 0.0
        self._status_failed = False
        self._restore_counts()

    def _open_journal(self, dedup: Dedup, path: Path) -> None:
        t0 = time.monotonic()
        try:
            self.journal = DedupJournal(path, max_entries=self.cfg.dedup.max_entries)
            dedup.remember(self.journal.load())
        except JournalError as e:
            raise ReceiverError(str(e)) from None
        log.info("dedup: %d measurements remembered from %s (%.2f s)", len(dedup), path, time.monotonic() - t0)

    def _journal(self, written: list[Point]) -> None:
        assert self.journal is not None
        try:
            self.journal.record(written)
        except JournalError as e:
            # The memory in this process is still right; only a restart could now write a copy twice.
            if not self._journal_failed:
                log.error("cannot record written points for dedup (a restart may write copies again): %s", e)
            self._journal_failed = True
        else:
            if self._journal_failed:
                log.info("dedup state file writable again")
            self._journal_failed = False

    # ---- MQTT callbacks ---------------------------------------------------------------------------------------

    def _on_connect(self, client: Any, flags: int, rc: int, properties: dict[str, Any]) -> None:
        self._generation += 1
        self._connected = True
        self.metrics.mqtt_connected.set(1)
        log.info("connected to the broker (session present: %s)", bool(flags))
        if rc != 0:
            return
        topics = self.subscriptions()
        if self._retire:
            # Leaving: no new messages for this session; what the broker queued for it still comes.
            client.unsubscribe(topics)
            self._subscribed.set()
            return
        # Subscribing again on every connect is harmless with a kept session and needed if the broker lost it.
        client.subscribe([gmqtt.Subscription(t, qos=self.cfg.mqtt.qos) for t in topics])

    def _on_disconnect(self, client: Any, packet: Any, exc: Any = None) -> None:
        self._generation += 1
        self._connected = False
        self._paused = False  # the next connection starts reading
        self.metrics.mqtt_connected.set(0)
        if not self._stopping:
            log.warning("disconnected from the broker")
            self._drop_unwritten()

    def _drop_unwritten(self) -> None:
        """Forget the QoS 1 messages of the lost connection that no writer has started on: the broker resends them.
        QoS 0 messages (nobody resends those) stay."""
        batches = [q.batch for q in self._ready]
        if self.batcher.open_batch is not None:
            batches.append(self.batcher.open_batch)
        dropped = 0
        for b in batches:
            points: list[Point] = []
            tokens: list[_Msg] = []
            i = 0
            for msg in b.tokens:
                if msg.future is None:
                    points.extend(b.points[i:i + msg.n_points])
                    tokens.append(msg)
                else:
                    self._finish(msg, ack=False)
                    dropped += 1
                i += msg.n_points
            b.points[:], b.tokens[:] = points, tokens
        if dropped:
            log.info("dropped %d unwritten messages of the lost connection; the broker will resend them", dropped)
        self._update_gauges()

    def subscriptions(self) -> list[str]:
        prefix = f"$share/{self.cfg.mqtt.shared_group}/" if self.cfg.mqtt.shared_group else ""
        return [prefix + t for t in self.cfg.formats.topics()]

    def _on_subscribe(self, client: Any, mid: int, qos: Any, properties: Any) -> None:
        refused = [q for q in qos if q >= 0x80]
        if refused:
            log.error("the broker refused %d subscription(s): reason codes %s", len(refused), refused)
        self._subscribed.set()

    async def _on_message(self, client: Any, topic: str, payload: bytes, qos: int, properties: dict[str, Any]) -> int:
        # Everything up to the first await runs in arrival order (gmqtt schedules one task per message, FIFO).
        msg = self._accept(topic, payload, qos, properties)
        if msg is None or msg.future is None:
            return 0
        await msg.future
        return 0

    def _accept(self, topic: str, payload: bytes, qos: int, properties: dict[str, Any]) -> _Msg | None:
        m = self.metrics
        now_ns = self._clock()
        self._last_message = time.monotonic()
        if topic == self.cfg.mqtt.dlq_topic:
            return None  # our own dead letters, if a wildcard subscription catches them: never loop
        if properties.get("dup"):
            self.counts.redeliveries += 1
            m.redeliveries.inc()
        self.counts.received_messages += 1
        self._received_counter(topic).inc()
        try:
            parsed = self.router.route(topic, payload, received_ns=now_ns)
        except InvalidMessage as e:
            self._dead_letter(topic, payload, str(e), "parse", now_ns)
            return None
        except Exception as e:  # a parser bug must not stall the stream either
            log.exception("parser failed on a message from %s", topic)
            self._dead_letter(topic, payload, f"internal parser error: {type(e).__name__}: {e}", "parse", now_ns)
            return None
        self._track_gateway(parsed, now_ns)
        n = len(parsed.points)
        self.counts.received_readings += n
        m.readings_received.inc(n)
        loop = asyncio.get_running_loop()
        future = loop.create_future() if qos > 0 else None
        msg = _Msg(topic, n, self._generation, future)
        if future is not None:
            self._inflight += 1
        closed = self.batcher.add(parsed.points, msg, time.monotonic())
        if closed is not None:
            self._enqueue(closed)
        elif self.batcher.open_messages == 1:
            self._wake.set()  # a new batch is open: the writer starts its timer
        self._update_flow()
        return msg

    def _received_counter(self, topic: str) -> Any:
        # One counter child per topic, cached: Ruuvi Gateway traffic has a topic per tag, and labels() and the
        # format lookup cost more than the rest of the bookkeeping.
        child = self._received_by_topic.get(topic)
        if child is None:
            if len(self._received_by_topic) > 50_000:
                self._received_by_topic.clear()
            fmt = self.router.format_of(topic) or "unknown"
            child = self._received_by_topic[topic] = self.metrics.messages_received.labels(fmt)
        return child

    def _track_gateway(self, parsed: Parsed, now_ns: int) -> None:
        name = parsed.gateway or (parsed.status.gateway if parsed.status else None)
        if name is None:
            return
        gw = self.counts.gateways.get(name)
        if gw is None:
            gw = self.counts.gateways[name] = status.GatewayState()
        gw.last_seen_ns = now_ns
        gw.readings += len(parsed.points)
        if parsed.status is not None:
            gw.state, gw.state_ns = parsed.status.state, parsed.status.time_ns
        # The per-gateway gauges are set by the status loop, not per message.

    def _dead_letter(self, topic: str, payload: bytes, reason: str, stage: str, now_ns: int) -> None:
        record = dlq.record(topic=topic, payload=payload, reason=reason, stage=stage, time_ns=now_ns,
                            receiver=self.cfg.mqtt.client_id, max_payload=int(self.cfg.dlq.max_payload))
        # QoS 1 on the same connection: the broker has the record before it sees the PUBACK of the message.
        # gmqtt keeps it and resends it after a reconnect.
        try:
            self._client.publish(self.cfg.mqtt.dlq_topic, record, qos=1)
        except Exception:
            log.exception("could not publish a dead letter for %s", topic)
        self.counts.dead_letters += 1
        self.metrics.dead_letters.labels(stage).inc()
        log.warning("dead letter (%s) from %s: %s", stage, topic, reason[:300])

    # ---- batches ----------------------------------------------------------------------------------------------

    def _enqueue(self, batch: Batch[_Msg]) -> None:
        self._ready.append(_Queued(self._next_seq, batch))
        self._next_seq += 1
        self._wake.set()
        self._update_flow()

    def _update_flow(self) -> None:
        full = self._inflight >= self.cfg.mqtt.receive_maximum or len(self._ready) >= self.cfg.batch.queue_batches
        self._pause_reading(full or self._stopping)

    def _pause_reading(self, pause: bool) -> None:
        # gmqtt has no flow control of its own; pausing the transport makes the socket (and then the broker) wait.
        conn = getattr(self._client, "_connection", None)
        transport = getattr(conn, "_transport", None)
        if transport is None or pause == self._paused:
            return
        with contextlib.suppress(RuntimeError, AttributeError):
            if pause:
                transport.pause_reading()
            else:
                transport.resume_reading()
            self._paused = pause

    async def _next_batch(self) -> _Queued | None:
        while True:
            if self._ready:
                q = self._ready.popleft()
                self._update_flow()
                return q
            if self._stopping:
                closed = self.batcher.close("drain", time.monotonic())
                if closed is None:
                    return None
                self._enqueue(closed)
                continue
            now = time.monotonic()
            closed = self.batcher.due(now)
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
            q = await self._next_batch()
            if q is None:
                return
            self._writing[q.seq] = q
            try:
                await self._write(q.batch)
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
            q.outcome_done = True
            self._acknowledge_in_order()
            self._update_gauges()

    def _fail(self, exc: BaseException) -> None:
        if self._fatal is None:
            self._fatal = exc
        self._stopping = True
        self._wake.set()

    async def _write(self, batch: Batch[_Msg]) -> None:
        m = self.metrics
        t0 = time.monotonic()
        points = batch.points
        if self.dedup is not None and points:
            result = self.dedup.filter(points)
            points = result.kept
            for gw, n in result.duplicates.items():
                m.duplicates.labels(gw).inc(n)
                self.counts.duplicates += n
                if gw in self.counts.gateways:
                    self.counts.gateways[gw].duplicates += n
        if points:
            outcome: WriteOutcome = await self.sink.write(points)
            written = points
            if outcome.rejected:
                self._dead_letter_points(batch, outcome.rejected)
                bad = {id(p) for p, _ in outcome.rejected}
                written = [p for p in points if id(p) not in bad]
            if self.journal is not None and written:
                self._journal(written)  # before this batch's PUBACKs (_writer acknowledges after _write)
            self.counts.written += outcome.written
            m.points_written.inc(outcome.written)
            if self.rollups is not None and outcome.written:
                try:
                    await self.rollups.after_write(written)
                except SinkAuthError:
                    raise
                except Exception:
                    # The raw points are stored; a failed late-data rollup is logged, not worth a redelivery.
                    log.exception("re-running the rollups for late data failed")
            now_ns = self._clock()
            newest = max(p.time_ns for p in points)
            lag = max(0.0, (now_ns - newest) / 1e9)
            m.lag_seconds.observe(lag)
            m.lag_last.set(lag)
            self.last_write_ns = now_ns
            m.last_write.set(now_ns / 1e9)
        self.last_batch_points = len(points)
        m.batches.labels(batch.reason).inc()
        m.batch_points.observe(len(batch.points))
        m.batch_messages.observe(len(batch.tokens))
        m.write_seconds.observe(time.monotonic() - t0)

    def _dead_letter_points(self, batch: Batch[_Msg], rejected: list[tuple[Point, str]]) -> None:
        topic_of: dict[int, str] = {}
        it = iter(batch.points)
        for msg in batch.tokens:
            for _ in range(msg.n_points):
                topic_of[id(next(it))] = msg.topic
        now_ns = self._clock()
        for p, reason in rejected:
            try:
                line = encode([p])
            except Exception:  # the point may be rejected precisely because it doesn't encode
                line = repr(p).encode()
            self._dead_letter(topic_of.get(id(p), ""), line, reason, "write", now_ns)

    def _acknowledge_in_order(self) -> None:
        # Batches may finish out of order with several writers; acknowledging strictly in order keeps the rule
        # "a redelivered copy is acknowledged only after the first copy was written" (see the module docstring).
        while self._next_ack in self._writing and self._writing[self._next_ack].outcome_done:
            q = self._writing.pop(self._next_ack)
            self._next_ack += 1
            for msg in q.batch.tokens:
                self._finish(msg, ack=msg.generation == self._generation)
        self._update_flow()

    def _finish(self, msg: _Msg, *, ack: bool) -> None:
        fut = msg.future
        if fut is None or fut.done():
            return
        self._inflight -= 1
        if ack:
            fut.set_result(None)
        else:
            fut.set_exception(NotAcknowledged())

    def _update_gauges(self) -> None:
        """Gauges are set after each write and by the status loop; per message they would cost more than the work."""
        m = self.metrics
        for name, gw in self.counts.gateways.items():
            m.gateway_last_seen.labels(name).set(gw.last_seen_ns / 1e9)
            m.gateway_online.labels(name).set(0 if gw.state == "offline" else 1)
        m.queue_batches.set(len(self._ready))
        m.queue_points.set(self._queue_points())
        m.inflight.set(self._inflight)

    def _queue_points(self) -> int:
        return sum(len(q.batch.points) for q in (*self._ready, *self._writing.values())) + self.batcher.open_points

    # ---- status -----------------------------------------------------------------------------------------------

    def snapshot(self) -> status.Status:
        return dataclasses.replace(
            self.counts,
            client_id=self.cfg.mqtt.client_id,
            pid=os.getpid(),
            started_ns=self.started_ns,
            updated_ns=self._clock(),
            mqtt_connected=self._connected,
            sink_state=str(getattr(self.sink, "state", "unknown")),
            sink_error=str(getattr(self.sink, "last_error", None) or ""),
            queue_batches=len(self._ready),
            queue_points=self._queue_points(),
            inflight_messages=self._inflight,
            last_write_ns=self.last_write_ns,
            last_batch_points=self.last_batch_points,
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

    def write_status(self) -> None:
        if self.status_file is None:
            return
        sink_ok = getattr(self.sink, "state", "") != "retrying"
        self.metrics.sink_ok.set(1 if sink_ok else 0)
        try:
            status.write(self.status_file, self.snapshot())
        except OSError as e:
            if not self._status_failed:  # once, not every interval
                log.warning("cannot write the status file %s: %s", self.status_file, e)
            self._status_failed = True
        else:
            self._status_failed = False

    async def _status_loop(self) -> None:
        failed_before = 0
        while True:
            failed = int(getattr(getattr(self.sink, "_writer", None), "attempts_failed", 0))
            if failed > failed_before:
                self.metrics.write_errors.inc(failed - failed_before)
                failed_before = failed
            self.metrics.sink_ok.set(0 if getattr(self.sink, "state", "") == "retrying" else 1)
            self._update_gauges()
            self.write_status()
            await asyncio.sleep(float(self.cfg.status.interval))

    # ---- lifecycle --------------------------------------------------------------------------------------------

    def _make_client(self) -> Any:
        mq = self.cfg.mqtt
        client = gmqtt.Client(
            mq.client_id,
            clean_session=False,
            optimistic_acknowledgement=False,
            session_expiry_interval=int(mq.session_expiry),
            receive_maximum=mq.receive_maximum,
        )
        client.set_config({"reconnect_retries": -1, "reconnect_delay": 1})
        user, password = mqtt_credentials(self.cfg)
        if user:
            client.set_auth_credentials(user, password or None)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _ssl_context(self) -> ssl.SSLContext | bool:
        mq = self.cfg.mqtt
        if urlsplit(mq.url).scheme != "mqtts":
            return False
        try:
            ctx = ssl.create_default_context(cafile=mq.ca_file or None)
            if mq.cert_file:
                ctx.load_cert_chain(mq.cert_file, mq.key_file)
        except (ssl.SSLError, OSError) as e:
            # A file that does not load never starts to: say which one, once, instead of retrying forever.
            raise ReceiverError(f"MQTT TLS setup failed (mqtt.ca_file={mq.ca_file or '-'}, "
                                f"mqtt.cert_file={mq.cert_file or '-'}): {e}") from None
        return ctx

    async def _connect(self, stop: asyncio.Event) -> None:
        parts = urlsplit(self.cfg.mqtt.url)
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        delay = 0.5
        ssl_context = self._ssl_context()
        while not stop.is_set():
            try:
                await self._client.connect(parts.hostname, port, ssl=ssl_context,
                                           keepalive=self.cfg.mqtt.keepalive, version=MQTTv50)
                return
            except OSError as e:
                log.warning("cannot reach the broker at %s:%s (%s); retrying in %.1f s", parts.hostname, port, e, delay)
            except Exception as e:
                # gmqtt raises MQTTConnectError for a refused CONNECT (bad credentials, not authorised).
                raise ReceiverError(f"the broker refused the connection: {e}") from None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, CONNECT_RETRY_MAX_S)

    async def run(self, stop: asyncio.Event | None = None, *, ready: Callable[[], Awaitable[None] | None] | None = None,
                  retire: bool = False, idle_s: float = 3.0) -> None:
        """Receive and write until `stop` is set (then drain: write and acknowledge what is in memory, up to
        DRAIN_TIMEOUT_S) or until the database refuses our credentials (ReceiverError).

        `retire`: leave for good. Unsubscribe (the rest of a shared group takes over), write what the broker had
        queued for this session until nothing came for `idle_s`, then end the session. Without it, Mosquitto keeps
        queueing a stopped member's share of a shared subscription until the session expires."""
        stop = stop or asyncio.Event()
        self._retire = retire
        loop = asyncio.get_running_loop()
        previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(_quiet_not_acknowledged)
        self.started_ns = self._clock()
        self._client = self._make_client()
        idle_task: asyncio.Future[None] | None = None
        writers = [asyncio.create_task(self._writer(), name=f"cloud-ingest-writer-{i}")
                   for i in range(self.cfg.batch.writers)]
        status_task = asyncio.create_task(self._status_loop(), name="cloud-ingest-status")
        try:
            await self._connect(stop)
            if not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._subscribed.wait(), 10)
                log.info("%s %s", "unsubscribed from" if retire else "subscribed to", ", ".join(self.subscriptions()))
                if ready is not None:
                    r = ready()
                    if r is not None:
                        await r
            if retire and not stop.is_set():
                idle_task = asyncio.ensure_future(self._stop_when_idle(stop, idle_s))
            fatal_wait = asyncio.ensure_future(self._wait_fatal())
            stop_wait = asyncio.ensure_future(stop.wait())
            await asyncio.wait({fatal_wait, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            fatal_wait.cancel()
            stop_wait.cancel()
            await self._shutdown(writers)
        finally:
            if idle_task is not None:
                idle_task.cancel()
            for t in (*writers, status_task):
                t.cancel()
            await asyncio.gather(*writers, status_task, return_exceptions=True)
            self.write_status()
            with contextlib.suppress(Exception):
                await self.sink.close()
            if self.journal is not None:
                self.journal.close()
            loop.set_exception_handler(previous_handler)
        if self._fatal is not None:
            detail = str(self._fatal) or type(self._fatal).__name__
            raise ReceiverError(detail if isinstance(self._fatal, SinkAuthError) else f"write failed: {detail}") \
                from self._fatal

    async def _stop_when_idle(self, stop: asyncio.Event, idle_s: float) -> None:
        self._last_message = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.1)
            idle = time.monotonic() - self._last_message >= idle_s
            if idle and self.batcher.open_batch is not None:
                closed = self.batcher.close("drain", time.monotonic())  # nothing else is coming: don't wait
                if closed is not None:
                    self._enqueue(closed)
            if idle and self._inflight == 0 and not self._ready and not self._writing \
                    and self.batcher.open_batch is None:
                log.info("retire: nothing more queued for %s; ending its session", self.cfg.mqtt.client_id)
                stop.set()

    async def _wait_fatal(self) -> None:
        while self._fatal is None:
            await asyncio.sleep(0.1)

    async def _shutdown(self, writers: list[asyncio.Task[None]]) -> None:
        self._stopping = True
        self._pause_reading(True)  # no new messages; those the broker sent stay unacknowledged and come back
        self._wake.set()
        if self._fatal is None:
            done, _ = await asyncio.wait(writers, timeout=DRAIN_TIMEOUT_S)
            if len(done) < len(writers):
                log.warning("could not write everything within %.0f s; the broker will redeliver the rest",
                            DRAIN_TIMEOUT_S)
        for t in writers:
            t.cancel()
        await asyncio.gather(*writers, return_exceptions=True)
        # Whatever was not written is not acknowledged.
        for q in [*self._writing.values(), *self._ready]:
            for msg in q.batch.tokens:
                self._finish(msg, ack=False)
        leftover = self.batcher.close("drain", time.monotonic())
        if leftover is not None:
            for msg in leftover.tokens:
                self._finish(msg, ack=False)
        # Let the PUBACKs and dead letters just queued reach the socket before saying goodbye.
        await asyncio.sleep(0)
        if self._connected:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._client._persistent_storage.wait_empty(), 5)
        with contextlib.suppress(Exception):
            if self._retire and self._fatal is None:
                # Session expiry 0 in the DISCONNECT ends the session at once (MQTT v5 3.14.2.2.2).
                await self._client.disconnect(session_expiry_interval=0)
            else:
                await self._client.disconnect()
        self._update_gauges()


def _quiet_not_acknowledged(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # gmqtt's done-callback calls result() on our on_message task: NotAcknowledged surfaces there, by design.
    if isinstance(context.get("exception"), NotAcknowledged):
        return
    loop.default_exception_handler(context)
