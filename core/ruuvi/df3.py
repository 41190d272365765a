"""Data format 3 (RAWv1), 14 bytes, deprecated but still sent by old RuuviTag firmware.

Spec: https://docs.ruuvi.com/communication/bluetooth-advertisements/data-format-3-rawv1

The format has no "not available" values (the spec suggests sending 0), so every field is always a number.
Temperature is sign-magnitude, not two's complement: bit 7 of byte 2 is the sign, bits 0-6 the whole
degrees, byte 3 the hundredths.
"""

from __future__ import annotations

import struct
from typing import Any

from core.ruuvi.errors import check_length

LENGTH = 14
_LAYOUT = struct.Struct(">xBBBHhhhH")


def decode(payload: bytes) -> dict[str, Any]:
    check_length(payload, "3", LENGTH)
    humidity, temp_int, temp_frac, pressure, acc_x, acc_y, acc_z, battery = _LAYOUT.unpack_from(payload)
    # Whole and hundredths are combined as an integer first, so the division yields the double nearest
    # to the 2-decimal value (no rounding step needed, identical in C and MicroPython); negating the
    # integer keeps "-0" out of the output.
    centi = (temp_int & 0x7F) * 100 + temp_frac
    if temp_int & 0x80:
        centi = -centi
    return {
        "data_format": 3,
        "temperature": centi / 100,
        "humidity": humidity / 2,
        "pressure": pressure + 50000,
        "acceleration_x": acc_x,
        "acceleration_y": acc_y,
        "acceleration_z": acc_z,
        "battery_voltage": battery,
    }
