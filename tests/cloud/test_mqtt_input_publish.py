"""The input's own PUBLISH parser (MqttInput._on_publish) against gmqtt's: the same topic, payload, packet id and DUP
flag for every QoS 0 and QoS 1 packet, and gmqtt's path for everything it does not handle itself. Its framing of the
byte stream (MqttInput._read_publishes_directly) against gmqtt's `_read_packet`: the same packets, chunk by chunk."""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from typing import Any

from gmqtt.mqtt.connection import MQTTConnection
from gmqtt.mqtt.protocol import MQTTProtocol
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud.mqtt_input import MqttInput
from cloud.receiver_settings import MqttSettings


@dataclass
class Taken:
    mid: int | None


class Recorder:
    def __init__(self) -> None:
        self.got: list[tuple[str, bytes, int, bool, int | None]] = []
        self.input = MqttInput(MqttSettings(), self, on_connection=lambda up: None)

    def __call__(self, topic: str, payload: bytes, qos: int, dup: bool) -> Taken:
        self.got.append((topic, payload, qos, dup, self.input._mid_in_hand))
        return Taken(mid=1)  # kept: no PUBACK now (that would need a running loop)


def publish_packet(topic: bytes, mid: int, payload: bytes, properties: bytes = b"") -> bytes:
    """A PUBLISH's variable header and payload, QoS 1, MQTT v5 (gmqtt has split off the fixed header)."""
    return struct.pack("!H", len(topic)) + topic + struct.pack("!H", mid) + bytes([len(properties)]) + properties \
        + payload


TOPICS = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="+#\x00"), min_size=1, max_size=80)


@given(topic=TOPICS, mid=st.integers(1, 65535), payload=st.binary(max_size=300), dup=st.booleans())
def test_it_reads_what_gmqtt_reads(topic: str, mid: int, payload: bytes, dup: bool) -> None:
    cmd = 0x32 | (0x08 if dup else 0)
    packet = publish_packet(topic.encode(), mid, payload)
    ours, theirs = Recorder(), Recorder()
    ours.input._on_publish(cmd, packet)
    theirs.input._gmqtt_publish(cmd, packet)
    assert ours.got == theirs.got == [(topic, payload, 1, dup, mid)]


@given(topic=TOPICS, payload=st.binary(max_size=300), dup=st.booleans())
def test_at_qos_0_it_reads_what_gmqtt_reads(topic: str, payload: bytes, dup: bool) -> None:
    cmd = 0x30 | (0x08 if dup else 0)
    packet = struct.pack("!H", len(topic.encode())) + topic.encode() + b"\x00" + payload  # no packet id
    ours, theirs = Recorder(), Recorder()
    ours.input._on_publish(cmd, packet)
    theirs.input._gmqtt_publish(cmd, packet)
    assert ours.got == theirs.got == [(topic, payload, 0, dup, None)]


def test_a_packet_with_properties_takes_gmqtt_path_and_arrives_the_same() -> None:
    expiry = bytes([0x02]) + struct.pack("!I", 60)  # Message Expiry Interval
    r = Recorder()
    r.input._on_publish(0x32, publish_packet(b"ruuvi/gw/AA", 7, b"{}", expiry))
    r.input._on_publish(0x3A, publish_packet(b"ruuvi/gw/AA", 8, b"{}"))
    assert r.got == [("ruuvi/gw/AA", b"{}", 1, False, 7), ("ruuvi/gw/AA", b"{}", 1, True, 8)]


def test_what_it_does_not_handle_goes_to_gmqtt() -> None:
    r = Recorder()
    passed: list[tuple[int, bytes]] = []
    r.input._gmqtt_publish = lambda cmd, packet: passed.append((cmd, packet))
    qos0 = struct.pack("!H", 3) + b"a/b" + bytes([5, 0x02, 0, 0, 0, 60]) + b"x"  # a Message Expiry Interval
    alias_only = publish_packet(b"", 9, b"x", bytes([0x23, 0, 1]))  # empty topic: the topic alias names it
    not_utf8 = publish_packet(b"a/\xff", 10, b"x")
    short = b"\x00"
    qos2 = publish_packet(b"a/b", 11, b"x")
    for cmd, packet in [(0x30, qos0), (0x32, alias_only), (0x32, not_utf8), (0x32, short), (0x34, qos2)]:
        r.input._on_publish(cmd, packet)
    assert len(passed) == 5 and r.got == []


def test_mqtt_3_1_1_has_no_properties_byte_and_goes_to_gmqtt() -> None:
    r = Recorder()
    passed: list[Any] = []
    r.input._gmqtt_publish = lambda cmd, packet: passed.append(packet)
    r.input._protocol.protocol_version = 4  # gmqtt after the broker refused v5
    packet = struct.pack("!H", 3) + b"a/b" + struct.pack("!H", 5) + b"\x00payload"
    r.input._on_publish(0x32, packet)
    assert passed == [packet] and r.got == []


