"""Data format 5 (RAWv2), 24 bytes: the main RuuviTag format.

Spec: https://docs.ruuvi.com/communication/bluetooth-advertisements/data-format-5-rawv2

This is the hot path of the gateway (one call per advert), so it unpacks once with a precompiled
``struct.Struct`` and builds the result dict in one literal. ``t / 200`` and ``h / 400`` already are the
doubles nearest to the 3- and 4-decimal values, so no ``round()`` call is needed (tests check that for
every raw value).
"""

from __future__ import annotations

import struct
from typing import Any

from edge.ruuvi.errors import check_length

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
        "acceleration_x": None if ax == -32768 else ax,
        "acceleration_y": None if ay == -32768 else ay,
        "acceleration_z": None if az == -32768 else az,
        "battery_voltage": None if volts == 2047 else volts + 1600,
        "tx_power": None if tx == 31 else tx * 2 - 40,
        "movement_counter": None if movement == 0xFF else movement,
        "measurement_sequence_number": None if seq == 0xFFFF else seq,
        "mac": None if mac == _NO_MAC else mac.hex(":"),
    }
