"""Helpers for the receiver tests and the benchmark (no tests here): traffic builders, a paho publisher, and the
receiver running in a thread of its own with its own event loop."""

from __future__ import annotations

import asyncio
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from cloud.config import Config, formats_config, load_config, receiver_settings, sink_options
from cloud.formats import Router
from cloud.metrics import Metrics
from cloud.receiver import Receiver
from cloud.sinks import open_sink
from core import ruuvi
from edge.model import Reading
from edge.wire import encode_batch

BASE_NS = 1_763_900_000_000_000_000
SNIPPET = Path(__file__).resolve().parents[2] / "cloud" / "mosquitto" / "cloud-ingest.conf"


def broker_settings() -> list[str]:
    """The shipped Mosquitto snippet, minus what a private test broker sets itself (its persistence directory)."""
    lines = [ln.strip() for ln in SNIPPET.read_text().splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#") and not ln.startswith("persistence_location")]


def now_ns() -> int:
    return time.time_ns()


def df5_payload(seq: int, mac: bytes, temp_c: float = 21.5, hum: float = 40.0) -> bytes:
    """A Ruuvi data format 5 payload (manufacturer data after 0x0499) built from the spec's layout."""
    return struct.pack(
        ">BhHHhhhHBH6s", 5, round(temp_c / 0.005), round(hum / 0.0025), 100044 - 50000, 4, -4, 1036,
        ((2977 - 1600) << 5) | ((4 + 40) // 2), 7, seq & 0xFFFF, mac,
    )


def mac_bytes(i: int) -> bytes:
    return bytes([0xC0, 0xFF, 0xEE, (i >> 16) & 0xFF, (i >> 8) & 0xFF, i & 0xFF])


def mac_text(i: int) -> str:
    return ":".join(f"{b:02x}" for b in mac_bytes(i))


def reading(tag: int, seq: int, time_ns: int, *, rssi: int = -70, temp_c: float = 21.5) -> Reading:
    raw = df5_payload(seq, mac_bytes(tag), temp_c)
    return Reading(mac=mac_text(tag), time_ns=time_ns, mono_ns=0, clock_synced=True, rssi=rssi, data_format=5,
                   raw=raw, fields=ruuvi.decode(raw))


def edge_batch(gateway: str, seq: int, readings: Sequence[Reading]) -> bytes:
    return encode_batch(gateway, seq, readings)


def ruuvi_gw_message(gw_mac: str, tag: int, seq: int, ts_s: int, *, rssi: int = -60) -> tuple[str, bytes]:
    """Ruuvi Gateway's MQTT shape: topic ruuvi/<GW>/<TAG>, `data` = the whole advert in upper-case hex."""
    payload = df5_payload(seq, mac_bytes(tag))
    advert = bytes([0x02, 0x01, 0x06, len(payload) + 3, 0xFF, 0x99, 0x04]) + payload
    tag_mac = mac_text(tag).upper()
    body = (f'{{"gw_mac":"{gw_mac}","rssi":{rssi},"aoa":[],"gwts":{ts_s},"ts":{ts_s},'
            f'"data":"{advert.hex().upper()}","coords":""}}')
    return f"ruuvi/{gw_mac}/{tag_mac}", body.encode()


class Publisher:
    """A paho MQTT v5 publisher that waits until the broker acknowledged every QoS 1 message."""

    def __init__(self, port: int, client_id: str = "test-publisher") -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        deadline = time.monotonic() + 10
        while not self.client.is_connected():
            if time.monotonic() > deadline:
                raise TimeoutError("publisher could not connect")
            time.sleep(0.01)

    def publish(self, messages: Iterable[tuple[str, bytes]], qos: int = 1, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        pending = list(messages)
        # paho numbers queued messages with 16-bit ids, so at most 65,535 may wait at once.
        for start in range(0, len(pending), 50_000):
            infos = [self.client.publish(t, p, qos=qos) for t, p in pending[start:start + 50_000]]
            for info in infos:
                info.wait_for_publish(max(0.1, deadline - time.monotonic()))
        return len(pending)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Subscriber:
    """Collects messages of one topic filter (e.g. the dead-letter topic)."""

    def __init__(self, port: int, topic: str, client_id: str = "test-subscriber") -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        time.sleep(0.2)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def make_config(mqtt_port: int, influx_url: str, tmp: Path, **settings: object) -> Config:
    """A Config as `run` would build it, isolated from the environment; `settings` use section__key names."""
    overrides: dict[str, object] = {
        "mqtt.url": f"mqtt://127.0.0.1:{mqtt_port}",
        "influx.url": influx_url,
        "influx.backoff_max": "0.5",
        "metrics.port": "0",
        "status.file": str(tmp / "status.json"),
        "status.interval": "0.2",
        "mqtt.client_id": "receiver-test",
    }
    for k, v in settings.items():
        overrides[k.replace("__", ".")] = v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)
    return load_config(None, overrides, environ={})


@dataclass
class RunningReceiver:
    receiver: Receiver
    thread: threading.Thread
    loop: asyncio.AbstractEventLoop
    stop_event: asyncio.Event
    error: list[BaseException]

    def stop(self, timeout: float = 30.0) -> None:
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise TimeoutError("receiver did not stop")

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.receiver.metrics.registry.get_sample_value(name, labels or {})
        return 0.0 if value is None else value

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run fn on the receiver's loop and return its result."""
        done = threading.Event()
        box: list[Any] = []
        self.loop.call_soon_threadsafe(lambda: (box.append(fn()), done.set()))
        done.wait(10)
        return box[0]


def start_receiver(cfg: Config, *, rollups: Any = None, sink: Any = None, ready_timeout: float = 15.0,
                   make: Callable[[], Receiver] | None = None, **receiver_args: Any) -> RunningReceiver:
    """The receiver on its own thread and event loop; `receiver_args`: more Receiver() arguments (homeassistant=).
    `make` builds another receiver instead (the Kafka bridge), in that thread."""
    started = threading.Event()
    holder: dict[str, Any] = {}
    errors: list[BaseException] = []

    def main() -> None:
        async def go() -> None:
            receiver = make() if make is not None else Receiver(
                receiver_settings(cfg), sink=sink or open_sink(cfg.influx.url, options=sink_options(cfg)),
                router=Router(formats_config(cfg)), rollups=rollups, metrics=Metrics(),
                status_file=Path(cfg.status.file), **receiver_args)
            stop = asyncio.Event()
            holder.update(receiver=receiver, loop=asyncio.get_running_loop(), stop=stop)
            await receiver.run(stop, ready=started.set)

        try:
            asyncio.run(go())
        except BaseException as e:  # handed to the test
            errors.append(e)
        finally:
            started.set()

    thread = threading.Thread(target=main, name="receiver", daemon=True)
    thread.start()
    if not started.wait(ready_timeout) or errors:
        raise RuntimeError(f"receiver did not start: {errors}")
    return RunningReceiver(holder["receiver"], thread, holder["loop"], holder["stop"], errors)


def wait_until(cond: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def create_db(influxd: Any, db: str = "ruuvi") -> str:
    influxd.query(f'CREATE DATABASE "{db}"', method="POST")
    return f"{influxd.url}/{db}"


def stored(influxd: Any, db: str = "ruuvi", measurement: str = "ruuvi") -> list[dict[str, Any]]:
    """Every stored point as {time, mac, gateway, measurement_sequence_number, ...} (time as ns int)."""
    import json
    import urllib.parse
    import urllib.request

    q = urllib.parse.urlencode({"q": f'SELECT * FROM "{measurement}"', "db": db, "epoch": "ns"})
    with urllib.request.urlopen(f"{influxd.url}/query?{q}", timeout=30) as r:
        res = json.loads(r.read())
    out: list[dict[str, Any]] = []
    for s in res["results"][0].get("series", []):
        cols = s["columns"]
        out.extend(dict(zip(cols, row, strict=True)) for row in s["values"])
    return out


def count(influxd: Any, db: str = "ruuvi") -> int:
    return len(stored(influxd, db))