def test_the_brokers_sys_topics_go_to_their_reader_not_into_a_batch() -> None:
    class Sys:
        topics = ("$SYS/broker/uptime",)

        def __init__(self) -> None:
            self.got: list[tuple[str, bytes]] = []

        def subscribed(self) -> None: ...

        def refused(self, codes: list[int]) -> None: ...

        def message(self, topic: str, payload: bytes) -> None:
            self.got.append((topic, payload))

    r = Recorder()
    sys_reader = Sys()
    r.input._sys = sys_reader
    r.input._on_publish(0x30, struct.pack("!H", 18) + b"$SYS/broker/uptime" + b"\x00" + b"42 seconds")
    assert sys_reader.got == [("$SYS/broker/uptime", b"42 seconds")] and r.got == []


class FakeTransport(asyncio.Transport):
    def write(self, data: Any) -> None: ...

    def is_closing(self) -> bool:
        return False


def framed(cmd: int, body: bytes) -> bytes:
    """A packet with its fixed header: the command byte and the Remaining Length (MQTT v5 1.5.5)."""
    n, length = len(body), bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        length.append(digit | (0x80 if n else 0))
        if not n:
            return bytes([cmd]) + bytes(length) + body


# Payloads of every Remaining Length size: 1 byte (< 128), 2 (< 16,384) and 3.
PAYLOADS = st.builds(lambda n, b: bytes([b]) * n, st.integers(0, 20000) | st.integers(0, 200), st.integers(0, 255))
PACKETS = st.one_of(
    st.builds(lambda p, dup: framed(0x30 | dup, struct.pack("!H", 3) + b"a/b" + b"\x00" + p),
              PAYLOADS, st.sampled_from([0, 0x08])),  # QoS 0
    st.builds(lambda mid, p: framed(0x32, publish_packet(b"ruuvi/gw/AA", mid, p)), st.integers(1, 65535),
              PAYLOADS),  # QoS 1
    st.builds(lambda mid: framed(0x40, struct.pack("!HB", mid, 0)), st.integers(1, 65535)),  # PUBACK
    st.just(b"\xd0\x00"),  # PINGRESP
    st.builds(lambda mid: framed(0x90, struct.pack("!HBB", mid, 0, 1)), st.integers(1, 65535)),  # SUBACK
)


@settings(max_examples=200, deadline=None)
@given(packets=st.lists(PACKETS, max_size=30), cuts=st.lists(st.integers(0, 1 << 20), max_size=8))
def test_its_framing_splits_a_stream_as_gmqtt_does(packets: list[bytes], cuts: list[int]) -> None:
    """MqttInput._read_publishes_directly() takes over the connection's framing: fed the same stream in the same
    chunks (a read may end anywhere, even inside a length), it hands over the same packets in the same order as
    gmqtt's `_read_packet`, consumes the same bytes each time, and keeps gmqtt's keepalive clock."""
    stream = b"".join(packets)
    bounds = sorted({c % (len(stream) + 1) for c in cuts} | {len(stream)})
    chunks = [stream[a:b] for a, b in zip([0, *bounds], bounds, strict=False)]

    async def feed(ours: bool) -> tuple[list[tuple[int, bytes]], list[int], float]:
        got: list[tuple[int, bytes]] = []
        inp = MqttInput(MqttSettings(), lambda *a: None, on_connection=lambda up: None)
        handler = inp.client._package_handler
        protocol = MQTTProtocol(connection_state=handler._connection_state, id_generator=handler.id_generator)
        conn = MQTTConnection(FakeTransport(), protocol, False, 60, handler)
        conn._keep_connection_callback.cancel()
        conn.put_package = lambda pkg: got.append((pkg.cmd, pkg.data))  # type: ignore[method-assign]
        inp._on_publish = lambda cmd, packet: got.append((cmd, packet))  # type: ignore[method-assign]
        inp.client._connection = conn
        if ours:
            inp._read_publishes_directly()
            assert protocol._read_packet.__name__ == "read_packets"
        conn._last_data_in = 0.0
        consumed, buf = [], b""
        for chunk in chunks:  # gmqtt's read loop
            buf += chunk
            n = protocol._read_packet(buf)
            consumed.append(n)
            buf = buf[n:]
        assert buf == b""
        return got, consumed, conn._last_data_in

    ours, gmqtts = asyncio.run(feed(True)), asyncio.run(feed(False))
    assert ours[:2] == gmqtts[:2]
    assert [cmd for cmd, _ in ours[0]] == [p[0] for p in packets]
    assert (ours[2] > 0) == bool(packets)


def test_its_framing_resets_the_connection_on_a_length_of_five_bytes() -> None:
    """A Remaining Length of more than 4 bytes is a malformed packet (MQTT v5 1.5.5): -1 makes gmqtt's read loop drop
    the connection, and it reconnects. gmqtt's own framing instead waits for the 256 MB it reads as the length."""
    async def read(ours: bool) -> int:
        inp = MqttInput(MqttSettings(), lambda *a: None, on_connection=lambda up: None)
        handler = inp.client._package_handler
        protocol = MQTTProtocol(connection_state=handler._connection_state, id_generator=handler.id_generator)
        conn = MQTTConnection(FakeTransport(), protocol, False, 60, handler)
        conn._keep_connection_callback.cancel()
        inp.client._connection = conn
        if ours:
            inp._read_publishes_directly()
        return int(protocol._read_packet(b"\x30\xff\xff\xff\xff\x01" + b"x" * 10))

    assert asyncio.run(read(True)) == -1
    assert asyncio.run(read(False)) == 0
