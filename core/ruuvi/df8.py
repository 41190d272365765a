"""Data format 8 (encrypted environmental), 24 bytes: recognised, not decrypted.

Spec: https://docs.ruuvi.com/communication/bluetooth-advertisements/data-format-8-encrypted-environmental

Bytes 1-16 are AES-128-ECB ciphertext and byte 17 a CRC8 of the cleartext; both need the tag's key, which
a gateway does not have, so only the clear MAC (bytes 18-23) is returned, plus ``encrypted: true`` so the
raw payload can be decrypted later by whoever holds the key.
"""

from __future__ import annotations

from typing import Any

from core.ruuvi._fields import mac6
from core.ruuvi.errors import check_length

LENGTH = 24


def decode(payload: bytes) -> dict[str, Any]:
    check_length(payload, "8", LENGTH)
    return {"data_format": 8, "mac": mac6(payload[18:24]), "encrypted": True}
