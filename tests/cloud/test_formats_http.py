"""The Ruuvi Gateway HTTP format (cloud/formats/ruuvi_gateway_http.py) on the documented examples, and the Router's
checks on it: exact points, per-tag refusals, one-line reasons for malformed bodies."""

from __future__ import annotations

import orjson
import pytest

from cloud.formats import FormatsConfig, Router
from cloud.formats import ruuvi_gateway as rg
from cloud.formats import ruuvi_gateway_http as http_fmt
from cloud.model import InvalidMessage, Point

# docs.ruuvi.com, "HTTP: Time-stamped data from Bluetooth-sensors" (ruuvi/docs data-formats/
# http-time-stamped-data-from-bluetooth-sensors.md), the schema's example, verbatim.
DOC_WITH_TIMESTAMPS = b"""{
  "data": {
    "coordinates": "",
    "timestamp": "1653633988",
    "nonce": "2636366621",
    "gw_mac": "C8:25:2D:8E:9C:2C",
    "tags": {
      "C6:A5:B9:E0:AD:06": {
        "rssi": -71,
        "timestamp": "1653633986",
        "data": "0201061BFF99040513C85714C7CC00240008041CAB76F41C3CC6A5B9E0AD06"
      },
      "E3:75:CF:37:4E:23": {
        "rssi": -72,
        "timestamp": "1653633986",
        "data": "0201061BFF99040514565D7CC7850008003C03E4A9F6741CC3E375CF374E23"
      }
    }
  }
}"""

# docs.ruuvi.com, "HTTP: Data from Bluetooth-sensors without timestamps": `counter` instead of `timestamp`.
DOC_WITHOUT_TIMESTAMPS = b"""{
  "data": {
    "coordinates": "",
    "nonce": "2896361039",
    "gw_mac": "C8:25:2D:8E:9C:2C",
    "tags": {
      "E3:75:CF:37:4E:23": {
        "rssi": -50,
        "counter": "363",
        "data": "0201061BFF990405158A5B05C6810004004403DCAB767A45BDE375CF374E23"
      },
      "F4:1F:0C:28:CB:D6": {
        "rssi": -32,
        "counter": "365",
        "data": "0201061BFF990405166455D5C6DD0008FFF803F0ADB60F2A92F41F0C28CBD6"
      }
    }
  }
}"""

# The documented examples' values, decoded by hand from the DF5 layout (docs.ruuvi.com, data format 5).
DOC_POINTS = [
    Point("ruuvi", {"mac": "c6:a5:b9:e0:ad:06", "gateway": "c8:25:2d:8e:9c:2c", "data_format": "5"},
          {"temperature": 25.32, "humidity": 55.73, "pressure": 101148.0, "acceleration_x": 36, "acceleration_y": 8,
           "acceleration_z": 1052, "battery_voltage": 2971, "tx_power": 4, "movement_counter": 244,
           "measurement_sequence_number": 7228, "rssi": -71},
          1653633986 * 10**9 + 7228),
    Point("ruuvi", {"mac": "e3:75:cf:37:4e:23", "gateway": "c8:25:2d:8e:9c:2c", "data_format": "5"},
          {"temperature": 26.03, "humidity": 59.83, "pressure": 101077.0, "acceleration_x": 8, "acceleration_y": 60,
           "acceleration_z": 996, "battery_voltage": 2959, "tx_power": 4, "movement_counter": 116,
           "measurement_sequence_number": 7363, "rssi": -72},
          1653633986 * 10**9 + 7363),
]
DOC_NOW = 1653633990 * 10**9


def _without_derived(p: Point) -> Point:
    keep = {k: v for k, v in p.fields.items() if k in DOC_POINTS[0].fields}
    return Point(p.measurement, p.tags, keep, p.time_ns)


def test_documented_example_with_timestamps_gives_exact_points() -> None:
    parsed = http_fmt.parse("http:/ruuvi", DOC_WITH_TIMESTAMPS, received_ns=DOC_NOW)
    assert parsed.gateway == "c8:25:2d:8e:9c:2c"
    assert parsed.refused == []
    assert [_without_derived(p) for p in parsed.points] == DOC_POINTS
    tags = orjson.loads(DOC_WITH_TIMESTAMPS)["data"]["tags"]
    assert parsed.sources == [orjson.dumps({k: v}) for k, v in tags.items()]


def test_same_advert_over_mqtt_and_http_is_the_same_point() -> None:
    tags = orjson.loads(DOC_WITH_TIMESTAMPS)["data"]["tags"]
    for (mac, entry), http_point in zip(tags.items(), http_fmt.parse("t", DOC_WITH_TIMESTAMPS).points, strict=True):
        mqtt_body = orjson.dumps({"gw_mac": "C8:25:2D:8E:9C:2C", "rssi": entry["rssi"], "aoa": [],
                                  "gwts": "1653633988", "ts": entry["timestamp"], "data": entry["data"],
                                  "coords": ""})
        (mqtt_point,) = rg.parse(f"ruuvi/C8:25:2D:8E:9C:2C/{mac}", mqtt_body).points
        assert mqtt_point == http_point


