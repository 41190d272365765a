"""The gateway daemon: source -> decode -> dedup -> SQLite buffer, with the uplink draining the buffer to MQTT.

The advert path runs on one asyncio loop and does no I/O of its own: the StoreWriter commits in batches, and the
uplink runs in its own thread with its own SQLite connection. Counters on the hot path are plain ints, pushed to the
shared Counters (and so to Prometheus and the store) by the housekeeping loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import ruuvi
from core.ratelog import RateLimitedLog
from edge.clock import Clock
from edge.config import Config
from edge.dedup import Dedup
from edge.history import HistoryFiller, HistorySettings
from edge.homeassistant import HaPublisher, HaSettings, node_for
from edge.metrics import Counters
from edge.model import Advert, Reading
from edge.sources import Source, SourceOptions, open_source
from edge.store import Store, StoreError, StoreLimits, StoreWriter
from edge.store.check import check_buffer
from edge.store.check import record as record_check
from edge.store.lock import BufferLock, holder
from edge.uplink import MqttSettings, Uplink, UplinkSettings

log = logging.getLogger("edge.gateway")
_state_failed = RateLimitedLog(log, 30.0)
_held = RateLimitedLog(log, 300.0)
HELD_HINT = ("%d readings are held until the system clock is synchronised (their time is corrected then); check "
             "`timedatectl` (NTP), or set clock.assume_synced = true (--assume-synced) where the clock is right "
             "without NTP")

HOUSEKEEPING_S = 0.5
IDLE_POLL_S = 1.0
# A change of the wall-minus-monotonic offset between two readings larger than this (plus what NTP may slew in
# between, at most 500 ppm) is a step of the wall clock.
STEP_NS = 1_000_000_000


@dataclass
class RunResult:
    adverts: int
    committed: int
    drained: bool | None


def mqtt_settings(cfg: Config) -> MqttSettings:
    return MqttSettings.from_url(
        cfg.mqtt.url,
        username=cfg.mqtt.username or None,
        password=cfg.mqtt.credentials()[1] or None,
        ca_file=cfg.mqtt.ca_file or None,
        cert_file=cfg.mqtt.cert_file or None,
        key_file=cfg.mqtt.key_file or None,
        client_id=cfg.mqtt.client_id or None,
        keepalive=cfg.mqtt.keepalive,
        topic_prefix=cfg.mqtt.topic_prefix,
    )


def uplink_settings(cfg: Config) -> UplinkSettings:
    return UplinkSettings(
        batch_max_readings=cfg.uplink.batch_max_readings,
        inflight=cfg.uplink.inflight,
        backfill_rate=cfg.uplink.backfill_rate or math.inf,
        backoff_min_s=float(cfg.uplink.backoff_min),
        backoff_max_s=float(cfg.uplink.backoff_max),
        confirm=cfg.uplink.confirm,
        confirm_timeout_s=float(cfg.uplink.confirm_timeout),
        max_unconfirmed=cfg.uplink.max_unconfirmed,
    )


def store_limits(cfg: Config) -> StoreLimits:
    return StoreLimits(max_bytes=int(cfg.store.max_bytes), max_age_s=float(cfg.store.max_age), policy=cfg.store.policy)


def source_options(cfg: Config) -> SourceOptions:
    return SourceOptions(
        adapter=cfg.source.adapter or None,
        passive=cfg.source.passive,
        watchdog_s=float(cfg.source.watchdog),
        tags=cfg.source.tags,
        rate=cfg.source.rate,
        count=cfg.source.count or None,
        seed=cfg.source.seed,
    )


def homeassistant_publisher(cfg: Config) -> HaPublisher | None:
    """The Home Assistant discovery publisher ([homeassistant]), on its own session to the uplink's broker."""
    h = cfg.homeassistant
    if not h.enabled:
        return None
    mqtt = mqtt_settings(cfg)
    node = node_for(cfg.gateway.id, mqtt.topic_prefix, h.discovery_prefix, h.state_prefix, float(h.expire_after))
    client_id = f"{mqtt.client_id or f'edge-gw-{cfg.gateway.id}'}-ha"
    return HaPublisher(mqtt, client_id, HaSettings(node, float(h.state_interval), float(h.remove_after)))


def history_settings(cfg: Config) -> HistorySettings:
    h = cfg.history
    return HistorySettings(
        enabled=h.enabled, gap_threshold_s=float(h.gap_threshold), max_interval_s=float(h.max_interval),
        timeout_s=float(h.timeout), backoff_min_s=float(h.backoff_min), backoff_max_s=float(h.backoff_max),
        include=list(h.include), exclude=list(h.exclude), adapter=cfg.source.adapter or None,
    )


