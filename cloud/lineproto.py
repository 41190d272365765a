"""InfluxDB line protocol encoder: fast, and every name/value escaped so that a line always parses.

Escaping (checked against the real influxd 1.6.7 in tests/cloud/test_lineproto_influx.py):
- measurement: `,` and space get a backslash;
- tag keys, tag values and field keys: `,`, `=` and space get a backslash;
- string field values: `"` and `\\` get a backslash, inside double quotes;
- a newline or carriage return cannot be carried by 1.x line protocol outside a string field (the server
  splits lines first), so it becomes the two characters `\\n` / `\\r`, as Telegraf does. InfluxDB stores
  them as typed, so a gateway id "a<LF>b" reads back as `a\\nb`;
- InfluxDB 1.x does not unescape `\\\\`, and rejects a name ending in a backslash: trailing backslashes
  are dropped (Telegraf does the same), and a backslash right before an escaped character is sent as
  `\\\\`, so that the line still parses (the stored value then holds two backslashes there: the one
  lossy corner, never hit by real ids).
- a tag whose value is empty after that is left out (InfluxDB refuses empty tag values).

Tags are written sorted by key (what InfluxDB prefers); field order is kept. Floats use `repr()`, the
shortest text that reads back as the same double; ints get the `i` suffix; bools are `true`/`false`.
Timestamps are ns.
The encoded series key (measurement + tags) is cached, since a few thousand tags send all the points.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from cloud.model import FieldValue, Point

_MAX_CACHE = 100_000

_NAME_SPECIAL = re.compile(r"[\\,= \n\r]")
_MEAS_SPECIAL = re.compile(r"[\\, \n\r]")
_BACKSLASH_BEFORE_ESCAPED = re.compile(r"\\(?=[,= ])")


def _escape(text: str, special: str) -> str:
    text = text.replace("\n", "\\n").replace("\r", "\\r").rstrip("\\")
    if "\\" in text:
        text = _BACKSLASH_BEFORE_ESCAPED.sub(r"\\\\", text)
    for ch in special:
        text = text.replace(ch, "\\" + ch)
    return text


def escape_measurement(name: str) -> str:
    return _escape(name, ", ") if _MEAS_SPECIAL.search(name) else name


def escape_key(text: str) -> str:
    """Escape a tag key, tag value or field key."""
    return _escape(text, ",= ") if _NAME_SPECIAL.search(text) else text


def escape_string_field(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class EncodeError(ValueError):
    """A point that cannot be written at all (no fields, or a non-finite float)."""


class Encoder:
    """Line protocol encoder with a series-key cache; `encode()` below uses one module-wide instance."""

    def __init__(self) -> None:
        self._series: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}
        self._field_keys: dict[str, str] = {}

    def series_key(self, measurement: str, tags: dict[str, str]) -> str:
        key = (measurement, tuple(tags.items()))
        cached = self._series.get(key)
        if cached is not None:
            return cached
        parts = [escape_measurement(measurement)]
        for k in sorted(tags):
            v = escape_key(tags[k])
            if v:
                parts.append(f"{escape_key(k)}={v}")
        text = ",".join(parts)
        if len(self._series) >= _MAX_CACHE:
            self._series.clear()
        self._series[key] = text
        return text

    def field_text(self, name: str, value: FieldValue) -> str:
        key = self._field_keys.get(name)
        if key is None:
            key = escape_key(name)
            if len(self._field_keys) < _MAX_CACHE:
                self._field_keys[name] = key
        t = type(value)
        if t is float:
            text = repr(value)
            if text in ("nan", "inf", "-inf"):
                raise EncodeError(f"field {name!r} is {text}")
            return f"{key}={text}"
        if t is int:
            return f"{key}={value}i"
        if t is bool:
            return f"{key}={'true' if value else 'false'}"
        if t is str:
            return f"{key}={escape_string_field(value)}"  # type: ignore[arg-type]
        # Subclasses (numpy scalars, IntEnum, ...) come last, to keep the common path quick.
        if isinstance(value, bool):
            return f"{key}={'true' if value else 'false'}"
        if isinstance(value, int):
            return f"{key}={int(value)}i"
        if isinstance(value, float):
            return self.field_text(name, float(value))
        raise EncodeError(f"field {name!r} has unsupported type {t.__name__}")

    def line(self, p: Point) -> str:
        if not p.fields:
            raise EncodeError("point has no fields")
        keys = self._field_keys
        parts = []
        # Common cases inline (this loop is the hot path); anything unusual goes to field_text().
        for k, v in p.fields.items():
            t = type(v)
            ek = keys.get(k)
            if ek is None or t is str:
                parts.append(self.field_text(k, v))
            elif t is int:
                parts.append(f"{ek}={v}i")
            elif t is float and v - v == 0.0:  # type: ignore[operator]  # False for nan and inf
                parts.append(f"{ek}={v!r}")
            else:
                parts.append(self.field_text(k, v))
        return f"{self.series_key(p.measurement, p.tags)} {','.join(parts)} {p.time_ns}"

    def encode(self, points: Sequence[Point]) -> bytes:
        """All points as newline-terminated lines; EncodeError on the first point that can't be encoded."""
        if not points:
            return b""
        return ("\n".join([self.line(p) for p in points]) + "\n").encode()


_default = Encoder()


def encode(points: Sequence[Point]) -> bytes:
    return _default.encode(points)


def encode_line(point: Point) -> str:
    return _default.line(point)
