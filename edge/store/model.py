"""Value types of the store: its limits, the rows it hands to the uplink, its buffer statistics, its error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Policy = Literal["drop-oldest", "drop-newest"]
POLICIES: tuple[Policy, ...] = ("drop-oldest", "drop-newest")


class StoreError(Exception):
    """The buffer file cannot be opened, read or written (the sqlite3 error is chained)."""


@dataclass(frozen=True, slots=True)
class StoreLimits:
    """Bounds of the buffer.

    `max_bytes` bounds the database pages in use (the -wal file adds at most 8 MiB on top). `max_age_s` bounds the
    age of unsent readings. At the byte cap, `drop-oldest` deletes the oldest readings to make room and
    `drop-newest` refuses new readings until the uplink frees space. Every drop is counted.
    """

    max_bytes: int = 512 << 20
    max_age_s: float = 30 * 86400.0
    policy: str = "drop-oldest"  # one of POLICIES; a plain str so config values pass straight in, checked below

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            msg = f"store policy: expected drop-oldest or drop-newest, got {self.policy!r}"
            raise ValueError(msg)
        if self.max_bytes <= 0 or self.max_age_s <= 0:
            msg = f"store limits must be positive, got max_bytes={self.max_bytes} max_age_s={self.max_age_s}"
            raise ValueError(msg)


@dataclass(slots=True)
class StoredReading:
    """A reading as the uplink fetches it. `fields_json` is the canonical compact JSON of the decoded fields
    (orjson, key order kept), so the wire encoder can splice it in verbatim."""

    id: int
    mac: str
    time_ns: int
    clock_synced: bool
    rssi: int | None
    data_format: int
    raw: bytes
    fields_json: str


@dataclass(frozen=True, slots=True)
class BufferStats:
    rows: int  # readings ready to send
    held_rows: int  # readings waiting for the clock to synchronise
    bytes: int  # size of the database file plus its -wal
    used_bytes: int  # database pages in use (what max_bytes bounds)
    oldest_time_ns: int | None  # receive time of the oldest reading ready to send
