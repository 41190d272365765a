"""Home Assistant's MQTT discovery rules, written down from its documentation, and a small model of what HA does with
the messages, for the discovery tests of both daemons.

Sources (read 2025): https://www.home-assistant.io/integrations/mqtt/ ("MQTT Discovery": topic format, birth message,
device and availability keys), https://www.home-assistant.io/integrations/sensor.mqtt/ and binary_sensor.mqtt/
(required and optional keys, expire_after), https://www.home-assistant.io/integrations/sensor/ ("Device class":
the units each class allows) and https://developers.home-assistant.io/docs/core/entity/sensor/ (state classes,
which device classes allow which state class; entity categories).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

# "<discovery_prefix>/<component>/[<node_id>/]<object_id>/config"; node_id and object_id: [a-zA-Z0-9_-]+.
ID = r"[a-zA-Z0-9_-]+"
COMPONENTS = ("sensor", "binary_sensor")
# Keys each component requires (sensor.mqtt: state_topic "required"; binary_sensor.mqtt: the same). unique_id is
# optional to HA but required to put the entity on a device and to let the user edit it, so we require it.
REQUIRED = {"sensor": ("state_topic", "unique_id", "device"), "binary_sensor": ("state_topic", "unique_id", "device")}
# Sensor device classes -> the units HA accepts for each ("Device class" table of the sensor integration). A sensor
# without a device class may have any unit or none.
SENSOR_UNITS: dict[str, set[str | None]] = {
    "temperature": {"°C", "°F", "K"},
    "humidity": {"%"},
    "atmospheric_pressure": {"cbar", "bar", "hPa", "mmHg", "inHg", "kPa", "mbar", "Pa", "psi"},
    "pressure": {"cbar", "bar", "hPa", "mmHg", "inHg", "kPa", "mbar", "Pa", "psi"},
    "pm1": {"µg/m³"},
    "pm25": {"µg/m³"},
    "pm10": {"µg/m³"},
    "carbon_dioxide": {"ppm"},
    "illuminance": {"lx"},
    "sound_pressure": {"dB", "dBA"},
    "voltage": {"V", "mV", "µV", "kV", "MV"},
    "signal_strength": {"dB", "dBm"},
    "battery": {"%"},
    "volatile_organic_compounds_parts": {"ppm", "ppb"},
    "aqi": {None},
}
STATE_CLASSES = {"measurement", "measurement_angle", "total", "total_increasing"}
# Device classes that allow only some state classes (all of the measurement kinds above: measurement only).
ONLY_MEASUREMENT = set(SENSOR_UNITS) - {"aqi"}
BINARY_SENSOR_CLASSES = {"connectivity", "problem", "motion", "moving", "power", "running", "vibration"}
ENTITY_CATEGORIES = {"sensor": {"diagnostic"}, "binary_sensor": {"diagnostic"}}  # "config" is not for read-only ones


def check_config(topic: str, payload: bytes, discovery_prefix: str = "homeassistant") -> dict[str, Any]:
    """Raise AssertionError naming the rule a discovery message breaks; the parsed config otherwise."""
    m = re.fullmatch(rf"{re.escape(discovery_prefix)}/({'|'.join(COMPONENTS)})/({ID})/({ID})/config", topic)
    assert m, f"{topic}: not <prefix>/<component>/<node_id>/<object_id>/config with ids of [a-zA-Z0-9_-]"
    component = m.group(1)
    cfg = orjson.loads(payload)
    assert isinstance(cfg, dict), f"{topic}: payload is not a JSON object"
    for key in REQUIRED[component]:
        assert cfg.get(key), f"{topic}: required key {key!r} missing"
    for key in ("state_topic",):
        assert "+" not in cfg[key] and "#" not in cfg[key], f"{topic}: {key} has wildcards"
    device = cfg["device"]
    assert device.get("identifiers") or device.get("connections"), f"{topic}: device needs identifiers/connections"
    assert isinstance(device.get("identifiers", []), list)
    dc = cfg.get("device_class")
    unit = cfg.get("unit_of_measurement")
    if component == "sensor":
        if dc is not None:
            assert dc in SENSOR_UNITS, f"{topic}: unknown sensor device_class {dc!r}"
            assert unit in SENSOR_UNITS[dc], f"{topic}: unit {unit!r} not valid for device_class {dc!r}"
        sc = cfg.get("state_class")
        if sc is not None:
            assert sc in STATE_CLASSES, f"{topic}: state_class {sc!r}"
            assert dc not in ONLY_MEASUREMENT or sc == "measurement", f"{topic}: {dc} allows only measurement"
        if "suggested_display_precision" in cfg:
            p = cfg["suggested_display_precision"]
            assert type(p) is int and p >= 0, f"{topic}: suggested_display_precision {p!r}"
    else:
        assert dc is None or dc in BINARY_SENSOR_CLASSES, f"{topic}: binary_sensor device_class {dc!r}"
        assert unit is None, f"{topic}: a binary_sensor has no unit"
    if "entity_category" in cfg:
        assert cfg["entity_category"] in ENTITY_CATEGORIES[component], f"{topic}: entity_category"
    if "expire_after" in cfg:
        assert type(cfg["expire_after"]) is int and cfg["expire_after"] > 0, f"{topic}: expire_after"
    for a in cfg.get("availability", []):
        assert a.get("topic") and "+" not in a["topic"], f"{topic}: availability entry without a topic"
    if "origin" in cfg:
        assert cfg["origin"].get("name"), f"{topic}: origin needs a name"
    return cfg


def check_all(configs: dict[str, bytes], discovery_prefix: str = "homeassistant") -> dict[str, dict[str, Any]]:
    """check_config on each, plus: unique ids unique, one object id per node. unique_id -> config."""
    by_uid: dict[str, dict[str, Any]] = {}
    for topic, payload in configs.items():
        cfg = check_config(topic, payload, discovery_prefix)
        assert cfg["unique_id"] not in by_uid, f"unique_id {cfg['unique_id']} used twice"
        by_uid[cfg["unique_id"]] = cfg
    return by_uid


_TEMPLATE = re.compile(r"\{\{ value_json\.([a-z0-9_]+) \}\}")


def render(template: str | None, payload: bytes) -> str:
    """The two value_template shapes we use, rendered as HA's Jinja would (a JSON null renders as `None`)."""
    if template is None:
        return payload.decode()
    m = _TEMPLATE.fullmatch(template)
    assert m, f"template {template!r} is not one we can render"
    v = orjson.loads(payload).get(m.group(1))
    return "None" if v is None else str(v)


