"""Data format 5 (RAWv2), 24 bytes: the main RuuviTag format.

Spec: https://docs.ruuvi.com/communication/bluetooth-advertisements/data-format-5-rawv2

This is the hot path of the gateway (one call per advert), so it unpacks once with a precompiled
``struct.Struct`` (MAC included) and builds the result in one dict literal with the ``_fields`` codings
inlined: calling them instead measured 0.81 instead of 0.68 µs per reading in bench/bench_decode.py,
which is too close to the 4x margin over ruuvitag-sensor this decoder must keep. The shared vectors hold
both spellings to the same results.
"""

from __future__ import annotations

import struct
from typing import Any

from core.ruuvi.errors import check_length

LENGTH = 24
_LAYOUT = struct.Struct(">xhHHhhhHBH6s")
_NO_MAC = b"\xff" * 6


def decode(payload: bytes) -> dict[str, Any]:
    if len(payload) != LENGTH:
        check_length(payload, "5", LENGTH)
    t, h, p, ax, ay, az, power, movement, seq, mac = _LAYOUT.unpack_from(payload)
    volts = power >> 5
    tx = power & 0x1F
    return {
        "data_format": 5,
        "temperature": None if t == -32768 else t / 200,
        "humidity": None if h == 0xFFFF else h / 400,
        "pressure": None if p == 0xFFFF else p + 50000,
        # Each axis is checked on its own (ruuvitag-sensor nulls all three if one is 0x8000).
        "acceleration_x": None if ax == -32768 else ax,
        "acceleration_y": None if ay == -32768 else ay,
        "acceleration_z": None if az == -32768 else az,
        "battery_voltage": None if volts == 2047 else volts + 1600,
        "tx_power": None if tx == 31 else tx * 2 - 40,
        "movement_counter": None if movement == 0xFF else movement,
        "measurement_sequence_number": None if seq == 0xFFFF else seq,
        "mac": None if mac == _NO_MAC else mac.hex(":"),
    }
