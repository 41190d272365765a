"""Plain value types shared by the sources, the pipeline, the store and the uplink."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

RUUVI_COMPANY_ID = 0x0499
# The data_format of a reading read from a tag's log over GATT (edge/history.py), not heard in an advert: 0x3A is
# the log protocol's "all environmental values" endpoint. Its time_ns is the tag's own timestamp.
HISTORY_FORMAT = 0x3A


@dataclass(slots=True, frozen=True)
class Advert:
    """One BLE advertisement as a source hands it over.

    `payload` is the manufacturer data after the company id 0x0499 (bleak's `manufacturer_data[0x0499]`), starting with
    the Ruuvi data format byte. `mac` is the sender's address, lower case and colon-separated.
    """

    mac: str
    payload: bytes
    rssi: int | None


@dataclass(slots=True)
class Reading:
    """A decoded, deduplicated advert as the store keeps it and the uplink sends it (see docs/wire-format.md)."""

    mac: str
    time_ns: int  # Unix ns at receive time; corrected later if the clock was not synchronised yet
    mono_ns: int  # CLOCK_MONOTONIC (or BOOTTIME) ns at receive time, for that correction
    clock_synced: bool
    rssi: int | None
    data_format: int
    raw: bytes
    fields: dict[str, Any]
