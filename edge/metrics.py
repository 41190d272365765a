"""Counters for the gateway: plain ints in process, mirrored to Prometheus, and persisted by the store so that
`edge-gw status` shows them whether or not the daemon runs."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

COUNTERS: dict[str, str] = {
    "adverts_received": "BLE adverts handed over by the source",
    "decode_errors": "adverts that failed to decode (DecodeError)",
    "duplicates": "re-advertised measurements dropped by dedup",
    "readings_stored": "readings committed to the SQLite buffer",
    "readings_dropped_cap": "readings dropped because the buffer hit its byte cap",
    "readings_dropped_age": "readings dropped because they exceeded the buffer's max age",
    "batches_published": "MQTT batch messages published",
    "readings_acked": "readings delivered and deleted from the buffer (on the cloud's confirmation, or the PUBACK in "
                      "broker mode)",
    "confirms_received": "confirmation messages received from the cloud",
    "confirms_invalid": "confirmation messages ignored as malformed or addressed to another gateway",
    "confirm_timeouts": "batches whose confirmation did not come in time, so that their readings were sent again",
    "readings_resent": "readings sent again because their confirmation did not come in time",
    "publish_errors": "publish attempts that failed",
    "uplink_reconnects": "MQTT reconnect attempts",
    "scanner_restarts": "BLE scanner restarts by the watchdog",
    "adapter_resets": "BLE adapter resets by the watchdog",
    "clock_corrections": "readings whose timestamp was corrected after clock sync",
    "clock_steps_ahead": "steps of the wall clock ahead (more than 1 s against the monotonic clock)",
    "clock_steps_back": "steps of the wall clock back (more than 1 s against the monotonic clock)",
    "buffer_replaced": "times the start-up check found the buffer file damaged, salvaged it into a fresh file and "
                       "moved it aside",
    "readings_salvaged": "readings (ready and held) copied out of a damaged buffer file into the fresh one",
    "readings_lost_damaged": "readings a damaged buffer file counted but could not give back",
    "history_downloads": "history downloads over GATT started (docs/history.md)",
    "history_records": "log records read from tags' memory and stored as history readings",
    "history_failures": "history downloads that did not reach the end of the log (timeout, dropped link, error)",
    "wal_refused": "times a -wal that does not belong to the buffer was moved aside at start",
}

GAUGES: dict[str, str] = {
    "buffer_rows": "readings waiting in the SQLite buffer",
    "buffer_bytes": "bytes used by the SQLite buffer file",
    "oldest_unsent_age_seconds": "age of the oldest reading in the buffer (sent or not; by its receive time)",
    "uplink_connected": "1 while connected to the broker",
    "inflight_messages": "published batches waiting for PUBACK",
    "unconfirmed_readings": "readings sent and not yet confirmed by the cloud",
    "oldest_unconfirmed_age_seconds": "time since the oldest unconfirmed reading was sent",
    "clock_synced": "1 once the system clock is synchronised",
    "tags_seen": "distinct tags seen",
    "buffer_check_seconds": "time the start-up integrity check (and any salvage) of the buffer took",
}


class Counters:
    """Thread-safe named counters. Unknown names raise KeyError, so a typo fails in tests, not silently."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._lock = threading.Lock()
        self._values = dict.fromkeys(COUNTERS, 0)
        self._prom = {n: Counter(f"edge_gw_{n}", h, registry=self.registry) for n, h in COUNTERS.items()}
        self._gauges = {n: Gauge(f"edge_gw_{n}", h, registry=self.registry) for n, h in GAUGES.items()}

    def inc(self, name: str, n: int = 1) -> None:
        if n <= 0:
            return
        with self._lock:
            self._values[name] += n
        self._prom[name].inc(n)

    def set_gauge(self, name: str, value: float) -> None:
        self._gauges[name].set(value)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)

    def restore(self, saved: dict[str, int]) -> None:
        """Continue from persisted totals (Prometheus counters still start at 0, as Prometheus expects)."""
        with self._lock:
            for name, value in saved.items():
                if name in self._values:
                    self._values[name] = int(value)


def serve(counters: Counters, port: int, addr: str = "127.0.0.1") -> None:
    start_http_server(port, addr=addr, registry=counters.registry)
