"""cloud/kafka/records.py: points survive a round trip with their field types, in both encodings and record kinds,
and every malformed record is a RecordError (a poison record for the DLQ), never another exception."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud.kafka.records import Codec, RecordError, record_key
from cloud.model import Point


def _points(n: int = 12) -> list[Point]:
    return [Point("ruuvi", {"mac": f"AA:BB:CC:DD:EE:{i % 3:02X}", "gateway": "gw-1", "data_format": "5"},
                  {"temperature": 21.0 + i, "humidity": 40.5, "acceleration_x": -4 * i, "battery_voltage": 2900,
                   "calibration_in_progress": i % 2 == 0, "note": f"n{i}"}, 1_700_000_000_000_000_000 + i)
            for i in range(n)]


def _types(p: Point) -> dict[str, type]:
    return {k: type(v) for k, v in p.fields.items()}


@pytest.mark.parametrize("encoding", ["json", "avro"])
def test_one_record_per_reading_round_trips_with_types_and_mac_keys(encoding: str) -> None:
    codec = Codec(encoding)
    points = _points()
    records = codec.records(points, "reading")
    assert [r.key for r in records] == [p.tags["mac"].encode() for p in points]
    assert all(r.readings == 1 for r in records)
    back = [q for r in records for q in Codec("json").decode(r.value, r.headers)]  # any codec reads both
    assert back == points
    assert [_types(p) for p in back] == [_types(p) for p in points]
    assert points[0].fields["temperature"] == 21.0 and _types(back[0])["temperature"] is float
    assert _types(back[0])["battery_voltage"] is int and _types(back[0])["calibration_in_progress"] is bool


@pytest.mark.parametrize("encoding", ["json", "avro"])
def test_one_record_per_tag_and_batch_keeps_each_tags_order(encoding: str) -> None:
    codec = Codec(encoding)
    points = _points()
    records = codec.records(points, "batch")
    assert [r.key for r in records] == [b"AA:BB:CC:DD:EE:00", b"AA:BB:CC:DD:EE:01", b"AA:BB:CC:DD:EE:02"]
    assert [r.readings for r in records] == [4, 4, 4]
    for r in records:
        got = codec.decode(r.value, r.headers)
        assert got == [p for p in points if record_key(p) == r.key]
    assert dict(records[0].headers)["record"] == b"batch"


def test_headers_name_the_encoding_and_the_avro_schema() -> None:
    avro = Codec("avro")
    h = dict(avro.records(_points(1))[0].headers)
    assert h["content-type"] == b"application/avro" and h["record"] == b"reading"
    assert len(h["schema-fingerprint"]) == 16 and h["schema-fingerprint"] == avro.fingerprint.encode()
    assert dict(Codec("json").records(_points(1))[0].headers) == {"content-type": b"application/json",
                                                                  "record": b"reading"}


def test_a_record_without_headers_is_one_json_reading() -> None:
    p = _points(1)[0]
    assert Codec("avro").decode(Codec("json").encode_reading(p), None) == [p]


def test_key_falls_back_to_gateway_then_measurement() -> None:
    assert record_key(Point("m", {"gateway": "gw"}, {"a": 1}, 1)) == b"gw"
    assert record_key(Point("m", {}, {"a": 1}, 1)) == b"m"


@pytest.mark.parametrize(("value", "headers", "reason"), [
    (b"{", None, "malformed JSON"),
    (b"[]", None, "must be an object"),
    (None, None, "tombstone"),
    (b'{"measurement":"r","time_ns":1.5,"tags":{},"fields":{"a":1}}', None, "time_ns must be an integer"),
    (b'{"measurement":"","time_ns":1,"tags":{},"fields":{"a":1}}', None, "measurement"),
    (b'{"measurement":"r","time_ns":1,"tags":{"a":1},"fields":{"a":1}}', None, "tags"),
    (b'{"measurement":"r","time_ns":1,"tags":{},"fields":{}}', None, "non-empty"),
    (b'{"measurement":"r","time_ns":1,"tags":{},"fields":{"a":[1]}}', None, "fields.a"),
    (b"[]", [("record", b"batch")], "non-empty array"),
    (b"{}", [("record", b"bogus")], "record kind"),
    (b"{}", [("content-type", b"text/plain")], "content-type"),
    (b"\x02\x00", [("content-type", b"application/avro")], "malformed Avro"),
    (b"\x00", [("content-type", b"application/avro"), ("schema-fingerprint", b"0000000000000000")], "fingerprint"),
    # Deep nesting under a key msgspec skips raises RecursionError there, not DecodeError: still a poison record.
    (b'{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}", None, "depth limit exceeded"),
    (b'[{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}]", [("record", b"batch")], "depth limit exceeded"),
])
def test_malformed_records_are_record_errors(value: bytes | None, headers: list[tuple[str, bytes]] | None,
                                             reason: str) -> None:
    with pytest.raises(RecordError, match=reason):
        Codec("json").decode(value, headers)


def test_trailing_bytes_after_an_avro_record_are_refused() -> None:
    codec = Codec("avro")
    r = codec.records(_points(1))[0]
    with pytest.raises(RecordError, match="bytes after the record"):
        codec.decode(r.value + b"\x00", r.headers)


@settings(max_examples=300, deadline=None)
@given(value=st.binary(max_size=200), avro=st.booleans(), batch=st.booleans())
def test_any_bytes_decode_or_raise_record_error(value: bytes, avro: bool, batch: bool) -> None:
    headers = [("content-type", b"application/avro" if avro else b"application/json"),
               ("record", b"batch" if batch else b"reading")]
    with contextlib.suppress(RecordError):
        Codec("json").decode(value, headers)


@pytest.mark.parametrize("number", [b"1e999", b"-1e999", b"NaN", b"Infinity", b"-Infinity"])
def test_a_json_record_cannot_carry_a_non_finite_number(number: bytes) -> None:
    """The JSON decoder relies on this (it does not check each float again): orjson refuses these numbers."""
    value = b'{"measurement":"r","time_ns":1,"tags":{},"fields":{"a":' + number + b"}}"
    with pytest.raises(RecordError, match="malformed JSON"):
        Codec("json").decode(value)


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_an_avro_record_with_a_non_finite_number_is_refused(number: float) -> None:
    codec = Codec("avro")
    r = codec.records([Point("ruuvi", {"mac": "m"}, {"temperature": number, "humidity": 1.0}, 1)])[0]
    with pytest.raises(RecordError, match=r"reading\.fields\.temperature is not finite"):
        codec.decode(r.value, r.headers)


def test_the_field_a_wrong_type_is_named() -> None:
    value = b'{"measurement":"r","time_ns":1,"tags":{},"fields":{"a":1,"b":2.5,"c":null}}'
    with pytest.raises(RecordError, match=r"reading\.fields\.c must be a number, a boolean or a string, got NoneType"):
        Codec("json").decode(value)


def test_headers_read_once_are_read_again_when_they_change() -> None:
    codec = Codec("avro")
    j, a = Codec("json").records(_points(1), "batch")[0], codec.records(_points(1), "batch")[0]
    for r in (j, a, j, a):
        assert codec.decode(r.value, list(r.headers)) == _points(1)
    bogus = [("record", b"bogus")]
    for _ in range(2):  # refused the second time too: refused headers are not remembered as read
        with pytest.raises(RecordError, match="record kind"):
            codec.decode(j.value, bogus)
    assert codec.decode(j.value, j.headers) == _points(1)
