"""Field codings shared by several data formats (RAWv2 family and Ruuvi Air).

df5.py spells the same expressions out inline, for speed (see its docstring).
"""

from __future__ import annotations

_NO_MAC_6 = b"\xff" * 6
_NO_MAC_3 = b"\xff" * 3

# Flags byte of the Ruuvi Air formats (DF6 byte 16, E1 byte 28). Bits 1-5 are "reserved" in
# docs.ruuvi.com; Ruuvi Air firmware, ruuvi.endpoints.c and Ruuvi Gateway use them as below.
CALIBRATION = 0x01
BUTTON = 0x02
RTC_ON_BOOT = 0x04
SOUND_INSTANT_LSB = 3
SOUND_AVERAGE_LSB = 4
SOUND_PEAK_LSB = 5
VOC_LSB = 6
NOX_LSB = 7


def temperature(raw: int) -> float | None:
    """i16 in 0.005 °C; ``raw / 200`` is already the double nearest to the 3-decimal value."""
    return None if raw == -32768 else raw / 200


def humidity(raw: int) -> float | None:
    """u16 in 0.0025 %RH."""
    return None if raw == 0xFFFF else raw / 400


def pressure(raw: int) -> int | None:
    """u16 in Pa, offset 50000 Pa."""
    return None if raw == 0xFFFF else raw + 50000


def battery(power: int) -> int | None:
    """High 11 bits of the power word: mV above 1600; 2047 is "not available"."""
    volts = power >> 5
    return None if volts == 2047 else volts + 1600


def tx_power(power: int) -> int | None:
    """Low 5 bits of the power word: 2 dBm steps above -40 dBm; 31 is "not available"."""
    code = power & 0x1F
    return None if code == 31 else code * 2 - 40


def mac6(raw: bytes) -> str | None:
    """Six bytes -> ``aa:bb:cc:dd:ee:ff``; all FF means "not available"."""
    return None if raw == _NO_MAC_6 else raw.hex(":")


def mac3(raw: bytes) -> str | None:
    """The three low bytes that data format 6 carries -> ``dd:ee:ff``; FFFFFF means "not available"."""
    return None if raw == _NO_MAC_3 else raw.hex(":")


def u9(high8: int, flags: int, lsb_bit: int) -> int | None:
    """A 9-bit value: the byte holds bits 8..1, one flags bit holds bit 0; 0x1FF is "not available"."""
    code = (high8 << 1) | ((flags >> lsb_bit) & 1)
    return None if code == 0x1FF else code


def sound(high8: int, flags: int, lsb_bit: int) -> float | None:
    """Sound level: 9-bit code, dB = 18 + code / 5 (18.0 .. 120.0 in 0.2 steps)."""
    code = u9(high8, flags, lsb_bit)
    # (90 + code) / 5 is the double nearest to the 1-decimal value; 18 + code / 5 can be one ulp off.
    return None if code is None else (90 + code) / 5


def pm(raw: int) -> float | None:
    """Particulate matter: u16 in 0.1 µg/m³, 0xFFFF is "not available"."""
    return None if raw == 0xFFFF else raw / 10
