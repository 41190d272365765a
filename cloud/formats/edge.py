"""The edge-gw wire format, version 1 (docs/wire-format.md): `<prefix>/<gateway>/batch` and `.../status`."""

from __future__ import annotations

import time
from typing import Any

from cloud.formats._common import load_object, normalize_mac, require_int, require_str, typed_fields
from cloud.model import GatewayStatus, InvalidMessage, Parsed, Point

WIRE_VERSION = 1
_STATES = ("online", "offline")


def parse(topic: str, payload: bytes, *, measurement: str = "ruuvi", received_ns: int | None = None) -> Parsed:
    """Points of a batch, or the gateway state of a status message. `received_ns` stamps status messages only."""
    levels = topic.split("/")
    if len(levels) < 3:
        raise InvalidMessage(f"edge topic {topic!r} is not <prefix>/<gateway>/(batch|status)")
    gateway, kind = levels[-2], levels[-1]
    obj = load_object(payload)
    version = obj.get("v")
    if version != WIRE_VERSION or type(version) is not int:
        raise InvalidMessage(f"unknown wire format version {version!r}")
    sender = require_str(obj, "gateway")
    if sender != gateway:
        raise InvalidMessage(f"gateway {sender!r} in the payload differs from {gateway!r} in the topic")
    if kind == "status":
        state = obj.get("state")
        if state not in _STATES:
            raise InvalidMessage(f"status state {state!r} is not online/offline")
        now = time.time_ns() if received_ns is None else received_ns
        return Parsed(points=[], status=GatewayStatus(gateway, str(state), now), gateway=gateway)
    if kind != "batch":
        raise InvalidMessage(f"edge topic {topic!r} ends in neither batch nor status")
    if require_int(obj, "seq") < 0:
        raise InvalidMessage("seq is negative")
    readings = obj.get("readings")
    if not isinstance(readings, list) or not readings:
        raise InvalidMessage("readings must be a non-empty array")
    points: list[Point] = []
    for i, r in enumerate(readings):
        p = _point(r, i, gateway, measurement)
        if p is not None:
            points.append(p)
    return Parsed(points=points, gateway=gateway)


def _point(r: Any, i: int, gateway: str, measurement: str) -> Point | None:
    where = f"readings[{i}]: "
    if not isinstance(r, dict):
        raise InvalidMessage(f"{where}not an object")
    mac = normalize_mac(require_str(r, "mac", where), f"{where}mac")
    time_ns = r.get("time_ns")
    if type(time_ns) is not int:
        time_ns = require_int(r, "time_ns", where)
    data_format = r.get("data_format")
    if type(data_format) is not int:
        data_format = require_int(r, "data_format", where)
    raw_fields = r.get("fields")
    if not isinstance(raw_fields, dict):
        raise InvalidMessage(f"{where}'fields' must be an object")
    try:
        fields = typed_fields(raw_fields)
        rssi = r.get("rssi")
        if type(rssi) is int:
            fields["rssi"] = rssi
        elif rssi is not None:
            fields.update(typed_fields({"rssi": rssi}))
    except InvalidMessage as e:
        raise InvalidMessage(f"{where}{e}") from None
    if not fields:
        return None  # every value "not available": nothing InfluxDB could store
    tags = {"mac": mac, "gateway": gateway, "data_format": str(data_format)}
    return Point(measurement, tags, fields, time_ns)
