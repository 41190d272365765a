"""Helpers for the uplink tests (no tests here): readings to buffer, and a subscriber that counts what arrives."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
from fakeclock import FakeClock
from paho.mqtt.enums import CallbackAPIVersion

from core import ruuvi
from core.wire import encode_confirms
from edge.metrics import Counters
from edge.model import Reading
from edge.store import Store
from edge.uplink import MqttSettings, Uplink, UplinkSettings

DF5 = bytes.fromhex("0512fc5394c37c0004fffc040cac364200cdcbb8334c884f")
DF5_FIELDS = ruuvi.decode(DF5)
T0 = 1_763_900_000_000_000_000


def make_readings(n: int, *, tag: int = 0, start: int = 0) -> list[Reading]:
    """`n` distinct readings of one tag (`tag` picks the MAC); time_ns = T0 + (start + i) µs."""
    mac = f"c0:ff:ee:00:{tag >> 8:02x}:{tag & 0xFF:02x}"
    return [Reading(mac, T0 + (start + i) * 1000, 0, True, -70, 5, DF5, DF5_FIELDS) for i in range(n)]


def fill(db: Path, readings: list[Reading], chunk: int = 5000) -> None:
    store = Store(db, clock=FakeClock())
    try:
        for i in range(0, len(readings), chunk):
            store.add(readings[i:i + chunk])
    finally:
        store.close()


def buffered(db: Path) -> int:
    store = Store(db, clock=FakeClock())
    try:
        return store.stats().rows
    finally:
        store.close()


def keys(readings: list[Reading]) -> set[tuple[str, int]]:
    return {(r.mac, r.time_ns) for r in readings}


@dataclass
class Batch:
    gateway: str
    seq: int
    keys: list[tuple[str, int]]
    at: float  # monotonic arrival time


@dataclass
class Subscriber:
    """A paho subscriber on `<prefix>/#` with a persistent session, so a broker restart loses nothing for it.

    With `confirm` (the default) it stands in for cloud-ingest's confirmations: it confirms each batch's seq as soon
    as it has it, with the canonical message (core.wire.encode_confirms), so the uplink in its default "cloud" mode
    deletes what arrived. The receiver's own confirmations are tested in tests/cloud and end to end in tests/faults.
    """

    port: int
    prefix: str = "edge-gw"
    client_id: str = "counter"
    username: str | None = None
    password: str | None = None
    confirm: bool = True
    batches: list[Batch] = field(default_factory=list)
    status: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    confirms: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        c = self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=False)
        c.reconnect_delay_set(0.1, 0.5)
        if self.username:
            c.username_pw_set(self.username, self.password)
        c.on_message = self._on_message
        c.on_connect = lambda cl, *_: cl.subscribe(f"{self.prefix}/#", qos=1)
        self._subscribed = threading.Event()
        c.on_subscribe = lambda *_: self._subscribed.set()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        if msg.topic.endswith("/confirm"):
            with self.lock:
                self.confirms.append(bytes(msg.payload))
            return
        doc = orjson.loads(msg.payload)
        with self.lock:
            if msg.topic.endswith("/batch"):
                ks = [(r["mac"], r["time_ns"]) for r in doc["readings"]]
                self.batches.append(Batch(doc["gateway"], doc["seq"], ks, time.monotonic()))
                if self.confirm:
                    self.confirm_seqs(doc["gateway"], [doc["seq"]])
            else:
                self.status.setdefault(msg.topic, []).append(doc | {"retain": msg.retain})

    def start(self) -> Subscriber:
        self.client.connect("127.0.0.1", self.port, keepalive=10)
        self.client.loop_start()
        assert self._subscribed.wait(5), "no SUBACK"
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def confirm_seqs(self, gateway: str, seqs: list[int]) -> None:
        for payload in encode_confirms(gateway, seqs):
            self.client.publish(f"{self.prefix}/{gateway}/confirm", payload, qos=1)

    def received(self) -> list[tuple[str, int]]:
        with self.lock:
            return [k for b in self.batches for k in b.keys]

    def states(self, gateway: str) -> list[str]:
        with self.lock:
            return [d["state"] for d in self.status.get(f"{self.prefix}/{gateway}/status", [])]

    def wait(self, cond: Callable[[Subscriber], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond(self):
                return True
            time.sleep(0.02)
        return cond(self)


@contextmanager
def subscriber(port: int, **kw: Any) -> Iterator[Subscriber]:
    sub = Subscriber(port, **kw).start()
    try:
        yield sub
    finally:
        sub.stop()


FAST = UplinkSettings(backoff_min_s=0.05, backoff_max_s=0.3, status_interval_s=0.2)


@contextmanager
def running_uplink(db: Path, url: str, gateway: str = "gw-1", settings: UplinkSettings = FAST,
                   counters: Counters | None = None, **mqtt: Any) -> Iterator[Uplink]:
    up = Uplink(db, gateway, MqttSettings.from_url(url, **mqtt), settings, counters or Counters(), FakeClock())
    up.start()
    try:
        yield up
    finally:
        up.stop()


def tls_context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))
