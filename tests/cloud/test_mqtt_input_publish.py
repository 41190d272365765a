"""The input's own PUBLISH parser (MqttInput._on_publish) against gmqtt's: the same topic, payload, packet id and DUP
flag for every QoS 0 and QoS 1 packet, and gmqtt's path for everything it does not handle itself."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from hypothesis import given
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
