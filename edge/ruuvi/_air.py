"""Field codings shared by the Ruuvi Air formats (6 and E1)."""

from __future__ import annotations

# Flags byte (DF6 byte 16, E1 byte 28). Bits 1-5 are "reserved" in docs.ruuvi.com; Ruuvi Air firmware,
# ruuvi.endpoints.c and Ruuvi Gateway use them as below.
CALIBRATION = 0x01
BUTTON = 0x02
RTC_ON_BOOT = 0x04
SOUND_INSTANT_LSB = 3
SOUND_AVERAGE_LSB = 4
SOUND_PEAK_LSB = 5
VOC_LSB = 6
NOX_LSB = 7


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
