"""The gateway's side of the wire format (docs/wire-format.md): the canonical batch payload. The rules and the
messages both sides share (ids, topics, status, confirmation) are in core/wire.py.

Two encoders build the same bytes: `encode_batch` from `Reading`s (decoded fields as a dict), and
`encode_stored_batch` from the store's `StoredReading`s, which splices the stored `fields_json` verbatim. The second
one is the uplink's hot path, so it never parses or re-encodes the fields of a reading.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

import orjson

from core.wire import MAX_BATCH_BYTES, WIRE_VERSION, WireError, check_gateway_id
from edge.model import Reading

_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
# MACs already checked; a gateway hears a bounded set of tags, the bound only guards against a flood of garbage.
_KNOWN_MACS: set[str] = set()
_KNOWN_MACS_MAX = 100_000


class StoredLike(Protocol):
    """What the fast path reads from a stored reading (edge.store.StoredReading has these attributes)."""

    @property
    def mac(self) -> str: ...
    @property
    def time_ns(self) -> int: ...
    @property
    def clock_synced(self) -> bool: ...
    @property
    def rssi(self) -> int | None: ...
    @property
    def data_format(self) -> int: ...
    @property
    def raw(self) -> bytes: ...
    @property
    def fields_json(self) -> str: ...


def _check_mac(mac: str) -> None:
    # The MAC is spliced between quotes without escaping, so it must be exactly the documented form.
    if mac in _KNOWN_MACS:
        return
    if not _MAC.fullmatch(mac):
        msg = f"reading mac {mac!r}: expected 6 lower-case hex bytes separated by ':'"
        raise WireError(msg)
    if len(_KNOWN_MACS) >= _KNOWN_MACS_MAX:
        _KNOWN_MACS.clear()
    _KNOWN_MACS.add(mac)


def _reading_json(
    mac: str, time_ns: int, clock_synced: bool, rssi: int | None, data_format: int, raw_hex: str, fields_json: str
) -> str:
    _check_mac(mac)
    synced = "true" if clock_synced else "false"
    rssi_s = "null" if rssi is None else int(rssi)
    return (
        f'{{"mac":"{mac}","time_ns":{int(time_ns)},"clock_synced":{synced},"rssi":{rssi_s},'
        f'"data_format":{int(data_format)},"raw":"{raw_hex}","fields":{fields_json}}}'
    )


def _header(gateway_id: str, seq: int) -> str:
    if seq < 0:
        msg = f"batch seq must be >= 0, got {seq}"
        raise WireError(msg)
    return f'{{"v":{WIRE_VERSION},"gateway":"{check_gateway_id(gateway_id)}","seq":{int(seq)},"readings":['


def fields_json(fields: dict[str, object]) -> str:
    """The canonical compact JSON of decoded fields, as the store keeps it (key order as given)."""
    return orjson.dumps(fields).decode()


def encode_batch(gateway_id: str, seq: int, readings: Sequence[Reading]) -> bytes:
    """The canonical bytes of one batch. No size cap here: the uplink splits by size with `encode_stored_batch`."""
    if not readings:
        msg = "a batch holds at least one reading"
        raise WireError(msg)
    parts = [
        _reading_json(r.mac, r.time_ns, r.clock_synced, r.rssi, r.data_format, r.raw.hex(), fields_json(r.fields))
        for r in readings
    ]
    return (_header(gateway_id, seq) + ",".join(parts) + "]}").encode()


def encode_stored_batch(
    gateway_id: str, seq: int, rows: Sequence[StoredLike], max_bytes: int = MAX_BATCH_BYTES
) -> tuple[bytes, int]:
    """Encode as many of `rows` (in order) as fit in `max_bytes`; returns the payload and how many rows it holds.

    The first row always goes in, even alone over the cap, so that one odd reading cannot block the queue forever
    (it cannot happen with real Ruuvi payloads, which encode to well under 1 KiB).
    """
    if not rows:
        msg = "a batch holds at least one reading"
        raise WireError(msg)
    head = _header(gateway_id, seq)
    size = len(head) + 2  # + "]}"
    parts: list[str] = []
    for r in rows:
        part = _reading_json(r.mac, r.time_ns, r.clock_synced, r.rssi, r.data_format, r.raw.hex(), r.fields_json)
        n = (len(part) if part.isascii() else len(part.encode())) + (1 if parts else 0)  # + the comma
        if parts and size + n > max_bytes:
            break
        parts.append(part)
        size += n
    return (head + ",".join(parts) + "]}").encode(), len(parts)
