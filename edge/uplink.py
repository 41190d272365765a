"""The uplink: drains the SQLite buffer to MQTT in QoS 1 batches, deleting readings only after their PUBACK.

One thread owns everything here: its own Store connection, the MQTT session (edge.mqtt.Session, driven without paho's
network thread) and the in-flight window. Delivery is at-least-once:

- each connection is a fresh clean session; when it drops, every unacknowledged batch is forgotten and its readings,
  still in the buffer, are sent again from the store on the next connection (paho never re-sends on its own);
- at connect the uplink notes the buffer's max id. Ids above it are *live*: they go first, as soon as they are
  committed. Ids up to it are *backfill*: drained from the oldest, in parallel, capped at `backfill_rate` readings/s
  and never taking the last free slot of the window, so a backlog neither floods the broker nor starves live data.
  The store gives a reading its id only once it is ready to send, and ids only grow, so the two cursors never
  skip a reading.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.clock import Clock, SystemClock
from edge.metrics import Counters
from edge.mqtt import ConnectionLost, ConnectionRefused, MqttSettings, Session, UplinkError
from edge.store import Store, StoredReading, StoreLimits
from edge.wire import (
    MAX_BATCH_BYTES,
    WireError,
    batch_topic,
    check_gateway_id,
    encode_stored_batch,
    status_payload,
    status_topic,
)

__all__ = ["MqttSettings", "Uplink", "UplinkError", "UplinkSettings"]

log = logging.getLogger("edge.uplink")

STATUS_SECTION = "uplink"
SEQ_BLOCK = 1000  # batch seqs reserved per status write, so a crash never reuses a seq
STABLE_S = 10.0  # a connection that lasted this long resets the reconnect backoff


@dataclass(frozen=True)
class UplinkSettings:
    batch_max_readings: int = 500
    batch_max_bytes: int = MAX_BATCH_BYTES
    inflight: int = 16  # unacknowledged batches at most
    backfill_rate: float = 20_000.0  # readings/s for the backlog; math.inf for no cap
    backoff_min_s: float = 0.5
    backoff_max_s: float = 60.0
    poll_s: float = 0.05  # how often an idle uplink looks for new rows
    ack_timeout_s: float = 30.0  # a batch unacknowledged this long means the connection is dead
    status_interval_s: float = 1.0  # at most one status write per interval

    def __post_init__(self) -> None:
        if self.batch_max_readings < 1 or self.batch_max_bytes < 1024 or self.inflight < 1:
            msg = f"uplink settings out of range: {self}"
            raise UplinkError(msg)
        if not self.backfill_rate > 0 or not 0 < self.backoff_min_s <= self.backoff_max_s:
            msg = f"uplink settings out of range: {self}"
            raise UplinkError(msg)


class Backoff:
    """Capped exponential backoff with jitter: the n-th delay is uniform in [d/2, d], d = min(max, min * 2**n)."""

    def __init__(self, min_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.min_s, self.max_s = min_s, max_s
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.max_s, self.min_s * 2 ** min(self.attempt, 30))
        self.attempt += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class TokenBucket:
    """Readings/s budget for the backfill lane; `burst` tokens at most."""

    def __init__(self, rate: float, burst: float, initial: float = 0.0) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = initial
        self._last = time.monotonic()

    def available(self) -> float:
        if math.isinf(self.rate):
            return math.inf
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self._last) * self.rate)
        self._last = now
        return self.tokens

    def take(self, n: int) -> None:
        if not math.isinf(self.rate):
            self.tokens -= n

    def wait_s(self, n: float) -> float:
        if math.isinf(self.rate):
            return 0.0
        return max(0.0, (n - self.available()) / self.rate)


@dataclass(slots=True)
class _Batch:
    ids: list[int]
    live: bool
    sent_mono: float


class Uplink:
    """Forward the buffer at `db_path` to the broker until stopped. See the module docstring for the guarantees."""

    def __init__(self, db_path: str | Path, gateway_id: str, mqtt: MqttSettings, settings: UplinkSettings,
                 counters: Counters, clock: Clock | None = None, limits: StoreLimits | None = None) -> None:
        try:
            self.gateway_id = check_gateway_id(gateway_id)
            self._batch_topic = batch_topic(mqtt.topic_prefix, gateway_id)
            self._status_topic = status_topic(mqtt.topic_prefix, gateway_id)
        except WireError as exc:
            raise UplinkError(str(exc)) from None
        self.db_path = Path(db_path)
        self.mqtt = mqtt
        self.settings = settings
        self.counters = counters
        self.clock = clock or SystemClock()
        self.limits = limits  # the daemon's bounds, so acks vacuum by the configured cap
        self._client_id = mqtt.client_id or f"edge-gw-{gateway_id}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # guards _state for state() callers on other threads
        self._state: dict[str, Any] = {
            "state": "stopped",
            "broker": mqtt.broker,
            "connected": False,
            "last_ack_ns": None,
            "last_error": None,
            "inflight": 0,
            "inflight_readings": 0,
            "reconnects": 0,
            "seq": 0,
        }
        self._status_written = 0.0
        self._stop_timeout = 5.0
        self._status_dirty = True
        self._seq = 0
        self._seq_reserved = 0

    def _open_store(self) -> Store:
        # One connection per thread: the uplink thread and wait_drained's caller each open their own.
        return Store(self.db_path, clock=self.clock, limits=self.limits)

    # ---- public API, callable from any thread -------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="uplink", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop cleanly: wait up to `timeout` s for in-flight PUBACKs, publish the retained `offline`, disconnect."""
        self._stop_timeout = timeout
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout + 2.0)
            if self._thread.is_alive():
                log.warning("uplink thread did not stop within %.1f s", timeout + 2.0)
            self._thread = None

    def state(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._state)

    def wait_connected(self, timeout: float) -> bool:
        """True once connected; on timeout False, or UplinkError with the last connection error if there was one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.state()
            if st["connected"]:
                return True
            if st["state"] == "refused":  # the broker said no; retrying will not change that soon
                break
            time.sleep(0.02)
        err = self.state()["last_error"]
        if err:
            raise UplinkError(err)
        return False

    def wait_drained(self, timeout: float, progress: Callable[[int], None] | None = None) -> bool:
        """Wait until the buffer holds no reading ready to send and nothing is in flight; True if so in time.

        `progress` gets the number of readings still buffered, about five times a second."""
        deadline = time.monotonic() + timeout
        store = self._open_store()
        try:
            while True:
                remaining = store.stats().rows
                if progress is not None:
                    progress(remaining)
                if remaining == 0 and self.state()["inflight"] == 0:
                    return True
                if time.monotonic() >= deadline:
                    return False
                time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        finally:
            store.close()

    # ---- the uplink thread --------------------------------------------------------------------------------------

    def _set(self, **changes: Any) -> None:
        with self._lock:
            if any(self._state.get(k) != v for k, v in changes.items()):
                self._status_dirty = True
            self._state.update(changes)

    def _run(self) -> None:
        backoff = Backoff(self.settings.backoff_min_s, self.settings.backoff_max_s)
        store: Store | None = None
        first = True
        while not self._stop.is_set():
            try:
                if store is None:
                    store = self._open_store()
                    self._load_seq(store)
                if not first:
                    self.counters.inc("uplink_reconnects")
                    self._set(reconnects=self.state()["reconnects"] + 1)
                first = False
                self._set(state="connecting")
                self._write_status(store)
                session = self._connect()
                connected = time.monotonic()
                try:
                    self._serve(session, store)
                finally:
                    # Only a connection that held counts as success: a broker that accepts and then drops us at
                    # once (say, another gateway with the same client id) must not make us reconnect in a tight loop.
                    if time.monotonic() - connected >= STABLE_S:
                        backoff.reset()
            except UplinkError as exc:
                log.warning("uplink: %s", exc)
                state = "refused" if isinstance(exc, ConnectionRefused) else "backoff"
                self._set(state=state, connected=False, last_error=str(exc), inflight=0, inflight_readings=0)
            except Exception as exc:
                # A bug or a broken buffer file: log it loudly, keep the thread alive, and retry after a backoff.
                log.exception("uplink: unexpected error")
                self._set(state="error", connected=False, last_error=f"{type(exc).__name__}: {exc}",
                          inflight=0, inflight_readings=0)
                if store is not None:
                    store.close()
                    store = None
            self.counters.set_gauge("uplink_connected", 0)
            self.counters.set_gauge("inflight_messages", 0)
            if self._stop.is_set():
                break
            delay = backoff.next_delay()
            log.info("uplink: reconnecting in %.1f s", delay)
            self._backoff_wait(delay, store)
        self._set(state="stopped", connected=False, inflight=0, inflight_readings=0)
        if store is not None:
            self._seq_reserved = self._seq  # a clean stop leaves no gap in the seqs
            self._write_status(store, force=True)
            store.close()

    def _backoff_wait(self, delay: float, store: Store | None) -> None:
        # Wake up for stop() at once, and keep the status current (throttled) while waiting.
        deadline = time.monotonic() + delay
        while not self._stop.is_set():
            if store is not None:
                self._write_status(store)
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._stop.wait(min(left, self.settings.status_interval_s))

    def _connect(self) -> Session:
        will = (self._status_topic, status_payload(self.gateway_id, "offline"))
        session = Session(self.mqtt, self._client_id, will, max_inflight=self.settings.inflight + 2)
        session.open(cancelled=self._stop.is_set)
        log.info("uplink: connected to %s as %s", self.mqtt.describe(), self._client_id)
        self.counters.set_gauge("uplink_connected", 1)
        return session

    def _load_seq(self, store: Store) -> None:
        saved = store.load_status().get(STATUS_SECTION, {})
        self._seq = self._seq_reserved = int(saved.get("seq_reserved", 0))

    def _next_seq(self, store: Store) -> int:
        seq = self._seq
        self._seq += 1
        if self._seq > self._seq_reserved:
            self._seq_reserved = self._seq + SEQ_BLOCK
            self._write_status(store, force=True)
        return seq

    def _write_status(self, store: Store, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and (not self._status_dirty or now - self._status_written < self.settings.status_interval_s):
            return
        with self._lock:
            data = dict(self._state, seq=self._seq, seq_reserved=self._seq_reserved, updated_ns=self.clock.wall_ns())
            self._status_dirty = False
        store.save_status(STATUS_SECTION, data)
        self._status_written = now

    def _serve(self, session: Session, store: Store) -> None:
        """Run one connection until it is lost (raises ConnectionLost) or a stop is requested (returns)."""
        s = self.settings
        inflight: dict[int, _Batch] = {}
        boundary = store.max_id()  # ids <= boundary: backlog; above: live
        live_cursor = boundary
        backfill_cursor = 0
        backfill_done = boundary == 0
        # Backfill goes in chunks of 1/20 s worth of readings (a full batch at most), so the capped stream is smooth.
        rate = s.backfill_rate
        chunk = s.batch_max_readings if math.isinf(rate) else max(1, min(s.batch_max_readings, int(rate / 20)))
        # Room for a quarter second of readings, so sends that come late (a slow SQLite checkpoint in ack() can take
        # a few hundred ms) are made up for afterwards and the long-run rate stays at the cap.
        bucket = TokenBucket(rate, max(2 * chunk, rate / 4), initial=chunk)
        backfill_slots = s.inflight - 1 if s.inflight > 1 else 1
        session.publish(self._status_topic, status_payload(self.gateway_id, "online"), retain=True)
        self._set(state="online", connected=True, last_error=None)
        log.info("uplink: online; %d readings of backlog up to id %d", store.stats().rows, boundary)
        last_ack = time.monotonic()
        try:
            while not self._stop.is_set():
                busy = False
                # Live first: everything committed since we connected, as fast as the window allows.
                while len(inflight) < s.inflight:
                    rows = store.fetch(after_id=live_cursor, limit=s.batch_max_readings)
                    if not rows:
                        break
                    n = self._send(session, store, rows, inflight, live=True)
                    live_cursor = rows[n - 1].id
                    busy = True
                    if n < s.batch_max_readings:
                        break
                # Backfill: oldest first, within the rate cap, leaving a slot for live data.
                wait = s.poll_s
                if not backfill_done and len(inflight) < backfill_slots:
                    if bucket.available() >= chunk:
                        rows = store.fetch(after_id=backfill_cursor, before_id=boundary + 1, limit=chunk)
                        if rows:
                            n = self._send(session, store, rows, inflight, live=False)
                            backfill_cursor = rows[n - 1].id
                            bucket.take(n)
                            busy = True
                        else:
                            backfill_done = True
                            log.info("uplink: backlog sent")
                    else:
                        wait = min(wait, bucket.wait_s(chunk))
                acked = session.poll(0.0 if busy else wait)
                if acked:
                    self._acked(store, acked, inflight)
                    last_ack = time.monotonic()
                if session.lost is not None:
                    raise ConnectionLost(f"connection to {self.mqtt.describe()} lost: {session.lost}")
                if inflight:
                    # Dead if nothing came back for ack_timeout_s; counted from the last PUBACK, because on a slow
                    # link a full window takes a while to go out and the last batch of it waits its turn.
                    oldest = min(b.sent_mono for b in inflight.values())
                    if time.monotonic() - max(oldest, last_ack) > s.ack_timeout_s:
                        raise ConnectionLost(f"no PUBACK from {self.mqtt.describe()} within {s.ack_timeout_s:g} s")
                self._write_status(store)
            self._close(session, store, inflight)
        except ConnectionLost:
            lost = sum(len(b.ids) for b in inflight.values())
            self.counters.inc("publish_errors", len(inflight))
            if lost:
                log.warning("uplink: %d batches (%d readings) unacknowledged; they will be sent again",
                            len(inflight), lost)
            raise
        finally:
            # After an error (ours or the store's), drop the socket without DISCONNECT: the broker then publishes
            # the `offline` will. After _close() this is a no-op.
            session.close(graceful=False)

    def _send(self, session: Session, store: Store, rows: Sequence[StoredReading], inflight: dict[int, _Batch],
              *, live: bool) -> int:
        seq = self._next_seq(store)
        payload, n = encode_stored_batch(self.gateway_id, seq, rows, self.settings.batch_max_bytes)
        try:
            mid = session.publish(self._batch_topic, payload)
        except ConnectionLost:
            self.counters.inc("publish_errors")
            raise
        inflight[mid] = _Batch([r.id for r in rows[:n]], live, time.monotonic())
        self.counters.inc("batches_published")
        self._update_inflight(inflight)
        return n

    def _acked(self, store: Store, mids: list[int], inflight: dict[int, _Batch]) -> None:
        ids: list[int] = []
        for mid in mids:
            batch = inflight.pop(mid, None)
            if batch is not None:
                ids.extend(batch.ids)
        if ids:
            store.ack(ids)
            self.counters.inc("readings_acked", len(ids))
            self._set(last_ack_ns=self.clock.wall_ns())
        self._update_inflight(inflight)

    def _update_inflight(self, inflight: dict[int, _Batch]) -> None:
        with self._lock:
            self._state["inflight"] = len(inflight)
            self._state["inflight_readings"] = sum(len(b.ids) for b in inflight.values())
            self._state["seq"] = self._seq
        self.counters.set_gauge("inflight_messages", len(inflight))

    def _close(self, session: Session, store: Store, inflight: dict[int, _Batch]) -> None:
        """Clean stop: collect the outstanding PUBACKs, then the retained `offline`, then DISCONNECT."""
        deadline = time.monotonic() + self._stop_timeout
        offline_mid = session.publish(self._status_topic, status_payload(self.gateway_id, "offline"), retain=True)
        offline_pending = True
        while (offline_pending or inflight) and session.lost is None and time.monotonic() < deadline:
            acked = session.poll(0.05)
            if offline_mid in acked:
                offline_pending = False
            self._acked(store, acked, inflight)
        if inflight:
            log.warning("uplink: stopping with %d batches unacknowledged; they stay in the buffer", len(inflight))
        session.close(graceful=True)
        log.info("uplink: disconnected from %s", self.mqtt.broker)
