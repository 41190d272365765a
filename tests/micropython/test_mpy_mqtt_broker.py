"""micropython/mqtt.py is plain Python: run it on CPython against a real Mosquitto on loopback to prove
its CONNECT (credentials, will, keepalive), QoS 1 PUBLISH/PUBACK and PINGREQ bytes are right."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import queue
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import paho.mqtt.client as paho
import pytest
from mpy_harness import BOARD
from pki import make_ca, make_cert
from servers import Mosquitto


def load_board_mqtt() -> ModuleType:
    spec = importlib.util.spec_from_file_location("board_mqtt", BOARD / "mqtt.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mqtt = load_board_mqtt()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    workdir = tmp_path / "mosquitto"
    workdir.mkdir()
    passwd = workdir / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwd), "esp32-1", "s3cret"], check=True)
    passwd.chmod(0o600)
    b = Mosquitto(workdir, anonymous=False, extra=[f"password_file {passwd}"]).start()
    try:
        yield b
    finally:
        b.stop()


class Subscriber:
    def __init__(self, port: int, topic: str) -> None:
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"sub-{time.monotonic_ns()}")
        self.client.username_pw_set("esp32-1", "s3cret")
        subscribed = queue.Queue[int]()
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.client.on_subscribe = lambda *_a: subscribed.put(1)
        self.client.on_connect = lambda c, *_a: c.subscribe(topic, qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        subscribed.get(timeout=5)

    def get(self) -> paho.MQTTMessage:
        return self.messages.get(timeout=5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_qos1_publish_with_credentials_reaches_a_subscriber(broker: Mosquitto) -> None:
    sub = Subscriber(broker.port, "edge-gw/#")
    try:
        c = mqtt.MQTTClient("esp32-1", "127.0.0.1", broker.port, user="esp32-1", password="s3cret", keepalive=30)
        assert c.connect() is False
        big = bytes(range(256)) * 80  # 20 KiB: a two-byte remaining length
        pids = [
            c.publish("edge-gw/esp32-1/batch", b'{"v":1}', qos=1),
            c.publish("edge-gw/esp32-1/batch", big, qos=1),
            c.publish("edge-gw/esp32-1/batch", bytearray(b"qos0"), qos=0),
        ]
        assert pids == [1, 2, 0]  # QoS 1 returned only after the PUBACK with that id
        c.ping()
        c.disconnect()
        got = [sub.get() for _ in range(3)]
        assert [m.payload for m in got] == [b'{"v":1}', big, b"qos0"]
        assert [m.qos for m in got] == [1, 1, 0]
        assert {m.topic for m in got} == {"edge-gw/esp32-1/batch"}
    finally:
        sub.close()


def test_wrong_password_is_refused(broker: Mosquitto) -> None:
    c = mqtt.MQTTClient("esp32-1", "127.0.0.1", broker.port, user="esp32-1", password="wrong")
    with pytest.raises(mqtt.MQTTError, match="connection refused: not authorised"):
        c.connect()
    assert c.sock is None


def test_last_will_is_published_retained_when_the_connection_drops(broker: Mosquitto) -> None:
    offline = b'{"v":1,"gateway":"esp32-1","state":"offline"}'
    online = b'{"v":1,"gateway":"esp32-1","state":"online"}'
    c = mqtt.MQTTClient("esp32-1", "127.0.0.1", broker.port, user="esp32-1", password="s3cret", keepalive=5)
    c.set_last_will("edge-gw/esp32-1/status", offline, retain=True, qos=1)
    c.connect()
    c.publish("edge-gw/esp32-1/status", online, retain=True, qos=1)
    sub = Subscriber(broker.port, "edge-gw/esp32-1/status")
    try:
        first = sub.get()
        assert (first.payload, first.retain) == (online, True)
        c.close()  # no DISCONNECT: the broker must send the will
        will = sub.get()
        assert (will.payload, will.qos) == (offline, 1)
    finally:
        sub.close()
    late = Subscriber(broker.port, "edge-gw/esp32-1/status")
    try:
        kept = late.get()
        assert (kept.payload, kept.retain) == (offline, True)
    finally:
        late.close()


def test_broker_gone_becomes_mqtt_error(broker: Mosquitto) -> None:
    c = mqtt.MQTTClient("esp32-1", "127.0.0.1", broker.port, user="esp32-1", password="s3cret", timeout=2)
    c.connect()
    broker.stop()
    with pytest.raises(mqtt.MQTTError):
        for _ in range(3):  # the first write may still land in the kernel buffer
            c.publish("edge-gw/esp32-1/batch", b"x", qos=1)
    with pytest.raises(mqtt.MQTTError, match="cannot connect"):
        c.connect()


def make_certs(d: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 (tests/pki.py), RSA as the port's TLS expects."""
    ca = make_ca(d, "ca", key="rsa")
    cert, key = make_cert(d, "server", "ca", server=True, cn="127.0.0.1", key="rsa")
    return ca, cert, key


