"""Home Assistant MQTT discovery for Ruuvi tags: the discovery configs and state payloads, from a tag's fields (pure).

Both daemons publish these (edge/homeassistant.py for the tags a gateway hears, cloud/homeassistant.py for the tags
only a Ruuvi Gateway hears); docs/homeassistant.md. What HA expects is taken from its MQTT docs
(https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery, .../sensor.mqtt/, .../integrations/sensor/) and
written down as checks in tests/edge/test_homeassistant.py.

Shapes:
- one retained config per tag and sensor at `<discovery_prefix>/sensor/<node_id>/<mac>_<field>/config`, where
  node_id is the publishing gateway (so an ACL can keep each gateway under its own node) and `<mac>` the tag's MAC
  as 12 hex digits; unique_id `ruuvi_<mac>_<field>`: the same tag heard through two gateways is one entity;
- a sensor only for the fields the tag's data format has (the decoder's keys: DF3 has no tx_power, E1 no battery);
- one JSON state per tag at `<state_prefix>/<mac>` that every sensor of the tag reads with a value_template, so a
  reading costs one message, not one per sensor. A value that is "not available" is null there, which the template
  renders as `None`: HA's MQTT sensor takes that as "unknown";
- the state carries HA's units: hPa (not Pa), V (not mV); the rest as decoded;
- per gateway a connectivity binary_sensor on the gateway's own retained status topic (core/wire.py), which is the
  device the tags are `via_device` of, and the availability of every tag's sensors: the gateway's last will makes
  them all unavailable; `expire_after` makes a silent tag's sensors unavailable on their own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

DISCOVERY_PREFIX = "homeassistant"
BIRTH_TOPIC_SUFFIX = "status"  # HA's birth and last will: <discovery_prefix>/status, "online" / "offline"
_OBJECT_ID = re.compile(r"[^a-zA-Z0-9_-]")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


@dataclass(frozen=True, slots=True)
class Sensor:
    field: str  # the decoded field (docs/wire-format.md), also the key in the state JSON
    name: str
    device_class: str | None
    unit: str | None
    state_class: str | None = "measurement"
    precision: int | None = None  # suggested_display_precision
    diagnostic: bool = False
    enabled: bool = True  # enabled_by_default: the noisy ones start disabled
    scale: float = 1.0  # state value = decoded value * scale (to the unit above)


# In the order HA lists them on the device page. Device class / unit pairs are HA's sensor device classes; a field
# with no matching class (VOC/NOx index, acceleration, PM4 on HA before 2025.x) has none, which allows any unit.
SENSORS: tuple[Sensor, ...] = (
    Sensor("temperature", "Temperature", "temperature", "°C", precision=2),
    Sensor("humidity", "Humidity", "humidity", "%", precision=1),
    Sensor("pressure", "Pressure", "atmospheric_pressure", "hPa", precision=2, scale=0.01),
    Sensor("dew_point", "Dew point", "temperature", "°C", precision=1),
    Sensor("absolute_humidity", "Absolute humidity", None, "g/m³", precision=2),
    Sensor("pm1_0", "PM1.0", "pm1", "µg/m³", precision=1),
    Sensor("pm2_5", "PM2.5", "pm25", "µg/m³", precision=1),
    Sensor("pm4_0", "PM4.0", None, "µg/m³", precision=1),
    Sensor("pm10_0", "PM10", "pm10", "µg/m³", precision=1),
    Sensor("co2", "CO2", "carbon_dioxide", "ppm", precision=0),
    Sensor("voc_index", "VOC index", None, None, precision=0),
    Sensor("nox_index", "NOx index", None, None, precision=0),
    Sensor("luminosity", "Illuminance", "illuminance", "lx", precision=0),
    Sensor("sound_instant_dba", "Sound level", "sound_pressure", "dBA", precision=1),
    Sensor("sound_average_dba", "Sound level (average)", "sound_pressure", "dBA", precision=1),
    Sensor("sound_peak_spl_db", "Sound peak", "sound_pressure", "dB", precision=1),
    Sensor("movement_counter", "Movement counter", None, None, state_class="total_increasing"),
    Sensor("acceleration_x", "Acceleration X", None, "mG", enabled=False),
    Sensor("acceleration_y", "Acceleration Y", None, "mG", enabled=False),
    Sensor("acceleration_z", "Acceleration Z", None, "mG", enabled=False),
    Sensor("acceleration_total", "Acceleration", None, "mG", enabled=False),
    Sensor("battery_voltage", "Battery voltage", "voltage", "V", precision=3, diagnostic=True, scale=0.001),
    Sensor("tx_power", "TX power", "signal_strength", "dBm", diagnostic=True, enabled=False),
    Sensor("rssi", "Signal strength", "signal_strength", "dBm", diagnostic=True, enabled=False),
)
BY_FIELD: dict[str, Sensor] = {s.field: s for s in SENSORS}

# Data format -> device model. Formats not here (8: encrypted) are not announced: there is nothing to show.
MODELS: dict[int, str] = {
    3: "RuuviTag (data format 3)",
    5: "RuuviTag (data format 5)",
    0xC5: "RuuviTag (data format C5)",
    6: "Ruuvi Air (data format 6)",
    0xE1: "Ruuvi Air (data format E1)",
}


class DiscoveryError(ValueError):
    """A value that cannot go into a discovery topic (bad MAC or node id)."""


def object_id(text: str) -> str:
    """`text` with everything HA refuses in a node or object id ([a-zA-Z0-9_-] only) replaced by `_`."""
    return _OBJECT_ID.sub("_", text)


def mac_id(mac: str) -> str:
    """`aa:bb:cc:dd:ee:ff` -> `aabbccddeeff`, the tag's part of every id and topic."""
    if not _MAC.fullmatch(mac):
        raise DiscoveryError(f"tag MAC {mac!r}: expected aa:bb:cc:dd:ee:ff (lower case)")
    return mac.replace(":", "")


