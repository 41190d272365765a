"""Helpers for the bad-input tests (no tests here): the receiver as a `cloud-ingest run` subprocess, paho clients,
traffic builders and InfluxDB counts."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from core import ruuvi
from edge.model import Reading
from edge.wire import encode_batch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cloud"))
from test_receiver_support import Subscriber, wait_until

__all__ = [
    "CLOUD_INGEST",
    "EDGE_GW",
    "Publisher",
    "ReceiverProcess",
    "S",
    "Subscriber",
    "clean_env",
    "df5",
    "edge_batch",
    "influx_count",
    "influx_rows",
    "mac_bytes",
    "one_line_error",
    "reading",
    "ruuvi_message",
    "wait_until",
]

CLOUD_INGEST = [sys.executable, "-c", "from cloud.cli import main; main()"]
EDGE_GW = [sys.executable, "-m", "edge.cli"]
S = 1_000_000_000


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without EDGE_GW_/CLOUD_INGEST_ settings of the caller, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_GW_", "CLOUD_INGEST_"))}
    env.update(extra)
    return env


def df5(seq: int, mac: bytes, temp_c: float = 21.5) -> bytes:
    """A data format 5 payload: 21.5 °C (or temp_c), 40 %RH, 100044 Pa, 2977 mV, +4 dBm."""
    return struct.pack(">BhHHhhhHBH6s", 5, round(temp_c / 0.005), round(40.0 / 0.0025), 100044 - 50000, 4, -4,
                       1036, ((2977 - 1600) << 5) | 22, 7, seq & 0xFFFF, mac)


def mac_bytes(prefix: int, i: int) -> bytes:
    return bytes([0xC0, 0xFF, prefix, (i >> 16) & 0xFF, (i >> 8) & 0xFF, i & 0xFF])


def reading(prefix: int, tag: int, seq: int, time_ns: int) -> Reading:
    mac = mac_bytes(prefix, tag)
    raw = df5(seq, mac)
    return Reading(mac=mac.hex(":"), time_ns=time_ns, mono_ns=0, clock_synced=True, rssi=-70, data_format=5,
                   raw=raw, fields=ruuvi.decode(raw))


def edge_batch(gateway: str, seq: int, readings: list[Reading]) -> bytes:
    return encode_batch(gateway, seq, readings)


def ruuvi_message(gw_mac: str, tag_mac: bytes, seq: int, ts_s: int) -> tuple[str, bytes]:
    """Ruuvi Gateway's shape: ruuvi/<GW>/<TAG>, `data` = the whole advertisement in upper-case hex."""
    payload = df5(seq, tag_mac)
    advert = bytes([0x02, 0x01, 0x06, len(payload) + 3, 0xFF, 0x99, 0x04]) + payload
    body = {"gw_mac": gw_mac, "rssi": -60, "aoa": [], "gwts": ts_s, "ts": ts_s, "data": advert.hex().upper(),
            "coords": ""}
    return f"ruuvi/{gw_mac}/{tag_mac.hex(':').upper()}", orjson.dumps(body)


class Publisher:
    """paho MQTT v5; publish() waits until the broker acknowledged every QoS 1 message."""

    def __init__(self, port: int, client_id: str, protocol: MQTTProtocolVersion = paho.MQTTv5) -> None:
        self.disconnects: list[Any] = []
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
        self.client.on_disconnect = lambda c, u, flags, rc, props=None: self.disconnects.append(rc)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        wait_until(self.client.is_connected, 10, f"{client_id} connected")

    def publish(self, messages: Iterable[tuple[str, bytes]], timeout: float = 30.0) -> None:
        infos = [self.client.publish(topic, payload, qos=1) for topic, payload in messages]
        deadline = time.monotonic() + timeout
        for info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class ReceiverProcess:
    """`cloud-ingest run` as a subprocess, with its status file and Prometheus metrics."""

    def __init__(self, workdir: Path, mqtt_url: str, influx_url: str, metrics_port: int, *settings: str) -> None:
        self.status_file = workdir / "rx-status.json"
        self.log = workdir / "rx.log"
        self.metrics_port = metrics_port
        self.args = [*CLOUD_INGEST, "run", "--mqtt", mqtt_url, "--influx", influx_url, "--client-id", "badinput-rx",
                     "--metrics-port", str(metrics_port), "--status-file", str(self.status_file),
                     "--set", "status.interval=0.1", "--set", "rollups.enabled=false"]
        for s in settings:
            self.args += ["--set", s]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ReceiverProcess:
        with open(self.log, "ab") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT, env=clean_env())
        wait_until(lambda: self.proc is not None and (self.proc.poll() is not None
                                                      or bool((self.status() or {}).get("mqtt_connected"))),
                   20, "receiver connected")
        assert self.proc.poll() is None, self.log.read_text()
        return self

    def status(self) -> dict[str, Any] | None:
        try:
            return orjson.loads(self.status_file.read_bytes())  # type: ignore[no-any-return]
        except (FileNotFoundError, orjson.JSONDecodeError):
            return None

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith((name + " ", name + "{")):
                    return float(line.rsplit(" ", 1)[1])
        return 0.0

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode


def influx_rows(base_url: str, q: str, db: str = "ruuvi") -> list[list[Any]]:
    query = urllib.parse.urlencode({"db": db, "epoch": "ns", "q": q})
    with urllib.request.urlopen(f"{base_url}/query?{query}", timeout=30) as r:
        res = orjson.loads(r.read())
    rows: list[list[Any]] = []
    for s in res["results"][0].get("series", []):
        rows.extend(s["values"])
    return rows


def influx_count(base_url: str, where: str = "") -> int:
    rows = influx_rows(base_url, f'SELECT count("temperature") FROM "ruuvi" {where}')
    return int(rows[0][1]) if rows else 0


def one_line_error(stderr: str) -> str:
    """The whole stderr, asserted to be exactly one non-empty line without a traceback."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr, stderr
    return lines[0]