def test_tls_with_a_verified_server_certificate(tmp_path: Path) -> None:
    workdir = tmp_path / "tls"
    workdir.mkdir()
    ca, cert, key = make_certs(workdir)
    b = Mosquitto(workdir, extra=[f"cafile {ca}", f"certfile {cert}", f"keyfile {key}"]).start()
    try:
        c = mqtt.MQTTClient("esp32-1", "127.0.0.1", b.port, ssl=mqtt.tls_context(str(ca)))
        c.connect()
        assert c.publish("edge-gw/esp32-1/batch", b"over tls", qos=1) == 1
        c.disconnect()
        other_ca = tmp_path / "other"
        other_ca.mkdir()
        wrong, _, _ = make_certs(other_ca)
        c = mqtt.MQTTClient("esp32-1", "127.0.0.1", b.port, ssl=mqtt.tls_context(str(wrong)))
        with pytest.raises(mqtt.MQTTError, match="CERTIFICATE_VERIFY_FAILED"):
            c.connect()
    finally:
        b.stop()


@pytest.fixture
def board_gateway(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The board's gateway module on CPython: the few MicroPython names it uses are shimmed for this test only."""
    shim = ModuleType("micropython")
    shim.const = lambda x: x  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "micropython", shim)
    monkeypatch.setattr(time, "ticks_ms", lambda: time.monotonic_ns() // 1_000_000 & 0x3FFFFFFF, raising=False)
    wrap = lambda a, b: ((a - b + 0x20000000) & 0x3FFFFFFF) - 0x20000000  # noqa: E731  # ticks wrap at 2**30
    monkeypatch.setattr(time, "ticks_diff", wrap, raising=False)
    monkeypatch.setattr(asyncio, "sleep_ms", lambda ms: asyncio.sleep(ms / 1000), raising=False)
    monkeypatch.syspath_prepend(str(BOARD))
    board = ("gateway", "mqtt", "net", "wire", "ring", "scanner", "ruuvi", "config")
    for name in board:
        monkeypatch.delitem(sys.modules, name, raising=False)
    try:
        yield importlib.import_module("gateway")
    finally:
        for name in board:
            sys.modules.pop(name, None)


class Wlan:
    def active(self, *_a: object) -> bool:
        return True

    def isconnected(self) -> bool:
        return True


class TextBuffer(bytearray):
    """MicroPython's bytearray.extend() takes a str as UTF-8 (the board relies on it to build JSON without copies)."""

    def extend(self, data: object) -> None:
        super().extend(data.encode() if isinstance(data, str) else data)  # type: ignore[arg-type]


class SyncedClock:
    synced = True

    def stamp(self) -> tuple[int, int]:
        return time.time_ns(), 0


def test_the_ring_drops_slots_only_when_the_receiver_confirms(
    broker: Mosquitto, board_gateway: ModuleType, tmp_path: Path
) -> None:
    from core.wire import encode_confirms

    config = importlib.import_module("config")
    cfg = config.validate({
        "gateway_id": "esp32-1",
        "wifi": {"ssid": "lab"},
        "broker": {"host": "127.0.0.1", "port": broker.port, "password": "s3cret", "timeout_s": 5},
        "buffer": {"path": str(tmp_path / "ring.bin"), "bytes": 8192, "page_bytes": 256},
        "uplink": {"batch_max_readings": 7},
    })
    gw = board_gateway.Gateway(cfg, None, Wlan(), SyncedClock())
    gw._buf = TextBuffer(640)
    receiver = Subscriber(broker.port, "edge-gw/esp32-1/batch")
    try:
        df5 = bytes.fromhex("0512fc5394c37c0004fffc040cac364200cdcbb8334c884f")
        for i in range(10):
            gw.on_advert(bytes((0xCB, 0, 0, 0, 0, i)), -60, df5)
        gw.ring.flush()
        asyncio.run(gw.uplink_step())  # connect, subscribe to .../confirm, two batches PUBACKed
        batches = [json.loads(receiver.get().payload) for _ in range(2)]
        assert [len(b["readings"]) for b in batches] == [7, 3]
        assert (gw.ring.tail, gw.ring.committed(), gw.batches) == (0, 10, 2)  # PUBACKs alone delete nothing

        def confirm(payload: bytes, until: object) -> None:
            receiver.client.publish("edge-gw/esp32-1/confirm", payload, qos=1).wait_for_publish(5)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not until():  # type: ignore[operator]
                gw.poll()
                time.sleep(0.02)

        # another gateway's confirmation deletes nothing
        confirm(encode_confirms("esp32-2", [b["seq"] for b in batches])[0], lambda: gw.bad_confirms)
        assert (gw.bad_confirms, gw.ring.tail, gw.ring.committed()) == (1, 0, 10)
        confirm(encode_confirms("esp32-1", [batches[1]["seq"]])[0], lambda: gw.confirms)  # out of order: waits
        assert (gw.confirms, gw.ring.tail, gw.ring.committed()) == (1, 0, 10)
        confirm(encode_confirms("esp32-1", [batches[0]["seq"]])[0], lambda: gw.confirms == 2)
        assert (gw.ring.tail, gw.ring.committed(), gw.acked) == (10, 0, 10)
        assert gw.ring.inflight == []
        reboot = sys.modules["ring"].Ring(str(tmp_path / "ring.bin"), 8192, 256)
        assert (reboot.tail, reboot.head) == (10, 10)  # the ack position was persisted after the confirmation
        gw.disconnect()
    finally:
        receiver.close()