@dataclass(frozen=True, slots=True)
class Node:
    """Who announces: the gateway (edge-gw id or Ruuvi Gateway MAC) and where its states and availability live."""

    node_id: str  # [a-zA-Z0-9_-]+ (object_id() of the gateway id)
    gateway_name: str  # shown in HA, e.g. "edge-gw gw-1"
    state_prefix: str  # states go to <state_prefix>/<mac>
    expire_after: int  # s; a tag's sensors become unavailable after this long without a state
    discovery_prefix: str = DISCOVERY_PREFIX
    status_topic: str | None = None  # the gateway's retained online/offline JSON (core.wire), if it has one
    origin: str = "edge-gw"
    model: str = "edge-gw"

    def __post_init__(self) -> None:
        if not self.node_id or object_id(self.node_id) != self.node_id:
            raise DiscoveryError(f"node id {self.node_id!r}: expected [a-zA-Z0-9_-]+")

    @property
    def gateway_identifier(self) -> str:
        return f"{self.origin}_{self.node_id}"

    @property
    def birth_topic(self) -> str:
        return f"{self.discovery_prefix}/{BIRTH_TOPIC_SUFFIX}"

    def config_topics_filter(self) -> str:
        """Every config of this node (to find retained ones left by an earlier run)."""
        return f"{self.discovery_prefix}/+/{self.node_id}/+/config"


def state_topic(node: Node, mac: str) -> str:
    return f"{node.state_prefix}/{mac_id(mac)}"


def config_topic(node: Node, mac: str, field: str, component: str = "sensor") -> str:
    return f"{node.discovery_prefix}/{component}/{node.node_id}/{mac_id(mac)}_{field}/config"


def sensors_for(data_format: int, fields: Iterable[str]) -> list[Sensor]:
    """The sensors a tag of `data_format` has: those among its decoded `fields` (with rssi when it has one)."""
    if data_format not in MODELS:
        return []
    have = set(fields)
    return [s for s in SENSORS if s.field in have]


def _availability(node: Node) -> dict[str, Any]:
    if node.status_topic is None:
        return {}
    return {"availability": [{"topic": node.status_topic, "value_template": "{{ value_json.state }}",
                              "payload_available": "online", "payload_not_available": "offline"}]}


def gateway_config(node: Node) -> tuple[str, bytes] | None:
    """The gateway's own connectivity binary_sensor (the device the tags are `via_device` of), when it has a status
    topic; the payload is the retained status JSON itself."""
    if node.status_topic is None:
        return None
    topic = f"{node.discovery_prefix}/binary_sensor/{node.node_id}/gateway_status/config"
    payload = {
        "name": "Connectivity",
        "unique_id": f"{node.gateway_identifier}_status",
        "state_topic": node.status_topic,
        "value_template": "{{ value_json.state }}",
        "payload_on": "online",
        "payload_off": "offline",
        "device_class": "connectivity",
        "entity_category": "diagnostic",
        "device": {"identifiers": [node.gateway_identifier], "name": node.gateway_name, "manufacturer": "edge-gw",
                   "model": node.model},
        "origin": {"name": node.origin},
    }
    return topic, orjson.dumps(payload)


def tag_configs(node: Node, mac: str, data_format: int, fields: Iterable[str]) -> dict[str, bytes]:
    """Config topic -> retained payload for every sensor the tag has; {} for a format that is not announced."""
    sensors = sensors_for(data_format, fields)
    if not sensors:
        return {}
    tag = mac_id(mac)
    device: dict[str, Any] = {
        "identifiers": [f"ruuvi_{tag}"],
        "name": f"Ruuvi {tag[-4:].upper()}",
        "manufacturer": "Ruuvi Innovations",
        "model": MODELS[data_format],
    }
    if node.status_topic is not None:
        device["via_device"] = node.gateway_identifier
    common: dict[str, Any] = {"state_topic": state_topic(node, mac), "expire_after": node.expire_after,
                              **_availability(node), "device": device, "origin": {"name": node.origin}}
    out: dict[str, bytes] = {}
    for s in sensors:
        cfg: dict[str, Any] = {
            "name": s.name,
            "unique_id": f"ruuvi_{tag}_{s.field}",
            "value_template": f"{{{{ value_json.{s.field} }}}}",
        }
        if s.device_class is not None:
            cfg["device_class"] = s.device_class
        if s.unit is not None:
            cfg["unit_of_measurement"] = s.unit
        if s.state_class is not None:
            cfg["state_class"] = s.state_class
        if s.precision is not None:
            cfg["suggested_display_precision"] = s.precision
        if s.diagnostic:
            cfg["entity_category"] = "diagnostic"
        if not s.enabled:
            cfg["enabled_by_default"] = False
        cfg.update(common)
        out[config_topic(node, mac, s.field)] = orjson.dumps(cfg)
    return out


def state_payload(data_format: int, fields: Mapping[str, Any]) -> bytes:
    """The tag's one state message: every announced sensor's value in HA's unit, null where not available."""
    values: dict[str, Any] = {}
    for s in sensors_for(data_format, fields):
        v = fields[s.field]
        if v is not None and s.scale != 1.0 and not isinstance(v, bool):
            v = round(v * s.scale, 6)
        values[s.field] = v
    return orjson.dumps(values)
