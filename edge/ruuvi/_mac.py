"""MAC address formatting shared by the decoders."""

from __future__ import annotations

_ALL_FF_6 = b"\xff" * 6
_ALL_FF_3 = b"\xff" * 3


def mac6(raw: bytes) -> str | None:
    """Six bytes -> ``aa:bb:cc:dd:ee:ff``; all FF means "not available"."""
    if raw == _ALL_FF_6:
        return None
    return raw.hex(":")


def mac3(raw: bytes) -> str | None:
    """The three low bytes that data format 6 carries -> ``dd:ee:ff``; FFFFFF means "not available"."""
    if raw == _ALL_FF_3:
        return None
    return raw.hex(":")
