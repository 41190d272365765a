"""Pure decoders for RuuviTag / Ruuvi Air BLE advertisements (no I/O).

``decode(payload)`` takes the manufacturer data after company id 0x0499 (bleak's
``advertisement_data.manufacturer_data[0x0499]``), starting with the data format byte, and returns the
fields of docs/wire-format.md ("Decoded fields"), in canonical key order, with None for "not available".
Any problem with the bytes raises ``DecodeError`` (a ``ValueError``) and nothing else.

Specs: https://docs.ruuvi.com/communication/bluetooth-advertisements
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from core.ruuvi import df3, df5, df6, df8, dfc5, dfe1
from core.ruuvi.derived import derived
from core.ruuvi.errors import DecodeError
from core.ruuvi.hexinput import payload_from_hex

__all__ = ["DECODERS", "DecodeError", "decode", "derived", "payload_from_hex"]

DECODERS: dict[int, Callable[[bytes], dict[str, Any]]] = {
    0x03: df3.decode,
    0x05: df5.decode,
    0xC5: dfc5.decode,
    0x06: df6.decode,
    0xE1: dfe1.decode,
    0x08: df8.decode,
}


def decode(payload: bytes) -> dict[str, Any]:
    """Decode one Ruuvi manufacturer-data payload (format byte first) into its fields."""
    if not payload:
        msg = "empty payload"
        raise DecodeError(msg)
    decoder = DECODERS.get(payload[0])
    if decoder is None:
        msg = f"unknown data format 0x{payload[0]:02x}"
        raise DecodeError(msg)
    return decoder(payload)
