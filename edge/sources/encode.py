"""Pure encoders for the Ruuvi formats the simulator sends: DF5 (RuuviTag), DF6 and E1 (Ruuvi Air).

They are the inverse of `core.ruuvi.decode`: physical values in, the manufacturer-data payload out (starting with
the format byte, without the company id). `None` becomes the format's "not available" sentinel. Values are rounded
to the format's resolution; a value the format cannot carry raises ValueError rather than wrapping silently.
Layouts: docs.ruuvi.com, communication/bluetooth-advertisements (see /docs and core/ruuvi/ for the decoders).
"""

from __future__ import annotations

import math
import struct

_DF5 = struct.Struct(">BhHHhhhHBH6s")
_DF6 = struct.Struct(">BhHHHHBBBBBB3s")
_E1 = struct.Struct(">BhHHHHHHHBBBHBBBBHB5s6s")
_LUX_DELTA = math.log(65536) / 254
_RESERVED5 = b"\xff" * 5

# Flag bits shared by DF6 and E1 (DF6 byte 16, E1 byte 28).
CALIBRATION = 0x01
BUTTON = 0x02
RTC_ON_BOOT = 0x04
_SOUND_INSTANT_LSB = 3
_SOUND_AVERAGE_LSB = 4
_SOUND_PEAK_LSB = 5
_VOC_LSB = 6
_NOX_LSB = 7


def _code(value: float | None, scale: float, offset: float, lo: int, hi: int, na: int, name: str) -> int:
    if value is None:
        return na
    code = round((value - offset) * scale)
    if not lo <= code <= hi:
        raise ValueError(f"{name} {value} is out of range for this format")
    return code


def _env(temperature: float | None, humidity: float | None, pressure: float | None) -> tuple[int, int, int]:
    return (
        _code(temperature, 200, 0, -32767, 32767, -32768, "temperature"),
        _code(humidity, 400, 0, 0, 65534, 0xFFFF, "humidity"),
        _code(pressure, 1, 50000, 0, 65534, 0xFFFF, "pressure"),
    )


def _mac(mac: str | bytes | None, size: int) -> bytes:
    if mac is None:
        return b"\xff" * size
    raw = bytes.fromhex(mac.replace(":", "")) if isinstance(mac, str) else mac
    if len(raw) not in (6, size):
        raise ValueError(f"mac must have 6 bytes, got {len(raw)}")
    return raw[len(raw) - size :]


def _nine_bit(value: float | None, scale: float, offset: float, name: str) -> int:
    """A 9-bit code (0..510, 511 = not available): the caller splits it into a byte and one flags bit."""
    return _code(value, scale, offset, 0, 510, 0x1FF, name)


def df5(
    *,
    temperature: float | None,
    humidity: float | None,
    pressure: float | None,
    acceleration: tuple[int | None, int | None, int | None] = (None, None, None),
    battery_voltage: int | None = None,
    tx_power: int | None = None,
    movement_counter: int | None = None,
    sequence: int | None = None,
    mac: str | bytes | None = None,
) -> bytes:
    """Data format 5 (RAWv2), 24 bytes. Acceleration in mG, battery in mV (1600..3646), tx power in dBm (-40..20,
    even), pressure in Pa."""
    t, h, p = _env(temperature, humidity, pressure)
    ax, ay, az = (_code(a, 1, 0, -32767, 32767, -32768, "acceleration") for a in acceleration)
    volts = _code(battery_voltage, 1, 1600, 0, 2046, 2047, "battery_voltage")
    tx = _code(tx_power, 0.5, -40, 0, 30, 31, "tx_power")
    movement = _code(movement_counter, 1, 0, 0, 254, 0xFF, "movement_counter")
    seq = _code(sequence, 1, 0, 0, 65534, 0xFFFF, "sequence")
    return _DF5.pack(5, t, h, p, ax, ay, az, (volts << 5) | tx, movement, seq, _mac(mac, 6))


def df5_codes(t: int, h: int, p: int, ax: int, ay: int, az: int, volts: int, tx: int, movement: int, seq: int,
              mac: bytes) -> bytes:
    """DF5 from raw codes (temperature ×200, humidity ×400, pressure −50000, mG, battery mV − 1600, (dBm+40)/2),
    with no range checks: the simulator's hot path, which keeps its values in range itself. `df5()` is the
    checked form; a test holds the two to the same bytes."""
    return _DF5.pack(5, t, h, p, ax, ay, az, (volts << 5) | tx, movement, seq, mac)


