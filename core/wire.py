"""The edge-gw wire format, version 1.1 (docs/wire-format.md): what every gateway and the receiver share. The
version, the id and prefix rules, the topics, the status payload and the cloud's confirmation. The batch encoders
live with the gateway (edge/wire.py), the batch parser with the receiver (cloud/formats/edge.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import orjson

WIRE_VERSION = 1
MAX_BATCH_BYTES = 256 * 1024
DEFAULT_PREFIX = "edge-gw"
STATES = ("online", "offline")

_GATEWAY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_PREFIX = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")


class WireError(ValueError):
    """A value that cannot go on the wire (bad gateway id, topic prefix, MAC, sequence number or confirmation)."""


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
    if state not in STATES:
        msg = f"status state {state!r}: expected 'online' or 'offline'"
        raise WireError(msg)
    return f'{{"v":{WIRE_VERSION},"gateway":"{check_gateway_id(gateway_id)}","state":"{state}"}}'.encode()


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
