"""Data format 6 (Ruuvi Air, Bluetooth 4 legacy advertisement), 20 bytes.

Spec: https://docs.ruuvi.com/communication/bluetooth-advertisements/data-format-6

The docs call byte 14 "reserved (255)"; Ruuvi Air firmware, ruuvi.endpoints.c and Ruuvi Gateway put the
average sound level there (9-bit with flags bit 4), so we decode it. The docs' own vectors therefore read
120.0 dBA when byte 14 is 0xFF and flags bit 4 is clear. Only the low 3 MAC bytes are carried, and the
8-bit measurement sequence has no "not available" value (it is the low byte of the E1 counter).
"""

from __future__ import annotations

import math
import struct
from typing import Any

from core.ruuvi import _fields as f
from core.ruuvi.errors import check_length

LENGTH = 20
_LAYOUT = struct.Struct(">xhHHHHBBBBBB")
# Luminosity is a log code: lux = exp(code * ln(65536) / 254) - 1, code 0..254, 255 = not available.
LUX_DELTA = math.log(65536) / 254


def _lux(code: int) -> float:
    return round(math.exp(code * LUX_DELTA) - 1, 2)


# The 255 possible values, computed once: exp() per advert was a tenth of the DF6 decode.
_LUX_TABLE: tuple[float | None, ...] = (*(_lux(code) for code in range(255)), None)


def luminosity(code: int) -> float | None:
    return _LUX_TABLE[code]


def decode(payload: bytes) -> dict[str, Any]:
    check_length(payload, "6", LENGTH)
    t, h, p, pm25, co2, voc, nox, lux, snd, seq, flags = _LAYOUT.unpack_from(payload)
    return {
        "data_format": 6,
        "temperature": f.temperature(t),
        "humidity": f.humidity(h),
        "pressure": f.pressure(p),
        "measurement_sequence_number": seq,
        "mac": f.mac3(payload[17:20]),
        "pm2_5": f.pm(pm25),
        "co2": None if co2 == 0xFFFF else co2,
        "voc_index": f.u9(voc, flags, f.VOC_LSB),
        "nox_index": f.u9(nox, flags, f.NOX_LSB),
        "luminosity": luminosity(lux),
        "sound_average_dba": f.sound(snd, flags, f.SOUND_AVERAGE_LSB),
        "calibration_in_progress": bool(flags & f.CALIBRATION),
        "button_pressed": bool(flags & f.BUTTON),
        "rtc_running_on_boot": bool(flags & f.RTC_ON_BOOT),
    }