def _lux_code(lux: float | None) -> int:
    if lux is None:
        return 0xFF
    if lux < 0:
        raise ValueError(f"luminosity {lux} is out of range for this format")
    return min(254, round(math.log(lux + 1) / _LUX_DELTA))


def df6(
    *,
    temperature: float | None,
    humidity: float | None,
    pressure: float | None,
    pm2_5: float | None = None,
    co2: int | None = None,
    voc_index: int | None = None,
    nox_index: int | None = None,
    luminosity: float | None = None,
    sound_average_dba: float | None = None,
    sequence: int = 0,
    flags: int = 0,
    mac: str | bytes | None = None,
) -> bytes:
    """Data format 6 (Ruuvi Air, legacy advertisement), 20 bytes. `sequence` is the low byte of the E1 counter
    (any int; only its low 8 bits are sent). `flags` takes CALIBRATION | BUTTON | RTC_ON_BOOT."""
    t, h, p = _env(temperature, humidity, pressure)
    pm = _code(pm2_5, 10, 0, 0, 65534, 0xFFFF, "pm2_5")
    c = _code(co2, 1, 0, 0, 65534, 0xFFFF, "co2")
    voc = _nine_bit(voc_index, 1, 0, "voc_index")
    nox = _nine_bit(nox_index, 1, 0, "nox_index")
    snd = _nine_bit(sound_average_dba, 5, 18, "sound_average_dba")
    bits = (flags & 0x07) | (voc & 1) << _VOC_LSB | (nox & 1) << _NOX_LSB | (snd & 1) << _SOUND_AVERAGE_LSB
    return _DF6.pack(6, t, h, p, pm, c, voc >> 1, nox >> 1, _lux_code(luminosity), snd >> 1, sequence & 0xFF, bits,
                     _mac(mac, 3))


def e1(
    *,
    temperature: float | None,
    humidity: float | None,
    pressure: float | None,
    pm1_0: float | None = None,
    pm2_5: float | None = None,
    pm4_0: float | None = None,
    pm10_0: float | None = None,
    co2: int | None = None,
    voc_index: int | None = None,
    nox_index: int | None = None,
    luminosity: float | None = None,
    sound_instant_dba: float | None = None,
    sound_average_dba: float | None = None,
    sound_peak_spl_db: float | None = None,
    sequence: int | None = None,
    flags: int = 0,
    mac: str | bytes | None = None,
) -> bytes:
    """Data format E1 (Ruuvi Air, extended advertisement), 40 bytes. Luminosity in lux (0.01 resolution),
    sequence 0..16777214."""
    t, h, p = _env(temperature, humidity, pressure)
    pms = [_code(v, 10, 0, 0, 65534, 0xFFFF, "pm") for v in (pm1_0, pm2_5, pm4_0, pm10_0)]
    c = _code(co2, 1, 0, 0, 65534, 0xFFFF, "co2")
    voc = _nine_bit(voc_index, 1, 0, "voc_index")
    nox = _nine_bit(nox_index, 1, 0, "nox_index")
    s_inst = _nine_bit(sound_instant_dba, 5, 18, "sound_instant_dba")
    s_avg = _nine_bit(sound_average_dba, 5, 18, "sound_average_dba")
    s_peak = _nine_bit(sound_peak_spl_db, 5, 18, "sound_peak_spl_db")
    lux = _code(luminosity, 100, 0, 0, 0xFFFFFE, 0xFFFFFF, "luminosity")
    seq = _code(sequence, 1, 0, 0, 0xFFFFFE, 0xFFFFFF, "sequence")
    bits = ((flags & 0x07) | (s_inst & 1) << _SOUND_INSTANT_LSB | (s_avg & 1) << _SOUND_AVERAGE_LSB
            | (s_peak & 1) << _SOUND_PEAK_LSB | (voc & 1) << _VOC_LSB | (nox & 1) << _NOX_LSB)
    return _E1.pack(0xE1, t, h, p, *pms, c, voc >> 1, nox >> 1, lux >> 16, lux & 0xFFFF, s_inst >> 1, s_avg >> 1,
                    s_peak >> 1, seq >> 16, seq & 0xFFFF, bits, _RESERVED5, _mac(mac, 6))