def test_documented_example_without_timestamps_uses_the_receive_time() -> None:
    parsed = http_fmt.parse("http:/ruuvi", DOC_WITHOUT_TIMESTAMPS, received_ns=DOC_NOW)
    assert [(p.tags["mac"], p.time_ns, p.fields["temperature"], p.fields["rssi"]) for p in parsed.points] == [
        ("e3:75:cf:37:4e:23", DOC_NOW, 27.57, -50),  # 0x158A * 0.005
        ("f4:1f:0c:28:cb:d6", DOC_NOW, 28.66, -32),  # 0x1664 * 0.005
    ]


def test_integer_timestamps_dash_macs_and_gateway_decoded_values() -> None:
    body = orjson.dumps({"data": {"gw_mac": "C8:25:2D:8E:9C:2C", "timestamp": 1653633988, "tags": {
        "C6-A5-B9-E0-AD-06": {"rssi": -71, "timestamp": 1653633986,
                              "data": "0201061BFF99040513C85714C7CC00240008041CAB76F41C3CC6A5B9E0AD06"},
        "AABBCCDDEEFF": {"rssi": -60, "timestamp": "1653633986", "dataFormat": 5, "temperature": 20.5,
                         "humidity": 40.0, "voltage": 2.9, "measurementSequenceNumber": 9},
    }}})
    parsed = http_fmt.parse("t", body, received_ns=DOC_NOW)
    assert _without_derived(parsed.points[0]) == DOC_POINTS[0]
    p = parsed.points[1]
    assert (p.tags["mac"], p.time_ns, p.fields) == (
        "aa:bb:cc:dd:ee:ff", 1653633986 * 10**9 + 9,
        {"temperature": 20.5, "humidity": 40.0, "battery_voltage": 2900, "measurement_sequence_number": 9,
         "rssi": -60})


def test_a_bad_tag_entry_is_refused_on_its_own() -> None:
    body = orjson.loads(DOC_WITH_TIMESTAMPS)
    tags = body["data"]["tags"]
    tags["not-a-mac"] = {"rssi": -1, "timestamp": "1653633986", "data": "0201061BFF990405"}
    tags["11:22:33:44:55:66"] = {"rssi": -1, "timestamp": "yesterday", "data": tags["C6:A5:B9:E0:AD:06"]["data"]}
    tags["22:33:44:55:66:77"] = {"rssi": -1, "timestamp": "1653633986", "data": "0201061BFF99040513C8"}
    tags["33:44:55:66:77:88"] = [1, 2]
    parsed = http_fmt.parse("t", orjson.dumps(body), received_ns=DOC_NOW)
    assert [_without_derived(p) for p in parsed.points] == DOC_POINTS
    assert [(r.kind, r.reason.split(":")[0]) for r in parsed.refused] == [("invalid", "tag 'not-a-mac'"),
                                                                            ("invalid", "tag '11"),
                                                                            ("invalid", "tag '22"),
                                                                            ("invalid", "tag '33")]
    assert parsed.refused[3].payload == b'{"33:44:55:66:77:88":[1,2]}'
    assert "'timestamp' must be Unix seconds" in parsed.refused[1].reason
    assert "undecodable 'data'" in parsed.refused[2].reason


@pytest.mark.parametrize(("body", "reason"), [
    (b"", "malformed JSON"),
    (b"{not json", "malformed JSON"),
    (b"[1, 2]", "JSON payload is a list, not an object"),
    (b'{"tags": {}}', "'data' must be an object, got NoneType"),
    (b'{"data": {"tags": {}}}', "'data.gw_mac' must be a string, got NoneType"),
    (b'{"data": {"gw_mac": "C8:25:2D:8E:9C:2C", "tags": [1]}}', "'data.tags' must be an object, got list"),
])
def test_malformed_bodies_have_a_one_line_reason(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidMessage) as e:
        http_fmt.parse("t", body)
    assert str(e.value).startswith(reason)
    assert "\n" not in str(e.value)


def test_router_refuses_one_reading_for_its_timestamp_and_keeps_the_rest() -> None:
    # The documented example is from 2022: with the default max_age (366 d) at 2025, both readings are too old.
    body = orjson.loads(DOC_WITH_TIMESTAMPS)
    body["data"]["tags"]["C6:A5:B9:E0:AD:06"]["timestamp"] = "1763913600"
    router = Router(FormatsConfig(), clock=lambda: 1763913700 * 10**9)
    parsed = router.route_format("ruuvi_gateway_http", "http:/ruuvi", orjson.dumps(body))
    assert [p.tags["mac"] for p in parsed.points] == ["c6:a5:b9:e0:ad:06"]
    assert parsed.sources is not None and len(parsed.sources) == 1
    (refused,) = parsed.refused
    assert refused.kind == "too_old"
    assert refused.payload == orjson.dumps({"E3:75:CF:37:4E:23": body["data"]["tags"]["E3:75:CF:37:4E:23"]})


def test_router_applies_the_payload_limit() -> None:
    router = Router(FormatsConfig(max_payload_bytes=1024))
    with pytest.raises(InvalidMessage, match="payload of 2000 bytes exceeds 1024"):
        router.route_format("ruuvi_gateway_http", "t", b" " * 2000)
