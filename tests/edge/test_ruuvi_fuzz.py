"""Property tests: decode() and payload_from_hex() return a value or raise DecodeError, nothing else."""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_ruuvi_vectors import KEYS_BY_FORMAT, OK, check_shape

from core.ruuvi import DecodeError, decode, payload_from_hex
from core.ruuvi.hexinput import PAYLOAD_LENGTHS, ad_structures

FAST = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VALID = [bytes.fromhex(v["hex"]) for v in OK]


def decode_or_error(payload: bytes) -> dict[str, Any] | None:
    try:
        fields = decode(payload)
    except DecodeError as exc:
        assert str(exc)
        return None
    check_shape(fields)
    return fields


@FAST
@given(st.binary(max_size=64))
def test_random_bytes(payload: bytes) -> None:
    fields = decode_or_error(payload)
    if fields is not None:
        assert len(payload) == PAYLOAD_LENGTHS[payload[0]]


@FAST
@given(st.sampled_from(sorted(PAYLOAD_LENGTHS)), st.data())
def test_random_body_of_the_right_length_always_decodes(fmt: int, data: st.DataObject) -> None:
    body = data.draw(st.binary(min_size=PAYLOAD_LENGTHS[fmt] - 1, max_size=PAYLOAD_LENGTHS[fmt] - 1))
    fields = decode(bytes([fmt]) + body)
    check_shape(fields)
    assert list(fields) == KEYS_BY_FORMAT[fmt]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(0, 4))):
        action = draw(st.sampled_from(["flip", "set", "cut", "add", "sentinel"]))
        if action == "cut" and raw:
            del raw[draw(st.integers(0, len(raw) - 1)) :]
        elif action == "add":
            raw += draw(st.binary(min_size=1, max_size=4))
        elif raw:
            i = draw(st.integers(0, len(raw) - 1))
            if action == "flip":
                raw[i] ^= 1 << draw(st.integers(0, 7))
            elif action == "set":
                raw[i] = draw(st.integers(0, 255))
            else:
                raw[i : i + 2] = b"\xff\xff" if draw(st.booleans()) else b"\x80\x00"
    return bytes(raw)


@FAST
@given(mutated())
def test_mutated_valid_payloads(payload: bytes) -> None:
    decode_or_error(payload)


@FAST
@given(st.text(max_size=120))
def test_payload_from_hex_with_random_text(text: str) -> None:
    try:
        payload = payload_from_hex(text)
    except DecodeError:
        return
    assert isinstance(payload, bytes)
    decode_or_error(payload)


@FAST
@given(st.binary(max_size=80), st.sampled_from(["", " ", "\n", "\t "]), st.booleans())
def test_payload_from_hex_with_random_hex(raw: bytes, pad: str, upper: bool) -> None:
    text = raw.hex().upper() if upper else raw.hex()
    try:
        payload = payload_from_hex(pad + text + pad)
    except DecodeError:
        return
    # Whatever reading applied, the payload is a slice of the input.
    assert payload in raw
    decode_or_error(payload)


@FAST
@given(
    st.integers(-32768, 32767),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFF),
    st.integers(0, 0xFFFF),
    st.sampled_from([b"\xff" * 6, bytes(6), bytes.fromhex("cbb8334c884f")]),
)
def test_df5_and_c5_agree_on_shared_fields(
    t: int, h: int, p: int, power: int, movement: int, seq: int, mac: bytes
) -> None:
    # df5.py inlines the codings that dfc5.py takes from _fields; the two must never drift apart.
    df5 = struct.pack(">BhHHhhhHBH", 5, t, h, p, 0, 0, 0, power, movement, seq) + mac
    c5 = struct.pack(">BhHHHBH", 0xC5, t, h, p, power, movement, seq) + mac
    a, b = decode(df5), decode(c5)
    assert {k: v for k, v in a.items() if k in b and k != "data_format"} == {
        k: v for k, v in b.items() if k != "data_format"
    }



def _rules(raw: bytes) -> bytes | None:
    """Rules 2-5 of core/ruuvi/hexinput.py's doc, spelled out with ad_structures (None: DecodeError): the reference
    for its fast path."""
    if raw[:2] == b"\x99\x04":
        return raw[2:]
    if raw and PAYLOAD_LENGTHS.get(raw[0]) == len(raw):
        return raw
    structures = ad_structures(raw)
    if structures is None:
        return raw
    for ad_type, data in structures:
        if ad_type == 0xFF and data[:2] == b"\x99\x04":
            return data[2:]
    return None


@FAST
@given(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=40), st.binary(max_size=3), st.booleans(),
       st.integers(-2, 2))
def test_flags_then_ruuvi_data_reads_as_the_rules_do(flag_type: int, flags: int, payload: bytes, tail: bytes,
                                                     company_ok: bool, skew: int) -> None:
    """The usual advertisement (flags, then Ruuvi's manufacturer data) has a fast path: it must give what the rules
    give, for any bytes around it: another company id, trailing bytes, a length byte that is off."""
    company = b"\x99\x04" if company_ok else b"\x99\x05"
    manufacturer = bytes([0xFF]) + company + payload
    raw = bytes([2, flag_type, flags, max(0, min(255, len(manufacturer) + skew))]) + manufacturer + tail
    try:
        got: bytes | None = payload_from_hex(raw.hex())
    except DecodeError:
        got = None
    assert got == _rules(raw)
