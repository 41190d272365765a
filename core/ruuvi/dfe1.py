"""Data format E1 (Ruuvi Air extended, Bluetooth 5 extended advertisement), 40 bytes.

Spec: https://docs.ruuvi.com/communication/bluetooth-advertisements/data-format-e1

The docs call bytes 22-24 "reserved (255)"; Ruuvi Air firmware, ruuvi.endpoints.c and Ruuvi Gateway put
instant sound (dBA), average sound (dBA) and peak sound pressure (dB) there, 9-bit each with flags bits
3, 4 and 5. Bytes 29-33 are reserved and ignored. Luminosity and the measurement sequence are 24-bit.
"""

from __future__ import annotations

import struct
from typing import Any

from core.ruuvi import _fields as f
from core.ruuvi.errors import check_length

LENGTH = 40
# u24 fields are read as a byte plus a u16 and joined below.
_LAYOUT = struct.Struct(">xhHHHHHHHBBBHBBBBHB")


def decode(payload: bytes) -> dict[str, Any]:
    check_length(payload, "E1", LENGTH)
    (t, h, p, pm1, pm25, pm4, pm10, co2, voc, nox, lux_hi, lux_lo, s_inst, s_avg, s_peak,
     seq_hi, seq_lo, flags) = _LAYOUT.unpack_from(payload)  # fmt: skip
    lux = (lux_hi << 16) | lux_lo
    seq = (seq_hi << 16) | seq_lo
    return {
        "data_format": 0xE1,
        "temperature": f.temperature(t),
        "humidity": f.humidity(h),
        "pressure": f.pressure(p),
        "measurement_sequence_number": None if seq == 0xFFFFFF else seq,
        "mac": f.mac6(payload[34:40]),
        "pm1_0": f.pm(pm1),
        "pm2_5": f.pm(pm25),
        "pm4_0": f.pm(pm4),
        "pm10_0": f.pm(pm10),
        "co2": None if co2 == 0xFFFF else co2,
        "voc_index": f.u9(voc, flags, f.VOC_LSB),
        "nox_index": f.u9(nox, flags, f.NOX_LSB),
        "luminosity": None if lux == 0xFFFFFF else lux / 100,
        "sound_instant_dba": f.sound(s_inst, flags, f.SOUND_INSTANT_LSB),
        "sound_average_dba": f.sound(s_avg, flags, f.SOUND_AVERAGE_LSB),
        "sound_peak_spl_db": f.sound(s_peak, flags, f.SOUND_PEAK_LSB),
        "calibration_in_progress": bool(flags & f.CALIBRATION),
        "button_pressed": bool(flags & f.BUTTON),
        "rtc_running_on_boot": bool(flags & f.RTC_ON_BOOT),
    }
