"""The one exception the Ruuvi decoders raise."""

from __future__ import annotations


class DecodeError(ValueError):
    """The bytes (or hex text) are not a Ruuvi payload this package can decode.

    The message says what is wrong, e.g. ``data format 5 needs 24 bytes, got 23``.
    """


def check_length(payload: bytes, data_format: str, needed: int) -> None:
    # Exact lengths only: bleak hands over exactly the AD structure's bytes, and a longer
    # payload is a different (future) layout rather than something to truncate silently.
    if len(payload) != needed:
        msg = f"data format {data_format} needs {needed} bytes, got {len(payload)}"
        raise DecodeError(msg)
