"""InfluxDB's durations (retention policies, continuous queries) in nanoseconds: pure, used by the config checks
and by `cloud-ingest setup` (cloud/schema.py)."""

from __future__ import annotations

import re

from cloud.sinks.base import SinkConfigError

_NS = 1_000_000_000
_UNITS_NS = {"ns": 1, "u": 1000, "µ": 1000, "ms": 10**6, "s": _NS, "m": 60 * _NS, "h": 3600 * _NS}
_UNITS_NS |= {"d": 86400 * _NS, "w": 7 * 86400 * _NS}
_DURATION_PART = re.compile(r"(\d+)(ns|u|µ|ms|s|m|h|d|w)")


def duration_ns(text: str) -> int:
    """InfluxQL duration (`90d`, `104w`, `INF`) or InfluxDB's own rendering (`2160h0m0s`, `0s`) in ns; INF is 0."""
    t = text.strip()
    if t.upper() == "INF":
        return 0
    pos, total = 0, 0
    for m in _DURATION_PART.finditer(t):
        if m.start() != pos:
            break
        total += int(m.group(1)) * _UNITS_NS[m.group(2)]
        pos = m.end()
    if pos != len(t) or not t:
        raise SinkConfigError(f"{text!r} is not a duration like 90d, 104w or INF")
    return total