class Pipeline:
    """The pure part of the advert path: decode, dedup, build the Reading. Counts what it drops.

    Clock steps: every reading's time is the wall clock when it was taken, also after the wall clock stepped, in
    either direction. The pipeline sees a step as a jump of the wall-minus-monotonic offset between two readings
    (more than STEP_NS plus the slew NTP may do in between), counts it (`clock_steps_ahead`, `clock_steps_back`)
    and logs it with its size, but does not correct it: it cannot tell the wrong side of a step from the right
    one (an NTP step fixes a wrong clock, a bad time source or `date -s` makes a right one wrong), and the
    monotonic clock has no meaning of its own to fall back on. What follows:
    - a step ahead past the cloud's `formats.max_ahead` (300 s): cloud-ingest refuses each such reading on its own,
      dead-letters it (with its JSON, so it can be re-timed and replayed) and confirms the batch, so the gateway
      deletes it like any delivered reading; the readings with a valid time in the same batch are stored;
    - a step back: readings carry times earlier than readings taken before the step, so on a tag the time order
      no longer follows the sequence order. Nothing is refused or lost: each is a point of its own, and the
      cloud's dedup matches copies by the tag's sequence number and values, not by these times;
    - the buffer ages its readings by the monotonic clock (edge/store/store.py), so a step changes no reading's
      age: a step ahead does not drop the buffer as too old, a step back keeps nothing longer than max_age.
    """

    def __init__(self, clock: Clock, dedup: Dedup, put: Callable[[Reading], None], *, derived: bool = False) -> None:
        self.clock = clock
        self.dedup = dedup
        self.put = put
        self.derived = derived
        self.synced = clock.synced()
        self.adverts = 0
        self.decode_errors = 0
        self.duplicates = 0
        self.last_error = ""
        self._last_payload: dict[str, tuple[bytes, int]] = {}
        self._e1_seen: dict[str, int] = {}
        self._window_ns = dedup.window_ns
        self._max_macs = dedup.max_entries
        # Bound once: this runs for every advert.
        self._mono_ns = clock.mono_ns
        self._wall_ns = clock.wall_ns
        self.steps_ahead = 0
        self.steps_back = 0
        self._last_mono = clock.mono_ns()
        self._offset = clock.wall_ns() - self._last_mono

    def __call__(self, adv: Advert) -> None:
        self.adverts += 1
        mono = self._mono_ns()
        # A tag re-sends a measurement with the very same bytes: catch those before decoding (most adverts are
        # such repeats). Anything else goes through decode and the (mac, sequence) dedup.
        last = self._last_payload.get(adv.mac)
        if last is not None and last[0] == adv.payload and mono - last[1] < self._window_ns:
            self.duplicates += 1
            return
        try:
            fields = ruuvi.decode(adv.payload)
        except ruuvi.DecodeError as e:
            self.decode_errors += 1
            self.last_error = f"{adv.mac}: {e}"
            return
        if len(self._last_payload) >= self._max_macs:
            self._last_payload.clear()  # a flood of distinct addresses must not grow memory
            self._e1_seen.clear()
        self._last_payload[adv.mac] = (adv.payload, mono)
        fmt = fields["data_format"]
        if fmt == 0xE1:
            self._e1_seen[adv.mac] = mono
        elif fmt == 6:
            # A Ruuvi Air sends each measurement as E1 (extended advert) and DF6 (legacy); where the scanner hears
            # E1, the DF6 copy carries nothing more, so it counts as a duplicate (Ruuvi's own rule).
            e1_at = self._e1_seen.get(adv.mac)
            if e1_at is not None and mono - e1_at < self._window_ns:
                self.duplicates += 1
                return
        if self.dedup.is_duplicate(adv.mac, fields.get("measurement_sequence_number"), adv.payload, mono):
            self.duplicates += 1
            return
        if self.derived:
            fields.update(ruuvi.derived(fields))
        wall = self._wall_ns()
        offset = wall - mono
        jump = offset - self._offset
        if jump > STEP_NS or jump < -STEP_NS:
            self._stepped(jump, mono)
        self._offset = offset
        self._last_mono = mono
        self.put(Reading(adv.mac, wall, mono, self.synced, adv.rssi, fmt, adv.payload, fields))

    def _stepped(self, jump: int, mono: int) -> None:
        if abs(jump) <= STEP_NS + (mono - self._last_mono) // 2000:
            return  # no more than NTP may have slewed since the last reading
        if jump > 0:
            self.steps_ahead += 1
        else:
            self.steps_back += 1
        log.warning("the wall clock stepped %s by %.3f s; readings keep the clock's time (see Pipeline)",
                    "ahead" if jump > 0 else "back", abs(jump) / 1e9)