@dataclass
class HaModel:
    """What Home Assistant makes of the broker's messages: entities from configs (removed by an empty one), their
    states, and availability (every availability topic says available, and a state came within expire_after)."""

    port: int
    discovery_prefix: str = "homeassistant"
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)  # config topic -> config
    messages: dict[str, tuple[bytes, float]] = field(default_factory=dict)  # topic -> last payload, when
    state_counts: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, *extra_topics: str) -> HaModel:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="ha-model")
        self.client.on_message = self._on_message
        done = threading.Event()
        self.client.on_subscribe = lambda *_: done.set()
        self.client.connect("127.0.0.1", self.port)
        self.client.subscribe([(f"{self.discovery_prefix}/#", 1), *[(t, 1) for t in extra_topics]])
        self.client.loop_start()
        assert done.wait(5)
        return self

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            if msg.topic.endswith("/config") and msg.topic.startswith(self.discovery_prefix + "/"):
                if msg.payload:
                    self.configs[msg.topic] = check_config(msg.topic, msg.payload, self.discovery_prefix)
                else:
                    self.configs.pop(msg.topic, None)
                return
            self.messages[msg.topic] = (bytes(msg.payload), time.monotonic())
            self.state_counts[msg.topic] = self.state_counts.get(msg.topic, 0) + 1

    def entity(self, uid: str) -> dict[str, Any] | None:
        with self.lock:
            return next((c for c in self.configs.values() if c["unique_id"] == uid), None)

    def unique_ids(self) -> set[str]:
        with self.lock:
            return {c["unique_id"] for c in self.configs.values()}

    def value(self, uid: str) -> str | None:
        cfg = self.entity(uid)
        assert cfg is not None, f"no entity {uid}"
        with self.lock:
            got = self.messages.get(cfg["state_topic"])
        return None if got is None else render(cfg.get("value_template"), got[0])

    def available(self, uid: str) -> bool:
        cfg = self.entity(uid)
        if cfg is None:
            return False
        with self.lock:
            for a in cfg.get("availability", []):
                got = self.messages.get(a["topic"])
                if got is None or render(a.get("value_template"), got[0]) != a.get("payload_available", "online"):
                    return False
            if "expire_after" in cfg:
                got = self.messages.get(cfg["state_topic"])
                if got is None or time.monotonic() - got[1] > cfg["expire_after"]:
                    return False
        return True


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def retained(port: int, topic_filter: str, settle: float = 0.7) -> dict[str, bytes]:
    """What the broker holds retained under `topic_filter` right now (a fresh subscriber's retained messages)."""
    got: dict[str, bytes] = {}
    lock = threading.Lock()

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        if msg.retain:
            with lock:
                got[msg.topic] = bytes(msg.payload)

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"retained-{time.monotonic_ns()}")
    c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.subscribe(topic_filter, 1)
    c.loop_start()
    time.sleep(settle)
    c.loop_stop()
    c.disconnect()
    with lock:
        return dict(got)
