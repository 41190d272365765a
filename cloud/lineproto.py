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

Speed: every point written goes through `Encoder.line()`, so for each set of field keys it sees (a handful: one
per Ruuvi data format) it compiles a small function that formats all fields in one f-string, after checking that
every value still has the type it was compiled for and that the floats are finite; anything else takes the general
per-field loop, which gives the same bytes. CPU per DF5 point (bench/bench_parse.py, 3 runs, same machine and
load): 2.82-2.87 µs with the loop alone, 2.42-2.43 µs with the compiled format; DF5/E1/DF6 mix 4.5 -> 3.4 µs.
The float texts are remembered (_FLOAT_TEXTS): on Ruuvi Gateway traffic the line takes 29,200 instructions per
point with them against 34,200 without once they are known, and 35,900 while all are new (bench/bench_accept.py
--instructions, callgrind, 10,000 messages of random values: 8,000 temperatures, 24,000 humidities, 3,000
pressures). A first try with CPU time, on a short run where most values were new, had found it slower.
With speedups/ installed (optional C code), `line()` of a point of floats, ints and bools is written in C, with the
same bytes: 9,700 instead of 26,300 instructions per Ruuvi point (docs/cloud-ingest.md, "Speed-ups").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from cloud.model import FieldValue, Point

_CLine = Callable[[str, dict[str, FieldValue], int, dict[str, str], dict[float, str], int], str | None]
_c_line: _CLine | None
try:  # the C line (module doc); without it the Python below gives the same bytes
    from edge_gw_speedups import line as _c_line
except ImportError:
    _c_line = None

_MAX_CACHE = 100_000
_MAX_FORMATS = 1000  # compiled field formats; the keys of flat sensor JSON are free-form
_MAX_FORMAT_FIELDS = 100

# (series key, fields, time_ns) -> the line, or None when a value is not of the compiled type or not finite.
_FieldsFormat = Callable[[str, dict[str, FieldValue], int], str | None]

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


def compile_fields_format(keys: tuple[str, ...], types: tuple[type, ...]) -> _FieldsFormat | None:
    """A function formatting fields with exactly these keys, in this order, whose values have these types (float,
    int or bool; None for any other type). The generated source holds only generated names: the escaped keys are
    passed in as closure variables, never pasted into the code."""
    if not keys or len(keys) > _MAX_FORMAT_FIELDS or any(t not in (float, int, bool) for t in types):
        return None
    names = [f"v{i}" for i in range(len(keys))]
    checks = " and ".join(f"type({n}) is {t.__name__}" for n, t in zip(names, types, strict=True))
    floats = [n for n, t in zip(names, types, strict=True) if t is float]
    texts = {float: "{k%d}{FLOAT(v%d) or float_text(v%d)}", int: "{k%d}{v%d}i", bool: "{k%d}{BOOL[v%d]}"}
    body = ",".join(texts[t] % ((i, i, i) if t is float else (i, i)) for i, t in enumerate(types))
    src = [
        f"def make({', '.join(f'k{i}' for i in range(len(keys)))}, BOOL, FLOAT, float_text):",
        "    def fields_format(series, fields, t):",
        f"        {', '.join(names)}, = fields.values()",
        f"        if not ({checks}):",
        "            return None",
    ]
    if floats:
        src += [
            f"        s = {' + '.join(floats)}",
            "        if s - s != 0.0:  # nan or inf somewhere (or an overflowing sum: the general loop decides)",
            "            return None",
        ]
    src += [f"        return f'{{series}} {body} {{t}}'", "    return fields_format"]
    namespace: dict[str, Callable[..., _FieldsFormat]] = {}
    exec("\n".join(src), {}, namespace)  # the source holds generated names only (see above)
    return namespace["make"](*(escape_key(k) + "=" for k in keys), ("false", "true"), _FLOAT_TEXTS.get, float_text)


# repr() of the floats written lately. repr() takes about 2,400 instructions per float, a hit here about 600
# (callgrind), and tags repeat their values: a temperature moves in 0.005 °C steps, a pressure in 1 Pa steps, so
# a few tens of thousands of values cover a fleet's day. Bounded: cleared when full (about 6 MB then).
_FLOAT_TEXTS: dict[float, str] = {}
_MAX_FLOAT_TEXTS = 65_536


def float_text(value: float) -> str:
    """repr(value), remembered in _FLOAT_TEXTS (not for zeros: 0.0 and -0.0 are one key there but two texts)."""
    text = repr(value)
    if value:
        if len(_FLOAT_TEXTS) >= _MAX_FLOAT_TEXTS:
            _FLOAT_TEXTS.clear()
        _FLOAT_TEXTS[value] = text
    return text


class Encoder:
    """Line protocol encoder with a series-key cache; `encode()` below uses one module-wide instance."""

    def __init__(self, *, speedups: bool = True) -> None:
        """`speedups=False`: the pure-Python path even when edge_gw_speedups is installed (tests, benches)."""
        self._c_line = _c_line if speedups else None
        self._series: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}
        self._field_keys: dict[str, str] = {}
        self._formats: dict[tuple[str, ...], _FieldsFormat | None] = {}

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
        fields = p.fields
        series = self._series.get((p.measurement, tuple(p.tags.items())))
        if series is None:
            series = self.series_key(p.measurement, p.tags)
        if self._c_line is not None:
            text = self._c_line(series, fields, p.time_ns, self._field_keys, _FLOAT_TEXTS, _MAX_FLOAT_TEXTS)
            if text is not None:
                return text
        keys = tuple(fields)
        try:
            fmt = self._formats[keys]
        except KeyError:
            fmt = None
            if len(self._formats) < _MAX_FORMATS:
                fmt = self._formats[keys] = compile_fields_format(keys, tuple(map(type, fields.values())))
                for k in keys:  # for the C line, which takes only keys escaped here
                    if k not in self._field_keys and len(self._field_keys) < _MAX_CACHE:
                        self._field_keys[k] = escape_key(k)
        if fmt is not None:
            text = fmt(series, fields, p.time_ns)
            if text is not None:
                return text
        return self._line(series, p)

    def _line(self, series: str, p: Point) -> str:
        """The general case, field by field."""
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
        return f"{series} {','.join(parts)} {p.time_ns}"

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
