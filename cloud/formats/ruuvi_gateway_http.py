"""Ruuvi Gateway's HTTP format: the body it POSTs to a custom HTTP(S) server every `http_period` (10 s by default).

Spec: docs.ruuvi.com "HTTP: Time-stamped data from Bluetooth-sensors" and "... without timestamps" (JSON schemas
with examples), and the shapes the gateway firmware's own tests (ruuvi.gateway_esp32, test_http_json.cpp) pin down:

    {"data": {"coordinates": "", "timestamp": "1653633988", "nonce": "2636366621", "gw_mac": "C8:25:2D:8E:9C:2C",
              "tags": {"C6:A5:B9:E0:AD:06": {"rssi": -71, "timestamp": "1653633986", "data": "0201061BFF9904..."}}}}

A tag without a clock has `"counter"` instead of `"timestamp"`; with decoding on in the gateway, the decoded keys of
the MQTT format follow `data`. Timestamps are digit strings in the docs and ints in some firmware: both are taken.

Choices:
- each tag entry is decoded exactly like one MQTT message (ruuvi_gateway.advert_point): `data` through core.ruuvi,
  the same time rules (its `timestamp`, else the receive time for `counter`), the same nanoseconds within the second,
  so a tag heard over MQTT and over HTTP gives identical points;
- the body as a whole must have this shape (an object `data` with a string `gw_mac` and an object `tags`): anything
  else is InvalidMessage, which the HTTP input answers with 400 and dead-letters;
- one tag entry that cannot be decoded (bad hex, bad MAC key, bad timestamp) is refused on its own (kind "invalid"),
  with `{"<MAC>": {...}}` as its dead-letter payload; the other tags of the body are stored. Each point keeps its
  entry in `Parsed.sources`, so the Router can also refuse one reading for its timestamp;
- `nonce` and `coordinates` are not stored: a re-sent body maps to the same points (same tag, same time), which
  InfluxDB keeps once.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from cloud.formats._common import gateway_name, load_object, normalize_mac
from cloud.formats.ruuvi_gateway import advert_point, advert_time_ns
from cloud.model import InvalidMessage, Parsed, Point, Refused

INVALID = "invalid"  # Refused.kind of a tag entry that does not decode


def parse(topic: str, payload: bytes, measurement: str = "ruuvi", received_ns: int | None = None) -> Parsed:
    now = time.time_ns() if received_ns is None else received_ns
    body = load_object(payload)
    data = body.get("data")
    if not isinstance(data, dict):
        raise InvalidMessage(f"'data' must be an object, got {type(data).__name__}")
    gw_mac = data.get("gw_mac")
    if not isinstance(gw_mac, str):
        raise InvalidMessage(f"'data.gw_mac' must be a string, got {type(gw_mac).__name__}")
    gateway = gateway_name(gw_mac)
    tags = data.get("tags")
    if not isinstance(tags, dict):
        raise InvalidMessage(f"'data.tags' must be an object, got {type(tags).__name__}")
    points: list[Point] = []
    sources: list[bytes] = []
    refused: list[Refused] = []
    for key, entry in tags.items():
        source = orjson.dumps({key: entry})
        try:
            point = _tag_point(key, entry, gateway, measurement, now)
        except InvalidMessage as e:
            refused.append(Refused(source, f"tag {key[:40]!r}: {e}", INVALID))
            continue
        if point is not None:
            points.append(point)
            sources.append(source)
    return Parsed(points=points, gateway=gateway, refused=refused, sources=sources)


def _tag_point(key: str, entry: Any, gateway: str, measurement: str, now: int) -> Point | None:
    if not isinstance(entry, dict):
        raise InvalidMessage(f"must be an object, got {type(entry).__name__}")
    # The schema allows AA-BB-CC-DD-EE-FF as well as colons.
    mac = normalize_mac(key.replace("-", ":") if len(key) == 17 else key, "tag MAC")
    time_ns, whole_seconds = advert_time_ns(entry, now, keys=("timestamp",), no_clock="counter")
    return advert_point(entry, mac=mac, gateway=gateway, time_ns=time_ns, whole_seconds=whole_seconds,
                        measurement=measurement)