class Gateway:
    def __init__(self, cfg: Config, clock: Clock, counters: Counters, *, source: Source | None = None) -> None:
        self.cfg = cfg
        self.clock = clock
        self.counters = counters
        self.db = Path(cfg.gateway.db)
        self.lock = BufferLock(self.db)
        self.lock.acquire()  # before anything writes: one daemon per buffer, known to flush and status
        try:
            # Under the lock, before anything opens the file: refuse a foreign -wal, salvage a damaged file.
            self.check = check_buffer(self.db, clock.wall_ns())
            self.store = Store(self.db, limits=store_limits(cfg), clock=clock)
        except BaseException:
            self.lock.release()
            raise
        counters.restore(self.store.load_counters())
        record_check(self.check, self.store, counters)
        self.writer = StoreWriter(self.store, counters, max_rows=cfg.store.commit_rows,
                                  max_delay_s=float(cfg.store.commit_interval))
        self.pipeline = Pipeline(clock, Dedup(float(cfg.dedup.window), cfg.dedup.max_entries), self.writer.put,
                                 derived=cfg.decode.derived)
        # Read once: the tags' last seen (for the watchdog and for gaps across this restart) and the saved status.
        report = self.store.report()
        self.homeassistant = homeassistant_publisher(cfg)
        self.history = self._history(cfg, report)
        # Besides the buffer, each live reading goes to these (a call each on the advert path; their own threads or
        # tasks do the rest). History readings go to the buffer only.
        observers = [o for o in (None if self.homeassistant is None else self.homeassistant.offer,
                                 None if self.history is None else self.history.observe) if o is not None]
        if observers:
            store_put = self.writer.put

            def put(reading: Reading) -> None:
                store_put(reading)
                for observe in observers:
                    observe(reading)

            self.pipeline.put = put
        options = source_options(cfg)
        options = dataclasses.replace(options, tags_expected=self._tags_seen_recently(report, options.expect_s))
        self.source = source if source is not None else open_source(cfg.source.kind, options, counters)
        if self.history is not None:
            self.history.device_for = getattr(self.source, "device", None)  # the bleak source's known devices
        self.uplink: Uplink | None = None
        self._pushed = {"adverts_received": 0, "decode_errors": 0, "duplicates": 0, "clock_steps_ahead": 0,
                        "clock_steps_back": 0, "history_downloads": 0, "history_records": 0,
                        "history_failures": 0}
        self._started_ns = clock.wall_ns()
        self._last_error_logged = ""

    def _tags_seen_recently(self, report: dict[str, Any], within_s: float) -> bool:
        now = self.clock.wall_ns()
        return any(now - t["last_seen_ns"] <= within_s * 1e9 for t in report["tags"] if t["last_seen_ns"])

    def _history(self, cfg: Config, report: dict[str, Any]) -> HistoryFiller | None:
        if not cfg.history.enabled:
            return None
        # Each tag's last live reading in the buffer, so a gap across this restart is found (history readings do
        # not move it: edge/store/store.py); and what the last run learnt (open gaps, tags without a log).
        last_seen = {t["mac"]: t["last_seen_ns"] for t in report["tags"] if t["last_seen_ns"]}
        filler = HistoryFiller(history_settings(cfg), self.writer.put, last_seen)
        filler.restore((report.get("history") or {}).get("tags") or {})
        return filler

    def _push_counters(self) -> None:
        p = self.pipeline
        for name, value in (("adverts_received", p.adverts), ("decode_errors", p.decode_errors),
                            ("duplicates", p.duplicates), ("clock_steps_ahead", p.steps_ahead),
                            ("clock_steps_back", p.steps_back)):
            self.counters.inc(name, value - self._pushed[name])
            self._pushed[name] = value
        if self.history is not None:
            for name, value in self.history.counts.items():
                self.counters.inc(name, value - self._pushed[name])
                self._pushed[name] = value
        if p.last_error and p.last_error != self._last_error_logged:
            log.warning("bad advert: %s (decode_errors=%d)", p.last_error, p.decode_errors)
            self._last_error_logged = p.last_error

    def _save_state(self, running: bool) -> None:
        self._push_counters()
        self.pipeline.synced = self.clock.synced()
        self.store.save_counters(self.counters.snapshot())
        self.store.save_status("gateway", {
            "id": self.cfg.gateway.id,
            "pid": os.getpid(),
            "running": running,
            "started_ns": self._started_ns,
            "heartbeat_ns": self.clock.wall_ns(),
            "clock_synced": self.pipeline.synced,
            "source": self.cfg.source.kind,
            "scanner": self.source.state(),
        })
        if self.history is not None:
            self.store.save_status("history", {"enabled": True, "tags": self.history.report()})
        stats = self.store.stats()
        if stats.held_rows and not self.pipeline.synced:
            _held.warning(HELD_HINT, stats.held_rows)
        self.counters.set_gauge("buffer_rows", stats.rows)
        oldest = stats.oldest_time_ns
        self.counters.set_gauge("oldest_unsent_age_seconds",
                                0.0 if oldest is None else max(0.0, (self.clock.wall_ns() - oldest) / 1e9))
        self.counters.set_gauge("tags_seen", self.store.tags_seen())
        self.counters.set_gauge("buffer_bytes", stats.bytes)
        self.counters.set_gauge("clock_synced", 1 if self.pipeline.synced else 0)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_S)
            try:
                self._save_state(running=True)
            except StoreError as e:
                # A full or failing disk: the counters and status wait; the lock still tells that we run.
                _state_failed.error("cannot save the gateway's state (retried): %s", e)

    async def run(self, *, drain_timeout: float | None = None) -> RunResult:
        """Run until the source is exhausted (`count`) or the task is cancelled (SIGINT/SIGTERM).

        With `drain_timeout`, wait after the source ends until the uplink has forwarded the whole buffer."""
        # The writer tells the uplink of each commit, so an idle uplink need not look at the buffer 20 times a second
        # (half the gateway's CPU at 200 adverts/s, bench/bench_load.py); it still looks once a second.
        settings = dataclasses.replace(uplink_settings(self.cfg), poll_s=IDLE_POLL_S)
        self.uplink = Uplink(self.db, self.cfg.gateway.id, mqtt_settings(self.cfg), settings,
                             self.counters, self.clock, limits=store_limits(self.cfg))
        self.writer.on_commit = self.uplink.notify
        self.uplink.start()
        if self.homeassistant is not None:
            self.homeassistant.start()
        if not self.clock.synced():
            log.warning("the system clock is not synchronised (NTP): readings are held, not sent, until it is; "
                        "check `timedatectl`, or set clock.assume_synced = true (--assume-synced) on a host whose "
                        "clock is right without NTP")
        writer_task = asyncio.create_task(self.writer.run(), name="store-writer")
        house_task = asyncio.create_task(self._housekeeping(), name="housekeeping")
        history_task = None if self.history is None else asyncio.create_task(self.history.run(), name="history")
        drained: bool | None = None
        try:
            await self.source.run(self.pipeline)
            self.writer.flush()
            self._save_state(running=True)
            log.info("source finished after %d adverts; %d readings committed",
                     self.pipeline.adverts, self.writer.committed)
            if drain_timeout is not None:
                uplink = self.uplink
                drained = await asyncio.to_thread(uplink.wait_drained, drain_timeout)
        finally:
            house_task.cancel()
            writer_task.cancel()
            if history_task is not None:
                history_task.cancel()  # a download in progress disconnects; its records so far are in the writer
            await asyncio.gather(house_task, writer_task, *[t for t in (history_task,) if t is not None],
                                 return_exceptions=True)
            try:
                self.writer.flush()
            except StoreError as e:
                lost = self.writer.pending
                self.counters.inc("readings_dropped_cap", lost)
                log.error("stopping: %d readings in memory could not be stored and are dropped: %s", lost, e)
            if self.homeassistant is not None:
                self.homeassistant.stop()
            self.uplink.stop()
            try:
                self._save_state(running=False)
            except StoreError as e:
                log.error("stopping: cannot save the gateway's state: %s", e)
            with contextlib.suppress(StoreError):
                self.store.close()
            self.lock.release()
        return RunResult(self.pipeline.adverts, self.writer.committed, drained)


def run_forever(gateway: Gateway, *, drain_timeout: float | None = None) -> RunResult:
    """Run the gateway on a fresh event loop; SIGINT and SIGTERM stop it cleanly (buffer flushed, `offline` sent)."""

    async def main() -> RunResult:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            return await gateway.run(drain_timeout=drain_timeout)
        except asyncio.CancelledError:
            return RunResult(gateway.pipeline.adverts, gateway.writer.committed, None)

    return asyncio.run(main())


def daemon_pid(db: Path) -> int | None:
    """The pid of the daemon running on this buffer (0 if it could not write it), or None."""
    return holder(db)
