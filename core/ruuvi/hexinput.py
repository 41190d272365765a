"""Turn hex text (a payload, or a whole advertisement) into the payload bytes that ``decode()`` takes.

Which reading of the text applies is decided by this fixed rule, in this order:

1. Strip surrounding whitespace and an optional ``0x``; the rest must be an even number of hex digits.
2. Text starting with ``9904`` (company id 0x0499, little-endian) is the manufacturer data with its
   company id: the id is dropped.
3. If the first byte is a known data format and the length is exactly that format's payload length
   (e.g. 0x05 and 24 bytes), it is a plain payload.
4. Otherwise, if the bytes are a complete sequence of AD structures (``len type data...``; each length
   byte counts type + data; a 0 length byte may only start all-zero padding), the manufacturer-specific
   structure (type 0xFF) with company id 0x0499 is the source, and its data after the id is the payload.
   A well-formed advertisement without such a structure raises DecodeError.
5. Anything else is returned as is, so that ``decode()`` reports what is wrong with it (length, format).

Rule 3 comes before rule 4 because a plain payload can happen to parse as AD structures, while a real
advertisement always starts with a length byte and the Ruuvi AD structure adds at least 4 bytes, so it
cannot have both a format byte first and that format's exact length unless it carries some other vendor's
structure first, which a Ruuvi tag never sends.
"""

from __future__ import annotations

from core.ruuvi.errors import DecodeError

# Payload lengths by data format byte; must match the decoders.
PAYLOAD_LENGTHS = {0x03: 14, 0x05: 24, 0xC5: 18, 0x06: 20, 0xE1: 40, 0x08: 24}
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_MANUFACTURER_SPECIFIC = 0xFF
_RUUVI_ID_LE = b"\x99\x04"


def payload_from_hex(text: str) -> bytes:
    """Payload bytes (starting with the format byte) from payload hex or advertisement hex."""
    raw = _parse_hex(text)
    if raw[:2] == _RUUVI_ID_LE:
        return raw[2:]
    if raw and PAYLOAD_LENGTHS.get(raw[0]) == len(raw):
        return raw
    # The usual advertisement, flags then Ruuvi's manufacturer data to the end: what rule 4 finds, found directly.
    if len(raw) > 7 and raw[0] == 2 and raw[3] + 4 == len(raw) and raw[4] == _MANUFACTURER_SPECIFIC \
            and raw[5:7] == _RUUVI_ID_LE:
        return raw[7:]
    structures = ad_structures(raw)
    if structures is None:
        return raw
    for ad_type, data in structures:
        if ad_type == _MANUFACTURER_SPECIFIC and data[:2] == _RUUVI_ID_LE:
            return data[2:]
    msg = "advertisement has no manufacturer data with company id 0x0499 (Ruuvi)"
    raise DecodeError(msg)


def ad_structures(raw: bytes) -> list[tuple[int, bytes]] | None:
    """Split advertisement data into (AD type, data) pairs; None if the bytes are not exactly that."""
    out: list[tuple[int, bytes]] = []
    i = 0
    while i < len(raw):
        length = raw[i]
        if length == 0:
            # Zero length ends the significant part; what follows must be zero padding.
            return out if out and not any(raw[i:]) else None
        end = i + 1 + length
        if end > len(raw):
            return None
        out.append((raw[i + 1], raw[i + 2 : end]))
        i = end
    return out or None


def _parse_hex(text: str) -> bytes:
    s = text.strip()
    if s[:2] in ("0x", "0X"):
        s = s[2:]
    try:
        raw = bytes.fromhex(s)
    except ValueError:
        raw = b""
    if raw and 2 * len(raw) == len(s):
        return raw  # only hex digits: fromhex also skips whitespace between bytes, which this rule refuses
    # The checks below only word the error.
    if not s:
        msg = "empty hex string"
        raise DecodeError(msg)
    if not _HEX_DIGITS.issuperset(s):
        msg = f"not a hex string: {text.strip()[:80]!r}"
        raise DecodeError(msg)
    if len(s) % 2:
        msg = f"odd number of hex digits ({len(s)})"
        raise DecodeError(msg)
    return bytes.fromhex(s)
