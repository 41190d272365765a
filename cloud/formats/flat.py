"""Flat sensor JSON for non-Ruuvi devices on `sensors/<id>`:
`{"sensor_id": "...", "temperature": 21.5, "humidity": 40, "pressure": 101325, "location": "attic",
"timestamp": "2026-11-23T16:00:00Z"}`.

Mapping onto the ruuvi schema (so one dashboard shows both): tag `mac` = the sensor id (the topic's last level; a
`sensor_id` in the payload must match it), tag `data_format` = `flat`, tag `location` when given, tag `gateway` when
the payload names one. Field types follow one schema per field, whatever format wrote the point (docs/cloud-ingest.md,
"Field types"): a field the ruuvi schema knows (docs/wire-format.md, "InfluxDB types") takes the schema's type, so
`battery_voltage` and `rssi` are integers (an integral float such as `2977.0` is converted; `2.95` is refused with a
reason that names the field, since the schema's unit is mV); every other number is a float, whatever JSON form it had
(a sensor that sends `21` and later `21.5` must not hit a field-type conflict); booleans are boolean fields; strings
and nested values are ignored. `timestamp` is ISO 8601 (a time without a zone is taken as UTC) or Unix seconds; a
message without one gets the receive time (`received_ns`), as for a device with no clock.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any

from cloud.formats._common import FIELD_KINDS, load_object, typed_field
from cloud.model import FieldValue, InvalidMessage, Parsed, Point

DATA_FORMAT = "flat"
_TAG_KEYS = ("location", "gateway")
_SKIP = frozenset({"sensor_id", "timestamp", *_TAG_KEYS})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse(topic: str, payload: bytes, measurement: str = "ruuvi", received_ns: int | None = None) -> Parsed:
    sensor = topic.rsplit("/", 1)[-1]
    if not sensor:
        raise InvalidMessage(f"flat topic {topic!r} has no sensor id level")
    obj = load_object(payload)
    sid = obj.get("sensor_id")
    if sid is not None and str(sid) != sensor:
        raise InvalidMessage(f"sensor_id {sid!r} differs from {sensor!r} in the topic")
    tags = {"mac": sensor, "data_format": DATA_FORMAT}
    for key in _TAG_KEYS:
        v = obj.get(key)
        if v is None:
            continue
        if not isinstance(v, str):
            raise InvalidMessage(f"{key!r} must be a string, got {type(v).__name__}")
        tags[key] = v
    fields: dict[str, FieldValue] = {}
    for k, v in obj.items():
        if k in _SKIP:
            continue
        t = type(v)
        if k in FIELD_KINDS:
            # The schema's type, or a one-line refusal that names the field: never a second type in the measurement.
            tv = typed_field(k, v) if t is bool or t is int or t is float else None
            if tv is not None:
                fields[k] = tv
        elif t is bool:
            fields[k] = v
        elif t is int or t is float:
            f = float(v)
            if not math.isfinite(f):
                raise InvalidMessage(f"field {k!r} is not finite")
            fields[k] = f
    if not fields:
        raise InvalidMessage("no numeric or boolean values")
    now = time.time_ns() if received_ns is None else received_ns
    return Parsed(points=[Point(measurement, tags, fields, _time_ns(obj.get("timestamp"), now))])


def _time_ns(ts: Any, received_ns: int) -> int:
    if ts is None:
        return received_ns
    if type(ts) in (int, float):
        if not math.isfinite(ts):
            raise InvalidMessage("timestamp is not finite")
        scaled = ts * 1_000_000_000
        if not math.isfinite(scaled):  # e.g. 1e308 seconds: round() would raise OverflowError
            raise InvalidMessage(f"timestamp {ts!r} is out of range")
        ns: int = round(scaled)
        return ns
    if not isinstance(ts, str):
        raise InvalidMessage(f"timestamp must be ISO 8601 or Unix seconds, got {type(ts).__name__}")
    try:
        dt = datetime.fromisoformat(ts)
    except ValueError:
        raise InvalidMessage(f"timestamp {ts[:60]!r} is not ISO 8601") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    # Integer arithmetic: a float of seconds since 1970 loses the microseconds.
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
