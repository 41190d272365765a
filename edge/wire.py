"""The edge-gw wire format, version 1.1 (docs/wire-format.md): canonical batch, status and confirmation payloads,
and the topics.

Two encoders build the same bytes: `encode_batch` from `Reading`s (decoded fields as a dict), and
`encode_stored_batch` from the store's `StoredReading`s, which splices the stored `fields_json` verbatim. The second
one is the uplink's hot path, so it never parses or re-encodes the fields of a reading.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Protocol

import orjson

from edge.model import Reading

WIRE_VERSION = 1
MAX_BATCH_BYTES = 256 * 1024
DEFAULT_PREFIX = "edge-gw"

_GATEWAY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_PREFIX = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
# MACs already checked; a gateway hears a bounded set of tags, the bound only guards against a flood of garbage.
_KNOWN_MACS: set[str] = set()
_KNOWN_MACS_MAX = 100_000


class WireError(ValueError):
    """A value that cannot go on the wire (bad gateway id, topic prefix, MAC or sequence number)."""


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


def check_gateway_id(gateway_id: str) -> str:
    if not _GATEWAY_ID.fullmatch(gateway_id) or gateway_id == "dlq":
        msg = f"gateway id {gateway_id!r}: expected 1-64 characters from [A-Za-z0-9._-], and not 'dlq'"
        raise WireError(msg)
    return gateway_id


def check_prefix(prefix: str) -> str:
    if not _PREFIX.fullmatch(prefix) or prefix == "ruuvi" or prefix.startswith("ruuvi/"):
        msg = f"topic prefix {prefix!r}: expected a plain topic path (no wildcards) that is not under 'ruuvi/'"
        raise WireError(msg)
    return prefix


def batch_topic(prefix: str, gateway_id: str) -> str:
    return f"{check_prefix(prefix)}/{check_gateway_id(gateway_id)}/batch"


def status_topic(prefix: str, gateway_id: str) -> str:
    return f"{check_prefix(prefix)}/{check_gateway_id(gateway_id)}/status"


def status_payload(gateway_id: str, state: str) -> bytes:
    """The retained status message: `online`, or `offline` (the last will and the clean-stop message)."""
    if state not in ("online", "offline"):
        msg = f"status state {state!r}: expected 'online' or 'offline'"
        raise WireError(msg)
    return f'{{"v":{WIRE_VERSION},"gateway":"{check_gateway_id(gateway_id)}","state":"{state}"}}'.encode()


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


# ---- the cloud's confirmation (wire format 1.1) ---------------------------------------------------------------------

CONFIRM_MAX_RANGES = 64
MAX_SEQ = (1 << 53) - 1


def confirm_topic(prefix: str, gateway_id: str) -> str:
    return f"{check_prefix(prefix)}/{check_gateway_id(gateway_id)}/confirm"


def seq_ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Batch seqs as ascending inclusive ranges, adjacent and repeated seqs merged."""
    ranges: list[tuple[int, int]] = []
    for s in sorted(set(seqs)):
        if ranges and s == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], s)
        else:
            ranges.append((s, s))
    return ranges


def encode_confirms(gateway_id: str, seqs: Iterable[int]) -> list[bytes]:
    """The canonical confirmation messages for `seqs`: one per CONFIRM_MAX_RANGES ranges (none for no seqs)."""
    header = f'{{"v":{WIRE_VERSION},"gateway":"{check_gateway_id(gateway_id)}","seqs":['
    ranges = seq_ranges(seqs)
    for first, last in ranges:
        if not 0 <= first <= last <= MAX_SEQ:
            msg = f"confirm seq {first}..{last}: expected 0 <= seq < 2**53"
            raise WireError(msg)
    return [
        (header + ",".join(f"[{a},{b}]" for a, b in ranges[i:i + CONFIRM_MAX_RANGES]) + "]}").encode()
        for i in range(0, len(ranges), CONFIRM_MAX_RANGES)
    ]


def parse_confirm(payload: bytes, gateway_id: str) -> list[tuple[int, int]]:
    """The seq ranges of a confirmation addressed to `gateway_id`; WireError for anything else (it deletes nothing)."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        msg = f"confirmation is not JSON: {exc}"
        raise WireError(msg) from None
    if not isinstance(obj, dict) or type(obj.get("v")) is not int or obj["v"] != WIRE_VERSION:
        msg = "confirmation: expected an object with v = 1"
        raise WireError(msg)
    if obj.get("gateway") != gateway_id:
        msg = f"confirmation for gateway {obj.get('gateway')!r}, not {gateway_id!r}"
        raise WireError(msg)
    seqs = obj.get("seqs")
    if not isinstance(seqs, list) or not 1 <= len(seqs) <= CONFIRM_MAX_RANGES:
        msg = f"confirmation: seqs must be 1 to {CONFIRM_MAX_RANGES} ranges"
        raise WireError(msg)
    ranges: list[tuple[int, int]] = []
    for r in seqs:
        if (not isinstance(r, list) or len(r) != 2 or type(r[0]) is not int or type(r[1]) is not int
                or not 0 <= r[0] <= r[1] <= MAX_SEQ):
            msg = f"confirmation: bad range {r!r}: expected [first, last] with 0 <= first <= last < 2**53"
            raise WireError(msg)
        ranges.append((r[0], r[1]))
    return ranges
