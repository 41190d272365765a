"""The uplink: drains the SQLite buffer to MQTT in QoS 1 batches, deleting readings only once the cloud confirmed them.

By default (`confirm = "cloud"`) a reading is deleted only when cloud-ingest confirms the batch that carried it
(docs/wire-format.md, "Confirmation"): a broker's PUBACK only says the broker took it, and a broker restart, crash or
queue limit can still lose it. edge.outstanding keeps the batches between send and confirmation; one not confirmed
within `confirm_timeout_s` after its PUBACK is sent again from the buffer. `confirm = "broker"` deletes on the PUBACK,
for a receiver that does not confirm.

One thread owns everything here: its own Store connection, the MQTT session (edge.mqtt.Session, driven without paho's
network thread) and the in-flight window. Delivery is at-least-once:

- each connection is a fresh clean session; when it drops, every unconfirmed batch is forgotten and its readings,
  still in the buffer, are sent again from the store on the next connection (paho never re-sends on its own);
- at connect the uplink notes the buffer's max id. Ids above it are *live*: they go first, as soon as they are
  committed. Ids up to it are *backfill*: drained from the oldest, in parallel, capped at `backfill_rate` readings/s
  and never taking the last free slot of the window, so a backlog neither floods the broker nor starves live data.
  The store gives a reading its id only once it is ready to send, and ids only grow, so the two cursors never
  skip a reading.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.backoff import Backoff
from core.ratelog import RateLimitedLog
from core.wire import (
    MAX_BATCH_BYTES,
    WireError,
    batch_topic,
    check_gateway_id,
    confirm_topic,
    parse_confirm,
    status_payload,
    status_topic,
)
from edge.clock import Clock, SystemClock
from edge.config import UplinkSection
from edge.metrics import Counters
from edge.mqtt import ConnectionLost, ConnectionRefused, MqttSettings, Session, UplinkError
from edge.outstanding import CONFIRM_MODES, Outstanding, SentBatch
from edge.store import Store, StoredReading, StoreError, StoreLimits
from edge.wire import encode_stored_batch

__all__ = ["Backoff", "MqttSettings", "Uplink", "UplinkError", "UplinkSettings"]

log = logging.getLogger("edge.uplink")
_status_failed = RateLimitedLog(log, 30.0)

STATUS_SECTION = "uplink"
SEQ_BLOCK = 1000  # batch seqs reserved per status write, so a crash never reuses a seq
STABLE_S = 10.0  # a connection that lasted this long resets the reconnect backoff


@dataclass(frozen=True)
class UplinkSettings:
    # The defaults are the config's ([uplink] in edge.config), so a daemon, `flush` and a test agree.
    batch_max_readings: int = UplinkSection.batch_max_readings
    batch_max_bytes: int = MAX_BATCH_BYTES
    inflight: int = UplinkSection.inflight  # unacknowledged batches at most
    backfill_rate: float = UplinkSection.backfill_rate  # readings/s for the backlog; math.inf for no cap
    backoff_min_s: float = float(UplinkSection.backoff_min)
    backoff_max_s: float = float(UplinkSection.backoff_max)
    poll_s: float = 0.05  # how often an idle uplink looks for new rows (one that is notified of commits: see notify())
    ack_timeout_s: float = 30.0  # a batch unacknowledged this long means the connection is dead
    status_interval_s: float = 1.0  # at most one status write per interval
    confirm: str = UplinkSection.confirm  # delete on the cloud's confirmation ("cloud") or the PUBACK ("broker")
    confirm_timeout_s: float = float(UplinkSection.confirm_timeout)  # re-send when a confirmation is this late
    max_unconfirmed: int = UplinkSection.max_unconfirmed  # readings sent and not yet confirmed, at most
    confirm_log_interval_s: float = 60.0  # at most one "no confirmation" warning per interval

    def __post_init__(self) -> None:
        if self.confirm not in CONFIRM_MODES:
            msg = f"uplink confirm mode {self.confirm!r}: expected 'cloud' or 'broker'"
            raise UplinkError(msg)
        if not self.confirm_timeout_s > 0 or self.max_unconfirmed < 1:
            msg = f"uplink settings out of range: {self}"
            raise UplinkError(msg)
        if self.batch_max_readings < 1 or self.batch_max_bytes < 1024 or self.inflight < 1:
            msg = f"uplink settings out of range: {self}"
            raise UplinkError(msg)
        if not self.backfill_rate > 0 or not 0 < self.backoff_min_s <= self.backoff_max_s:
            msg = f"uplink settings out of range: {self}"
            raise UplinkError(msg)


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


class Uplink:
    """Forward the buffer at `db_path` to the broker until stopped. See the module docstring for the guarantees."""

    def __init__(self, db_path: str | Path, gateway_id: str, mqtt: MqttSettings, settings: UplinkSettings,
                 counters: Counters, clock: Clock | None = None, limits: StoreLimits | None = None) -> None:
        try:
            self.gateway_id = check_gateway_id(gateway_id)
            self._batch_topic = batch_topic(mqtt.topic_prefix, gateway_id)
            self._status_topic = status_topic(mqtt.topic_prefix, gateway_id)
            self._confirm_topic = confirm_topic(mqtt.topic_prefix, gateway_id)
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
            "confirm": settings.confirm,
            "unconfirmed": 0,  # readings sent and not yet confirmed (in flight or awaiting the confirmation)
            "awaiting_confirm": 0,  # of those, the ones the broker acknowledged
            "oldest_unconfirmed_ns": None,  # when the oldest of them was sent
            "last_confirm_ns": None,
            "confirm_timeouts": 0,
            "confirms_invalid": 0,
        }
        self._out = Outstanding(settings.confirm, settings.confirm_timeout_s)  # type: ignore[arg-type]
        self._resend: list[int] = []  # ids whose confirmation timed out, ascending
        self._warned_mono = -math.inf
        self._subscribe_error: str | None = None
        self._wake: tuple[int, int] | None = None  # a pipe notify() writes to, to end the uplink's wait at once
        self._status_written = 0.0
        self._stop_timeout = 5.0
        self._status_dirty = True
        self._seq = 0
        self._seq_reserved = 0

    def _open_store(self) -> Store:
        # One connection per thread: the uplink thread and wait_drained's caller each open their own.
        return Store(self.db_path, clock=self.clock, limits=self.limits)

    # ---- public API, callable from any thread -------------------------------------------------------------------

    def notify(self) -> None:
        """New rows were committed: wake the uplink now (the gateway's writer calls this after each commit, so the
        daemon can give its idle uplink a long poll_s instead of looking at the buffer 20 times a second)."""
        wake = self._wake
        if wake is not None:
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(wake[1], b"\0")

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        if self._wake is None:
            self._wake = os.pipe()
            for fd in self._wake:
                os.set_blocking(fd, False)
        self._thread = threading.Thread(target=self._run, name="uplink", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop cleanly: wait up to `timeout` s for in-flight PUBACKs, publish the retained `offline`, disconnect."""
        self._stop_timeout = timeout
        self._stop.set()
        self.notify()
        if self._thread is not None:
            self._thread.join(timeout + 2.0)
            if self._thread.is_alive():
                log.warning("uplink thread did not stop within %.1f s", timeout + 2.0)
            self._thread = None
        if self._wake is not None:
            for fd in self._wake:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._wake = None

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
            except StoreError as exc:
                # A full or failing disk: the readings stay where they are; try again after a backoff.
                _status_failed.error("uplink: buffer error, retrying: %s", exc)
                self._set(state="error", connected=False, last_error=str(exc))
                if store is not None:
                    store.close()
                    store = None
            except Exception as exc:
                # A bug: log it loudly, keep the thread alive, and retry after a backoff.
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
        self._out.connection_lost()  # whatever is unconfirmed is sent again by the next start
        self._update_inflight()
        self._set(state="stopped", connected=False)
        if store is not None:
            self._seq_reserved = self._seq  # a clean stop leaves no gap in the seqs
            try:
                self._write_status(store, force=True)
            except StoreError as exc:
                log.error("uplink: cannot save its status at stop: %s", exc)  # the saved reservation still holds
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
        self._subscribe_error = None
        if self.settings.confirm == "cloud":
            # Before the first publish, so that no confirmation of this connection's batches can pass us by.
            refused = session.subscribe(self._confirm_topic, self.mqtt.connect_timeout_s)
            if refused is not None:
                self._subscribe_error = (f"the broker refused the subscription to {self._confirm_topic} ({refused}): "
                                         "no confirmation can arrive, so readings are sent but never deleted")
                log.error("uplink: %s", self._subscribe_error)
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
        try:
            store.save_status(STATUS_SECTION, data)
        except StoreError as exc:
            if force:
                raise  # a seq reservation that is not on disk must not be used
            # The status is for `edge-gw status` only: a full or failing disk must not stop the forwarding.
            self._status_dirty = True
            _status_failed.warning("uplink: cannot save its status (retried): %s", exc)
        self._status_written = now

    def _serve(self, session: Session, store: Store) -> None:
        """Run one connection until it is lost (raises ConnectionLost) or a stop is requested (returns)."""
        s = self.settings
        out = self._out
        out.connection_lost()  # the backlog below holds every unconfirmed reading: it is all sent again
        self._resend.clear()
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
        self._set(state="online", connected=True, last_error=self._subscribe_error)
        log.info("uplink: online; %d readings of backlog up to id %d", store.stats().rows, boundary)
        last_ack = time.monotonic()
        next_timeout_check = 0.0

        def room(slots: int) -> bool:
            return out.unacked_batches < slots and out.readings < s.max_unconfirmed

        try:
            while not self._stop.is_set():
                busy = False
                # Live first: everything committed since we connected, as fast as the window allows.
                while room(s.inflight):
                    rows = store.fetch(after_id=live_cursor, limit=s.batch_max_readings)
                    if not rows:
                        break
                    n = self._send(session, store, rows, live=True)
                    live_cursor = rows[n - 1].id
                    busy = True
                    if n < s.batch_max_readings:
                        break
                # Then what the cloud did not confirm in time, oldest first.
                while self._resend and room(backfill_slots):
                    busy = self._send_again(session, store) or busy
                # Backfill: oldest first, within the rate cap, leaving a slot for live data.
                wait = s.poll_s
                if not backfill_done and room(backfill_slots):
                    if bucket.available() >= chunk:
                        rows = store.fetch(after_id=backfill_cursor, before_id=boundary + 1, limit=chunk)
                        if rows:
                            n = self._send(session, store, rows, live=False)
                            backfill_cursor = rows[n - 1].id
                            bucket.take(n)
                            busy = True
                        else:
                            backfill_done = True
                            log.info("uplink: backlog sent")
                    else:
                        wait = min(wait, bucket.wait_s(chunk))
                acked = session.poll(0.0 if busy else wait, None if self._wake is None else self._wake[0])
                now = time.monotonic()
                if acked:
                    self._delete(store, out.puback(acked, now))
                    last_ack = now
                for topic, payload in session.take_messages():
                    if topic == self._confirm_topic:
                        self._apply_confirm(store, payload)
                if session.lost is not None:
                    raise ConnectionLost(f"connection to {self.mqtt.describe()} lost: {session.lost}")
                if out.by_mid:
                    # Dead if nothing came back for ack_timeout_s; counted from the last PUBACK, because on a slow
                    # link a full window takes a while to go out and the last batch of it waits its turn.
                    oldest = min(b.sent_mono for b in out.by_mid.values())
                    if now - max(oldest, last_ack) > s.ack_timeout_s:
                        raise ConnectionLost(f"no PUBACK from {self.mqtt.describe()} within {s.ack_timeout_s:g} s")
                if out.by_seq and now >= next_timeout_check:
                    next_timeout_check = now + min(1.0, s.confirm_timeout_s / 4)
                    self._check_confirm_timeouts(now)
                self._write_status(store)
            self._close(session, store)
        except ConnectionLost:
            unacked = out.unacked_batches
            self.counters.inc("publish_errors", unacked)
            lost = out.connection_lost()
            if lost:
                log.warning("uplink: %d readings sent and not yet %s; they will be sent again", lost,
                            "confirmed" if s.confirm == "cloud" else "acknowledged")
            self._update_inflight()
            raise
        finally:
            # After an error (ours or the store's), drop the socket without DISCONNECT: the broker then publishes
            # the `offline` will. After _close() this is a no-op.
            session.close(graceful=False)

    def _send(self, session: Session, store: Store, rows: Sequence[StoredReading], *, live: bool) -> int:
        seq = self._next_seq(store)
        payload, n = encode_stored_batch(self.gateway_id, seq, rows, self.settings.batch_max_bytes)
        try:
            mid = session.publish(self._batch_topic, payload)
        except ConnectionLost:
            self.counters.inc("publish_errors")
            raise
        self._out.sent(mid, SentBatch(seq, [r.id for r in rows[:n]], live, time.monotonic(), self.clock.wall_ns()))
        self.counters.inc("batches_published")
        self._update_inflight()
        return n

    def _send_again(self, session: Session, store: Store) -> bool:
        """Send the oldest readings whose confirmation timed out (those still buffered); True if it sent any."""
        s = self.settings
        chunk = self._resend[:s.batch_max_readings]
        rows = store.fetch_ids(chunk)
        if not rows:
            del self._resend[:len(chunk)]
            return False
        n = self._send(session, store, rows, live=False)
        self.counters.inc("readings_resent", n)
        # Everything up to the last id sent is either sent now or gone from the buffer (confirmed meanwhile).
        del self._resend[:bisect.bisect_right(self._resend, rows[n - 1].id)]
        return True

    def _check_confirm_timeouts(self, now: float) -> None:
        waited = self._out.timeout_s
        late = self._out.timed_out(now)
        if late:
            ids = [i for b in late for i in b.ids]
            self._resend = sorted({*self._resend, *ids})
            self.counters.inc("confirm_timeouts", len(late))
            self._set(confirm_timeouts=self.state()["confirm_timeouts"] + len(late))
            if now - self._warned_mono >= self.settings.confirm_log_interval_s:
                self._warned_mono = now
                log.warning(
                    "uplink: the cloud has not confirmed %d readings (%d batches) within %.0f s of the broker's "
                    "PUBACK; sending them again, next timeout %.0f s. Is cloud-ingest running and subscribed? "
                    "For a receiver that does not confirm (Telegraf), set uplink.confirm = \"broker\"",
                    len(ids), len(late), waited, self._out.timeout_s)
            self._update_inflight()

    def _apply_confirm(self, store: Store, payload: bytes) -> None:
        try:
            ranges = parse_confirm(payload, self.gateway_id)
        except WireError as exc:
            self.counters.inc("confirms_invalid")
            self._set(confirms_invalid=self.state()["confirms_invalid"] + 1)
            log.warning("uplink: ignored a confirmation: %s", exc)
            return
        self.counters.inc("confirms_received")
        done = self._out.confirm(ranges)
        self._set(last_confirm_ns=self.clock.wall_ns())
        self._delete(store, done)

    def _delete(self, store: Store, batches: list[SentBatch]) -> None:
        """Delete the readings of finished batches (confirmed, or PUBACKed in broker mode)."""
        ids = [i for b in batches for i in b.ids]
        if ids:
            store.ack(ids)
            self.counters.inc("readings_acked", len(ids))
            self._set(last_ack_ns=self.clock.wall_ns())
        self._update_inflight()

    def _update_inflight(self) -> None:
        out = self._out
        awaiting = out.awaiting()
        oldest = out.oldest_unconfirmed_wall_ns()
        with self._lock:
            st = self._state
            st["inflight"] = out.unacked_batches
            st["inflight_readings"] = out.unacked_readings()
            st["unconfirmed"] = out.readings
            st["awaiting_confirm"] = sum(len(b.ids) for b in awaiting)
            st["oldest_unconfirmed_ns"] = oldest
            st["seq"] = self._seq
        self.counters.set_gauge("inflight_messages", out.unacked_batches)
        self.counters.set_gauge("unconfirmed_readings", out.readings)
        self.counters.set_gauge("oldest_unconfirmed_age_seconds",
                                0.0 if oldest is None else max(0.0, (self.clock.wall_ns() - oldest) / 1e9))

    def _close(self, session: Session, store: Store) -> None:
        """Clean stop: collect the outstanding PUBACKs (and confirmations that come meanwhile), then the retained
        `offline`, then DISCONNECT. Readings not yet confirmed stay in the buffer for the next start."""
        deadline = time.monotonic() + self._stop_timeout
        offline_mid = session.publish(self._status_topic, status_payload(self.gateway_id, "offline"), retain=True)
        offline_pending = True
        out = self._out
        while (offline_pending or out.by_mid) and session.lost is None and time.monotonic() < deadline:
            acked = session.poll(0.05)
            if offline_mid in acked:
                offline_pending = False
            self._delete(store, out.puback(acked, time.monotonic()))
            for topic, payload in session.take_messages():
                if topic == self._confirm_topic:
                    self._apply_confirm(store, payload)
        if out.by_mid:
            log.warning("uplink: stopping with %d batches unacknowledged; they stay in the buffer", out.unacked_batches)
        if out.readings:
            log.info("uplink: %d readings not yet confirmed stay in the buffer", out.readings)
        session.close(graceful=True)
        log.info("uplink: disconnected from %s", self.mqtt.broker)
