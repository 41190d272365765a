"""Helpers the parsers share: JSON loading, the fixed InfluxDB field types, MAC and time checks."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import orjson

from cloud.model import FieldValue, InvalidMessage

# docs/wire-format.md, "InfluxDB types": one fixed type per field, whatever JSON number form arrived.
FLOAT_FIELDS = frozenset(
    {
        "temperature", "humidity", "pressure", "pm1_0", "pm2_5", "pm4_0", "pm10_0", "luminosity",
        "sound_instant_dba", "sound_average_dba", "sound_peak_spl_db",
        "dew_point", "absolute_humidity", "equilibrium_vapor_pressure", "air_density", "acceleration_total",
    }
)  # fmt: skip
INT_FIELDS = frozenset(
    {
        "acceleration_x", "acceleration_y", "acceleration_z", "battery_voltage", "tx_power", "movement_counter",
        "measurement_sequence_number", "co2", "voc_index", "nox_index", "rssi",
    }
)  # fmt: skip
BOOL_FIELDS = frozenset({"calibration_in_progress", "button_pressed", "rtc_running_on_boot", "encrypted"})

_MAC = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
_MAC_BARE = re.compile(r"^[0-9A-Fa-f]{12}$")
# Every reading carries a MAC, from a few thousand tags: each is checked once. Maps the text as received to the
# normalised MAC; the edge fast path reads it directly.
KNOWN_MACS: dict[str, str] = {}


def load_object(payload: bytes) -> dict[str, Any]:
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as e:
        raise InvalidMessage(f"malformed JSON: {e}") from None
    if not isinstance(obj, dict):
        raise InvalidMessage(f"JSON payload is a {type(obj).__name__}, not an object")
    return obj


def typed_field(name: str, value: Any) -> FieldValue | None:
    """The value with the field's fixed InfluxDB type; None for JSON null and for keys we don't know."""
    if value is None:
        return None
    if name in FLOAT_FIELDS:
        if type(value) not in (int, float):
            raise InvalidMessage(f"field {name!r} must be a number, got {type(value).__name__}")
        f = float(value)
        if not math.isfinite(f):
            raise InvalidMessage(f"field {name!r} is not finite")
        return f
    if name in INT_FIELDS:
        if type(value) is float and value.is_integer():
            return int(value)
        if type(value) is not int:
            raise InvalidMessage(f"field {name!r} must be an integer, got {value!r}"[:200])
        return value
    if name in BOOL_FIELDS:
        if type(value) is not bool:
            raise InvalidMessage(f"field {name!r} must be a boolean, got {type(value).__name__}")
        return value
    return None


# The same three sets as one table, for the per-reading loops.
KIND_FLOAT, KIND_INT, KIND_BOOL = 1, 2, 3
FIELD_KINDS = {
    **dict.fromkeys(FLOAT_FIELDS, KIND_FLOAT), **dict.fromkeys(INT_FIELDS, KIND_INT),
    **dict.fromkeys(BOOL_FIELDS, KIND_BOOL),
}  # fmt: skip


def typed_fields(raw: dict[str, Any]) -> dict[str, FieldValue]:
    """typed_field() over a decoded-fields object, with the common cases inline: this runs for every reading."""
    out: dict[str, FieldValue] = {}
    for k, v in raw.items():
        kind = FIELD_KINDS.get(k)
        if kind is None or v is None:
            continue
        t = type(v)
        if kind == KIND_FLOAT:
            if t is float and v - v == 0.0:  # False for nan and inf
                out[k] = v
                continue
            if t is int:
                out[k] = float(v)
                continue
        elif kind == KIND_INT:
            if t is int:
                out[k] = v
                continue
        elif t is bool:
            out[k] = v
            continue
        tv = typed_field(k, v)  # converts what it can (4.0 -> 4), raises for the rest
        if tv is not None:
            out[k] = tv
    return out


FieldsConverter = Callable[[dict[str, Any]], "dict[str, FieldValue] | None"]


def compile_fields_converter(keys: tuple[str, ...]) -> FieldsConverter:
    """typed_fields() for a decoded-fields object with exactly these keys in this order, as straight-line code:
    a value of the usual JSON type is taken (an int for a float field becomes a float), null is left out, and
    anything else (a float for an int field, a wrong type, nan or inf) returns None for the caller's exact path.
    The generated source holds only generated names; the keys are passed in as closure variables."""
    lines = [f"def make({', '.join(f'k{i}' for i in range(len(keys)))}):", "    def convert(raw):"]
    if keys:
        lines.append(f"        {', '.join(f'v{i}' for i in range(len(keys)))}, = raw.values()")
    lines.append("        out = {}")
    for i, key in enumerate(keys):
        v, k = f"v{i}", f"k{i}"
        kind = FIELD_KINDS.get(key)
        if kind == KIND_FLOAT:
            lines += [
                f"        if type({v}) is float and {v} - {v} == 0.0:",  # False for nan and inf
                f"            out[{k}] = {v}",
                f"        elif type({v}) is int:",
                f"            out[{k}] = float({v})",
            ]
        elif kind is not None:
            lines += [
                f"        if type({v}) is {'int' if kind == KIND_INT else 'bool'}:",
                f"            out[{k}] = {v}",
            ]
        else:
            continue
        lines += [f"        elif {v} is not None:", "            return None"]
    lines += ["        return out", "    return convert"]
    namespace: dict[str, Callable[..., FieldsConverter]] = {}
    exec("\n".join(lines), {}, namespace)  # the source holds generated names only (see above)
    return namespace["make"](*keys)


# One compiled converter per key set of decoded fields: a few per data format (keys a format lacks are left out, not
# null, in edge-gw batches; the decoders give each format's keys in one order).
_CONVERTERS: dict[tuple[str, ...], FieldsConverter] = {}
_MAX_CONVERTERS = 256
_MAX_CONVERTER_KEYS = 64  # real readings have up to ~30; odd objects take the exact path instead of compiling


def converter_for(keys: tuple[str, ...]) -> FieldsConverter | None:
    """The compiled converter of this key set (compiled on first use); None for odd key sets: use typed_fields()."""
    convert = _CONVERTERS.get(keys)
    if convert is None and len(_CONVERTERS) < _MAX_CONVERTERS and len(keys) <= _MAX_CONVERTER_KEYS:
        convert = _CONVERTERS[keys] = compile_fields_converter(keys)
    return convert


def normalize_mac(text: str, what: str) -> str:
    """`aa:bb:cc:dd:ee:ff` from any case, with or without colons; InvalidMessage otherwise."""
    known = KNOWN_MACS.get(text)
    if known is not None:
        return known
    if _MAC.match(text):
        if len(KNOWN_MACS) >= 100_000:
            KNOWN_MACS.clear()
        KNOWN_MACS[text] = text.lower()
        return text.lower()
    if _MAC_BARE.match(text):
        t = text.lower()
        return ":".join(t[i : i + 2] for i in range(0, 12, 2))
    raise InvalidMessage(f"{what} {text[:40]!r} is not a MAC address")


def gateway_name(text: str) -> str:
    """Gateway ids that are MACs are lower-cased (like tag MACs); anything else is kept as it is."""
    known = KNOWN_MACS.get(text)
    if known is not None:
        return known
    if _MAC.match(text) or _MAC_BARE.match(text):
        return normalize_mac(text, "gateway")
    return text


def require_int(obj: dict[str, Any], key: str, where: str = "") -> int:
    v = obj.get(key)
    if type(v) is not int:
        raise InvalidMessage(f"{where}{key!r} must be an integer, got {type(v).__name__}")
    return v


def require_str(obj: dict[str, Any], key: str, where: str = "") -> str:
    v = obj.get(key)
    if not isinstance(v, str):
        raise InvalidMessage(f"{where}{key!r} must be a string, got {type(v).__name__}")
    return v
