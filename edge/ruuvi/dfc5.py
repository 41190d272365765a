"""Data format C5 (cut RAWv2), 18 bytes: data format 5 without acceleration.

Spec: https://docs.ruuvi.com/communication/bluetooth-advertisements/data-format-c5-rawv2

Scaling and "not available" values are those of data format 5.
"""

from __future__ import annotations

import struct
from typing import Any

from edge.ruuvi._mac import mac6
from edge.ruuvi.errors import check_length

LENGTH = 18
_LAYOUT = struct.Struct(">xhHHHBH")


def decode(payload: bytes) -> dict[str, Any]:
    check_length(payload, "C5", LENGTH)
    t, h, p, power, movement, seq = _LAYOUT.unpack_from(payload)
    volts = power >> 5
    tx = power & 0x1F
    return {
        "data_format": 0xC5,
        "temperature": None if t == -32768 else t / 200,
        "humidity": None if h == 0xFFFF else h / 400,
        "pressure": None if p == 0xFFFF else p + 50000,
        "battery_voltage": None if volts == 2047 else volts + 1600,
        "tx_power": None if tx == 31 else tx * 2 - 40,
        "movement_counter": None if movement == 0xFF else movement,
        "measurement_sequence_number": None if seq == 0xFFFF else seq,
        "mac": mac6(payload[12:18]),
    }
