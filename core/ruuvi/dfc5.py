"""Data format C5 (cut RAWv2), 18 bytes: data format 5 without acceleration.

Spec: https://docs.ruuvi.com/communication/bluetooth-advertisements/data-format-c5-rawv2

Scaling and "not available" values are those of data format 5.
"""

from __future__ import annotations

import struct
from typing import Any

from core.ruuvi import _fields as f
from core.ruuvi.errors import check_length

LENGTH = 18
_LAYOUT = struct.Struct(">xhHHHBH")


def decode(payload: bytes) -> dict[str, Any]:
    check_length(payload, "C5", LENGTH)
    t, h, p, power, movement, seq = _LAYOUT.unpack_from(payload)
    return {
        "data_format": 0xC5,
        "temperature": f.temperature(t),
        "humidity": f.humidity(h),
        "pressure": f.pressure(p),
        "battery_voltage": f.battery(power),
        "tx_power": f.tx_power(power),
        "movement_counter": None if movement == 0xFF else movement,
        "measurement_sequence_number": None if seq == 0xFFFF else seq,
        "mac": f.mac6(payload[12:18]),
    }
