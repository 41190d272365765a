"""The line protocol encoder: exact bytes for every escaping rule and value type."""

from __future__ import annotations

import pytest

from cloud import lineproto
from cloud.lineproto import EncodeError, Encoder, encode, encode_line
from cloud.model import Point


def p(tags: dict[str, str], fields: dict[str, float | int | bool | str], m: str = "ruuvi", t: int = 5) -> Point:
    return Point(m, tags, fields, t)


def test_types_and_tag_order() -> None:
    point = p(
        {"mac": "aa:bb", "gateway": "gw1", "data_format": "5"},
        {"temperature": 24.0, "humidity": 53.49, "pressure": 100044.0, "rssi": -71, "button_pressed": False},
        t=1763913600123456789,
    )
    assert encode([point]) == (
        b"ruuvi,data_format=5,gateway=gw1,mac=aa:bb "
        b"temperature=24.0,humidity=53.49,pressure=100044.0,rssi=-71i,button_pressed=false 1763913600123456789\n"
    )


def test_floats_roundtrip_exactly() -> None:
    for v in (0.1, 1e-7, 1e21, -0.005, 123456789.123456789, 5e-324):
        line = encode_line(p({}, {"x": v}))
        assert float(line.split("=")[1].split(" ")[0]) == v


def test_remembered_float_texts_are_the_texts_of_those_floats(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled formats remember repr() of the floats they wrote (cloud.lineproto._FLOAT_TEXTS): the text must
    stay each float's own, for 0.0 and -0.0 (equal as keys), after the memory is cleared on reaching its bound, and
    for floats that are equal to ints (1.0 and 1 are one dict key too)."""
    monkeypatch.setattr(lineproto, "_MAX_FLOAT_TEXTS", 50)
    monkeypatch.setattr(lineproto, "_FLOAT_TEXTS", {})
    values = [0.0, -0.0, 1.0, 0.1, -0.1, 1e21, 5e-324, *(i / 200 for i in range(-150, 150))] * 2
    enc = Encoder()
    for v in values:
        line = enc.line(p({}, {"t": v, "n": 1}))
        assert line == f"ruuvi t={v!r},n=1i 5"
    assert 0 < len(lineproto._FLOAT_TEXTS) <= 50
    assert 0.0 not in lineproto._FLOAT_TEXTS


def test_escaping() -> None:
    assert encode_line(p({"gateway": "a,b c=d"}, {"f k=,": 1})) == r"ruuvi,gateway=a\,b\ c\=d f\ k\=\,=1i 5"
    assert encode_line(p({}, {"x": 1}, m="my meas,x=y")) == r"my\ meas\,x=y x=1i 5"
    # Newlines can't be carried: they become the two characters \n (and \r).
    assert encode_line(p({"gateway": "a\nb\r"}, {"x": 1})) == r"ruuvi,gateway=a\nb\r x=1i 5"
    # A trailing backslash would escape the separator: dropped. Before an escaped character: doubled.
    assert encode_line(p({"gateway": "end\\"}, {"x": 1})) == r"ruuvi,gateway=end x=1i 5"
    assert encode_line(p({"gateway": "a\\,b"}, {"x": 1})) == r"ruuvi,gateway=a\\\,b x=1i 5"
    assert encode_line(p({"gateway": "a\\b"}, {"x": 1})) == r"ruuvi,gateway=a\b x=1i 5"
    assert encode_line(p({}, {"s": 'say "hi"\\'})) == r'ruuvi s="say \"hi\"\\" 5'


def test_empty_tag_values_are_left_out() -> None:
    assert encode_line(p({"gateway": "", "mac": "m", "x": "\\"}, {"v": True})) == "ruuvi,mac=m v=true 5"


def test_unencodable_points() -> None:
    with pytest.raises(EncodeError, match="no fields"):
        encode([p({}, {})])
    with pytest.raises(EncodeError, match="nan"):
        encode([p({}, {"x": float("nan")})])
    with pytest.raises(EncodeError, match="inf"):
        encode([p({}, {"x": float("-inf")})])
    with pytest.raises(EncodeError, match="unsupported type"):
        encode([p({}, {"x": None})])  # type: ignore[dict-item]
    assert encode([]) == b""


def test_cache_is_keyed_by_tag_values() -> None:
    enc = Encoder()
    a = enc.line(p({"mac": "a", "gateway": "g"}, {"x": 1}))
    b = enc.line(p({"mac": "b", "gateway": "g"}, {"x": 1}))
    assert (a, b) == ("ruuvi,gateway=g,mac=a x=1i 5", "ruuvi,gateway=g,mac=b x=1i 5")
