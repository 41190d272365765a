"""The input parsers and the Router: real message shapes in, exact points (or one-line reasons) out."""

from __future__ import annotations

import struct
from unittest import mock

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud.formats import FormatsConfig, Router, topic_matches
from cloud.formats import edge_batch as edge_fmt
from cloud.formats import flat as flat_fmt
from cloud.formats import ruuvi_gateway as rg
from cloud.model import GatewayStatus, InvalidMessage, Parsed, Point, Refused

NOW = 1_763_913_700_000_000_000  # 2025-11-23T16:01:40Z
T = 1_763_913_600_123_456_789
DF5_RAW = "0512fc5394c37c0004fffc040cac364200cdcbb8334c884f"
DF5_FIELDS = {
    "data_format": 5,
    "temperature": 24.3,
    "humidity": 53.49,
    "pressure": 100044,
    "acceleration_x": 4,
    "acceleration_y": -4,
    "acceleration_z": 1036,
    "battery_voltage": 2977,
    "tx_power": 4,
    "movement_counter": 66,
    "measurement_sequence_number": 205,
    "mac": "cb:b8:33:4c:88:4f",
}
DF5_POINT_FIELDS = {
    "temperature": 24.3,
    "humidity": 53.49,
    "pressure": 100044.0,
    "acceleration_x": 4,
    "acceleration_y": -4,
    "acceleration_z": 1036,
    "battery_voltage": 2977,
    "tx_power": 4,
    "movement_counter": 66,
    "measurement_sequence_number": 205,
}


def batch(**over: object) -> dict[str, object]:
    reading = {
        "mac": "cb:b8:33:4c:88:4f",
        "time_ns": T,
        "clock_synced": True,
        "rssi": -71,
        "data_format": 5,
        "raw": DF5_RAW,
        "fields": DF5_FIELDS,
    }
    b: dict[str, object] = {"v": 1, "gateway": "pi-kitchen", "seq": 4711, "readings": [reading]}
    b.update(over)
    return b


def reading(**over: object) -> dict[str, object]:
    r = dict(batch()["readings"][0])  # type: ignore[index]
    r.update(over)
    return r


# ---- edge ---------------------------------------------------------------------------------------------------


def test_edge_batch() -> None:
    got = edge_fmt.parse("edge-gw/pi-kitchen/batch", orjson.dumps(batch()))
    tags = {"mac": "cb:b8:33:4c:88:4f", "gateway": "pi-kitchen", "data_format": "5"}
    assert got == Parsed(points=[Point("ruuvi", tags, {**DF5_POINT_FIELDS, "rssi": -71}, T)], gateway="pi-kitchen",
                         seq=4711)
    assert type(got.points[0].fields["pressure"]) is float  # JSON int, InfluxDB float
    assert type(got.points[0].fields["temperature"]) is float


def test_edge_types_are_fixed_whatever_the_json_number_form() -> None:
    fields = {"data_format": 6, "temperature": 24, "pm2_5": 3, "co2": 410.0, "luminosity": 0, "button_pressed": True}
    got = edge_fmt.parse("edge-gw/g/batch", orjson.dumps(batch(gateway="g", readings=[reading(fields=fields)])))
    f = got.points[0].fields
    assert f == {"temperature": 24.0, "pm2_5": 3.0, "co2": 410, "luminosity": 0.0, "button_pressed": True, "rssi": -71}
    assert [type(v) for v in f.values()] == [float, float, int, float, bool, int]


def test_edge_nulls_are_left_out_and_an_empty_reading_is_skipped() -> None:
    r1 = reading(rssi=None, fields={"data_format": 5, "temperature": None, "humidity": 50.0, "mac": None})
    r2 = reading(rssi=None, fields={"data_format": 5, "temperature": None})
    got = edge_fmt.parse("edge-gw/g/batch", orjson.dumps(batch(gateway="g", readings=[r1, r2])))
    assert [p.fields for p in got.points] == [{"humidity": 50.0}]


def test_edge_measurement_and_mac_case() -> None:
    got = edge_fmt.parse(
        "edge-gw/g/batch",
        orjson.dumps(batch(gateway="g", readings=[reading(mac="CB:B8:33:4C:88:4F")])),
        measurement="m",
    )
    assert (got.points[0].measurement, got.points[0].tags["mac"]) == ("m", "cb:b8:33:4c:88:4f")


def test_edge_status() -> None:
    got = edge_fmt.parse("edge-gw/g/status", b'{"v":1,"gateway":"g","state":"offline"}', received_ns=7)
    assert got == Parsed(points=[], status=GatewayStatus("g", "offline", 7), gateway="g")


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("edge-gw/g/batch", b'{"v":1,', "malformed JSON"),
        ("edge-gw/g/batch", b"[1,2]", "JSON payload is a list, not an object"),
        ("edge-gw/g/batch", b'{"v":1,"x":NaN}', "malformed JSON"),
        ("edge-gw/g/batch", orjson.dumps(batch(v=2)), "unknown wire format version 2"),
        ("edge-gw/g/batch", orjson.dumps(batch(v=True)), "unknown wire format version True"),
        ("edge-gw/g/batch", orjson.dumps(batch()), "gateway 'pi-kitchen' in the payload differs from 'g'"),
        ("edge-gw/pi-kitchen/batch", orjson.dumps(batch(readings=[])), "readings must be a non-empty array"),
        ("edge-gw/pi-kitchen/batch", orjson.dumps(batch(seq="1")), "'seq' must be an integer"),
        ("edge-gw/pi-kitchen/batch", orjson.dumps(batch(seq=-1)), "seq -1 is not in 0..2**53-1"),
        ("edge-gw/pi-kitchen/batch", orjson.dumps(batch(seq=1 << 53)), "seq 9007199254740992 is not in"),
        ("edge-gw/pi-kitchen/batch", orjson.dumps(batch(readings=[reading(time_ns="1")])), "readings[0]: 'time_ns'"),
        ("edge-gw/pi-kitchen/batch", orjson.dumps(batch(readings=[reading(mac="cb:b8")])), "is not a MAC address"),
        ("edge-gw/pi-kitchen/batch", orjson.dumps(batch(readings=[reading(rssi=-7.5)])), "'rssi' must be an integer"),
        (
            "edge-gw/pi-kitchen/batch",
            orjson.dumps(batch(readings=[reading(fields={"temperature": "24"})])),
            "readings[0]: field 'temperature' must be a number, got str",
        ),
        (
            "edge-gw/pi-kitchen/batch",
            orjson.dumps(batch(readings=[reading(fields={"acceleration_x": True})])),
            "field 'acceleration_x' must be an integer",
        ),
        (
            "edge-gw/pi-kitchen/batch",
            orjson.dumps(batch(readings=[reading(fields={"button_pressed": 1})])),
            "field 'button_pressed' must be a boolean",
        ),
        ("edge-gw/g/status", b'{"v":1,"gateway":"g","state":"up"}', "status state 'up' is not online/offline"),
        ("edge-gw/g/other", b'{"v":1,"gateway":"g"}', "ends in neither batch nor status"),
    ],
)
def test_edge_invalid(topic: str, payload: bytes, reason: str) -> None:
    with pytest.raises(InvalidMessage) as e:
        edge_fmt.parse(topic, payload)
    assert reason in str(e.value)
    assert "\n" not in str(e.value)


# ---- Ruuvi Gateway ------------------------------------------------------------------------------------------
# Shapes from the gateway firmware's own tests (ruuvi.gateway_esp32 test_mqtt_json.cpp) and docs.ruuvi.com.

GW = "AA:CC:EE:00:11:22"
TOPIC = f"ruuvi/{GW}/AA:BB:CC:01:02:03"
RAW5 = "0201061BFF99040517037758C5C703FCFF30FFF89416B7958AE375CF374E23"
DECODED5 = (
    '"dataFormat":5,"temperature":29.455,"humidity":76.3800,"pressure":100631,"accelX":1.020,"accelY":-0.208,'
    '"accelZ":-0.008,"movementCounter":183,"voltage":2.784,"txPower":4,"measurementSequenceNumber":38282,'
    '"id":"E3:75:CF:37:4E:23"'
)
FIELDS5 = {
    "temperature": 29.455,
    "humidity": 76.38,
    "pressure": 100631.0,
    "acceleration_x": 1020,
    "acceleration_y": -208,
    "acceleration_z": -8,
    "battery_voltage": 2784,
    "tx_power": 4,
    "movement_counter": 183,
    "measurement_sequence_number": 38282,
    "rssi": -70,
}
TAGS5 = {"mac": "aa:bb:cc:01:02:03", "gateway": "aa:cc:ee:00:11:22", "data_format": "5"}


def rg_msg(middle: str, extra: str = "") -> bytes:
    return f'{{"gw_mac":"{GW}","rssi":-70,"aoa":[],{middle}{extra},"coords":"170.112233,59.445566"}}'.encode()


@pytest.mark.parametrize(
    "payload",
    [
        rg_msg(f'"gwts":1612358920,"ts":1612358929,"data":"{RAW5}"'),  # ruuvi_raw, int timestamps (current fw)
        rg_msg(f'"gwts":"1612358920","ts":"1612358929","data":"{RAW5}"'),  # string timestamps (docs, old fw)
        rg_msg(f'"gwts":1612358920,"ts":1612358929,"data":"{RAW5}",', DECODED5),  # ruuvi_raw_and_decoded
        rg_msg('"gwts":1612358920,"ts":1612358929,', DECODED5),  # ruuvi_decoded: no "data"
    ],
    ids=["raw-int-ts", "raw-string-ts", "raw-and-decoded", "decoded-only"],
)
def test_ruuvi_gateway_shapes(payload: bytes) -> None:
    got = rg.parse(TOPIC, payload)
    # ts has whole seconds: the sequence number (38282) tells the measurements of one second apart, in nanoseconds.
    expected = Point("ruuvi", TAGS5, FIELDS5, 1612358929 * 10**9 + 38282)
    assert got == Parsed(points=[expected], gateway="aa:cc:ee:00:11:22")


def test_ruuvi_gateway_time_choice() -> None:
    only_gwts = rg.parse(TOPIC, rg_msg(f'"gwts":1612358920,"data":"{RAW5}"'))
    assert only_gwts.points[0].time_ns == 1612358920 * 10**9 + 38282
    # No clock on the gateway: "cnt" instead of timestamps; the receive time is the only time there is.
    no_clock = rg.parse(TOPIC, rg_msg(f'"cnt":1011,"data":"{RAW5}"'), received_ns=NOW)
    assert no_clock.points[0].time_ns == NOW


def test_ruuvi_gateway_df6() -> None:
    raw6 = "020106030398FC17FF990406146457F8C79D001D03263A01146B05D04EB272"
    got = rg.parse(TOPIC, rg_msg(f'"gwts":1612358920,"ts":1612358929,"data":"{raw6}"'))
    [p] = got.points
    assert p.time_ns == 1612358929 * 10**9 + 5
    assert p.tags["data_format"] == "6"
    assert p.fields == {
        "temperature": 26.1,
        "humidity": 56.3,
        "pressure": 101101.0,
        "measurement_sequence_number": 5,
        "pm2_5": 2.9,
        "co2": 806,
        "voc_index": 117,
        "nox_index": 3,
        "luminosity": 1.39,
        "sound_average_dba": 61.0,
        "calibration_in_progress": False,
        "button_pressed": False,
        "rtc_running_on_boot": False,
        "rssi": -70,
    }


def df5_advert(seq: int, temperature_raw: int = 0x1203) -> str:
    """A Ruuvi Gateway `data` hex of a DF5 advert with this sequence number (and raw temperature)."""
    body = bytes.fromhex("0512fc5394c37c0004fffc040cac364200cdcbb8334c884f")
    body = bytes([5]) + temperature_raw.to_bytes(2, "big") + body[3:16] + seq.to_bytes(2, "big") + body[18:]
    return ("0201061BFF9904" + body.hex()).upper()


DF3_RAW = "02010611FF990403291A1ECE1EFC18F94202CA0B53"


def test_ruuvi_gateway_same_second_measurements_are_distinct_points() -> None:
    """Three measurements of one tag within one `ts` second: three timestamps, in sequence order, within the second.
    Copies of one measurement (a re-delivery; a repeated advert with another RSSI) keep its timestamp."""
    msgs = [rg_msg(f'"ts":1612358929,"data":"{df5_advert(seq, 0x1203 + seq)}"') for seq in (700, 701, 702)]
    times = [rg.parse(TOPIC, m).points[0].time_ns for m in msgs]
    assert times == [1612358929 * 10**9 + 700, 1612358929 * 10**9 + 701, 1612358929 * 10**9 + 702]
    assert rg.parse(TOPIC, msgs[1]).points[0].time_ns == times[1]
    other_rssi = msgs[1].replace(b'"rssi":-70', b'"rssi":-88')
    assert rg.parse(TOPIC, other_rssi).points[0].time_ns == times[1]
    # The largest sequence number of any format (E1: 24 bits) still stays within its second.
    assert rg._within_second({"measurement_sequence_number": (1 << 24) - 1}) < 17_000_000


def test_ruuvi_gateway_same_second_without_a_sequence_number() -> None:
    """Format 3 has no sequence number: a hash of the values spreads distinct measurements within the first
    millisecond, deterministically (the same in every process); identical values map to one point."""
    first = rg.parse(TOPIC, rg_msg(f'"ts":1612358929,"data":"{DF3_RAW}"')).points[0]
    assert first.tags["data_format"] == "3"
    assert "measurement_sequence_number" not in first.fields
    warmer = DF3_RAW[:18] + "2A" + DF3_RAW[20:]  # temperature byte 0x1A -> 0x2A
    second = rg.parse(TOPIC, rg_msg(f'"ts":1612358929,"data":"{warmer}"')).points[0]
    base = 1612358929 * 10**9
    assert base <= first.time_ns < base + 1_000_000 and base <= second.time_ns < base + 1_000_000
    assert first.time_ns != second.time_ns
    assert (first.fields["temperature"], second.fields["temperature"]) == (26.3, 42.3)
    again = rg.parse(TOPIC, rg_msg(f'"ts":1612358929,"data":"{DF3_RAW}"', "").replace(b"-70", b"-60")).points[0]
    assert again.time_ns == first.time_ns
    assert first.time_ns == base + 32714  # crc32 of the values, not hash(): the same in every receiver process


def test_ruuvi_gateway_status() -> None:
    got = rg.parse(f"ruuvi/{GW}/gw_status", b'{"state": "online"}', received_ns=NOW)
    assert got == Parsed(
        points=[], status=GatewayStatus("aa:cc:ee:00:11:22", "online", NOW), gateway="aa:cc:ee:00:11:22"
    )
    off = rg.parse(f"ruuvi/{GW}/gw_status", b'{"state":"offline"}', received_ns=NOW)
    assert off.status == GatewayStatus("aa:cc:ee:00:11:22", "offline", NOW)


def test_ruuvi_gateway_relays_a_non_ruuvi_advert_without_error() -> None:
    apple = "1AFF4C000215" + "00" * 21  # iBeacon-style manufacturer data, company 0x004C
    got = rg.parse(TOPIC, rg_msg(f'"ts":1612358929,"data":"0201061A{apple[2:]}"'))
    assert got == Parsed(points=[], gateway="aa:cc:ee:00:11:22")


_NA = {0: -32768, 1: 0xFFFF, 2: 0xFFFF, 3: -32768, 4: -32768, 5: -32768, 8: 0xFF, 9: 0xFFFF}  # DF5 "not available"


@st.composite
def df5_adverts(draw: st.DrawFn) -> str:
    """A DF5 advert in Ruuvi Gateway's `data`, each value at random or "not available" (voltage and tx power
    apart), in either case of hex digits."""
    layout = struct.Struct(">BhHHhhhHBH6s")
    ranges = [(-32768, 32767), (0, 0xFFFF), (0, 0xFFFF), (-32768, 32767), (-32768, 32767), (-32768, 32767),
              (0, 0xFFFF), (0, 0xFF), (0, 0xFFFF)]
    values = [draw(st.sampled_from([_NA[i]]) | st.integers(lo, hi)) if i in _NA else draw(st.integers(lo, hi))
              for i, (lo, hi) in enumerate(ranges)]
    power = draw(st.sampled_from([0xFFFF, 2047 << 5, 31, (1377 << 5) | 22]) | st.integers(0, 0xFFFF))
    values[6] = power
    payload = layout.pack(5, *values, draw(st.binary(min_size=6, max_size=6)))
    text = (bytes.fromhex("0201061BFF9904") + payload).hex()
    return text.upper() if draw(st.booleans()) else text


def parse_or_reason(payload: bytes) -> Parsed | str:
    try:
        return rg.parse(TOPIC, payload, received_ns=NOW)
    except InvalidMessage as e:
        return str(e)


@settings(max_examples=400, deadline=None)
@given(data=df5_adverts(), rssi=st.sampled_from(["-70", "-70.0", "null", "0", "true", '"-70"']),
       clock=st.sampled_from(['"ts":1612358929', '"gwts":"1612358920"', '"cnt":7', '"ts":null,"gwts":1612358920',
                              '"ts":-5', '"ts":true', '"gwts":1612358920,"ts":1612358929', '"ts":1.5']),
       extra=st.sampled_from(["", ',"coords":""', ',"gw_mac":"AA:CC:EE:00:11:23"', ',"data":5', ',"x":[1,{"y":2}]',
                              ',"gw_mac":null']))
def test_ruuvi_gateway_df5_fast_path_gives_what_the_general_path_gives(data: str, rssi: str, clock: str,
                                                                      extra: str) -> None:
    """parse() reads the usual message with msgspec into _UsualAdvert and decodes its DF5 advert with _df5_fields(),
    without orjson's dict, core.ruuvi.decode and the converter, for speed. The point (fields, their types and order,
    time, tags), or the reason it is refused, must be the very same as the general path's; a key given twice counts
    as it does in orjson (the last one)."""
    payload = f'{{"gw_mac":"{GW}","rssi":{rssi},"aoa":[],{clock},"data":"{data}"{extra}}}'.encode()
    fast = parse_or_reason(payload)
    with mock.patch.object(rg, "_df5_fields", lambda data: None):
        general = parse_or_reason(payload)
    assert fast == general
    if isinstance(fast, str) or isinstance(general, str):
        return
    assert [type(v) for p in fast.points for v in p.fields.values()] == \
        [type(v) for p in general.points for v in p.fields.values()]
    assert [list(p.fields) for p in fast.points] == [list(p.fields) for p in general.points]
    if fast.points and "temperature" in fast.points[0].fields:
        assert rg._df5_fields(data) is not None  # the fast path was taken


def test_ruuvi_gateway_usual_message_takes_the_fast_path() -> None:
    payload = rg_msg(f'"gwts":1612358920,"ts":1612358929,"data":"{RAW5}"')
    rg.parse(TOPIC, payload)  # the topic's MAC is now known
    with mock.patch.object(rg, "load_object", side_effect=AssertionError("the general path")):
        got = rg.parse(TOPIC, payload)
    assert got == Parsed(points=[Point("ruuvi", TAGS5, FIELDS5, 1612358929 * 10**9 + 38282)],
                         gateway="aa:cc:ee:00:11:22")


def test_ruuvi_gateway_deep_nesting_gets_the_general_paths_reason() -> None:
    """msgspec raises RecursionError (not DecodeError) for deep nesting: the fast path must still hand the message
    to the general path, whose reason names it."""
    rg.parse(TOPIC, rg_msg(f'"ts":1612358929,"data":"{RAW5}"'))  # the topic's MAC is known: the fast path is tried
    with pytest.raises(InvalidMessage, match="malformed JSON: depth limit exceeded"):
        rg.parse(TOPIC, b'{"gw_mac":"AA:CC:EE:00:11:22","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}")


def test_ruuvi_gateway_df5_fast_path_leaves_other_data_to_the_general_path() -> None:
    assert rg._df5_fields(RAW5) is not None
    assert rg._df5_fields(RAW5.lower()) is not None
    for other in (" " + RAW5[1:], RAW5[:60] + "zz", RAW5[:14] + "06" + RAW5[16:], RAW5[:20] + " " + RAW5[21:],
                  "0x" + RAW5[2:], RAW5[:4] + "07" + RAW5[6:], DF3_RAW, RAW5[:61]):
        assert rg._df5_fields(other) is None, other
    everything_na = "0201061BFF990405" + "8000FFFFFFFF800080008000FFFFFFFFFF" + "00" * 6
    assert rg._df5_fields(everything_na) is None
    assert rg.parse(TOPIC, rg_msg(f'"ts":1,"data":"{everything_na}"')).points[0].fields == {"rssi": -70}


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        (TOPIC, rg_msg(f'"data":"{RAW5}"'), "no timestamp: none of 'ts', 'gwts', 'cnt'"),
        (TOPIC, rg_msg(f'"ts":"16123x","data":"{RAW5}"'), "'ts' must be Unix seconds"),
        (TOPIC, rg_msg(f'"ts":-5,"data":"{RAW5}"'), "'ts' must be Unix seconds"),
        (TOPIC, rg_msg('"ts":1,"data":"0201061BFF990405"'), "undecodable 'data'"),
        (TOPIC, rg_msg('"ts":1,"data":"XYZ"'), "undecodable 'data': not a hex string"),
        (TOPIC, rg_msg('"ts":1,"data":5'), "'data' must be a hex string"),
        (TOPIC, rg_msg('"ts":1'), "neither 'data' nor decoded values"),
        (TOPIC, b'{"rssi":-70,"ts":1}', "'gw_mac' must be a string"),
        (f"ruuvi/{GW}/not-a-mac", rg_msg(f'"ts":1,"data":"{RAW5}"'), "is not a MAC address"),
        (f"ruuvi/{GW}/gw_status", b'{"state":"sleeping"}', "gw_status state 'sleeping'"),
        (TOPIC, rg_msg('"ts":1,', '"dataFormat":5,"accelX":"1.0"'), "'accelX' must be a number"),
    ],
)
def test_ruuvi_gateway_invalid(topic: str, payload: bytes, reason: str) -> None:
    with pytest.raises(InvalidMessage) as e:
        rg.parse(topic, payload)
    assert reason in str(e.value)


# ---- flat ---------------------------------------------------------------------------------------------------


def test_flat_sensor() -> None:
    payload = (
        b'{"sensor_id":"attic-1","temperature":21,"humidity":40.5,"pressure":1013.25,"location":"attic",'
        b'"timestamp":"2025-11-23T16:00:00.123456Z","ok":true,"note":"ignored","nested":{"x":1}}'
    )
    got = flat_fmt.parse("sensors/attic-1", payload)
    assert got == Parsed(
        points=[
            Point(
                "ruuvi",
                {"mac": "attic-1", "data_format": "flat", "location": "attic"},
                {"temperature": 21.0, "humidity": 40.5, "pressure": 1013.25, "ok": True},
                1_763_913_600_123_456_000,
            )
        ]
    )


def test_flat_fields_take_the_schema_types() -> None:
    """One type per field whatever format wrote it: a field the ruuvi schema knows takes the schema's type (the
    integers stay integers), any other number is a float, booleans stay booleans."""
    payload = (
        b'{"temperature":21,"battery_voltage":2977,"rssi":-70.0,"co2":412,"movement_counter":3,'
        b'"button_pressed":true,"co2_ppm":412,"door_open":false,"acceleration_x":null}'
    )
    [p] = flat_fmt.parse("sensors/s", payload, received_ns=NOW).points
    assert p.fields == {
        "temperature": 21.0,
        "battery_voltage": 2977,
        "rssi": -70,
        "co2": 412,
        "movement_counter": 3,
        "button_pressed": True,
        "co2_ppm": 412.0,
        "door_open": False,
    }
    assert [type(v) for v in p.fields.values()] == [float, int, int, int, int, bool, float, bool]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"battery_voltage":2.95}', "field 'battery_voltage' must be an integer, got 2.95"),
        (b'{"rssi":true}', "field 'rssi' must be an integer, got True"),
        (b'{"temperature":false}', "field 'temperature' must be a number, got bool"),
        (b'{"button_pressed":1}', "field 'button_pressed' must be a boolean, got int"),
    ],
)
def test_flat_refuses_a_second_type_for_a_schema_field(payload: bytes, reason: str) -> None:
    with pytest.raises(InvalidMessage) as e:
        flat_fmt.parse("sensors/s", payload)
    assert str(e.value) == reason


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ('"2025-11-23T16:00:00"', 1_763_913_600 * 10**9),  # no zone: UTC
        ('"2025-11-23T18:00:00+02:00"', 1_763_913_600 * 10**9),
        ("1763913600.5", 1_763_913_600_500_000_000),
        ("null", NOW),  # no clock: the receive time
    ],
)
def test_flat_timestamps(ts: str, expected: int) -> None:
    got = flat_fmt.parse("sensors/s", f'{{"temperature":1,"timestamp":{ts}}}'.encode(), received_ns=NOW)
    assert got.points[0].time_ns == expected


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"sensor_id":"other","temperature":1}', "sensor_id 'other' differs from 's'"),
        (b'{"temperature":1,"timestamp":"yesterday"}', "timestamp 'yesterday' is not ISO 8601"),
        (b'{"temperature":1,"timestamp":[1]}', "timestamp must be ISO 8601 or Unix seconds"),
        (b'{"location":"x"}', "no numeric or boolean values"),
        (b'{"temperature":1,"location":5}', "'location' must be a string"),
        (b'{"temperature":1e999}', "malformed JSON"),
    ],
)
def test_flat_invalid(payload: bytes, reason: str) -> None:
    with pytest.raises(InvalidMessage) as e:
        flat_fmt.parse("sensors/s", payload)
    assert reason in str(e.value)


# ---- Router -------------------------------------------------------------------------------------------------


def test_router_picks_the_parser_by_topic() -> None:
    r = Router(clock=lambda: NOW)
    assert r.route("edge-gw/pi-kitchen/batch", orjson.dumps(batch())).points[0].tags["gateway"] == "pi-kitchen"
    assert r.route("edge-gw/g/status", b'{"v":1,"gateway":"g","state":"online"}').status == GatewayStatus(
        "g", "online", NOW
    )
    assert r.route(f"ruuvi/{GW}/gw_status", b'{"state":"online"}').gateway == "aa:cc:ee:00:11:22"
    ts = NOW // 10**9
    assert r.route(TOPIC, rg_msg(f'"ts":{ts},"data":"{RAW5}"')).points[0].time_ns == ts * 10**9 + 38282
    assert r.route("sensors/x", b'{"temperature":1}').points[0].time_ns == NOW
    assert r.format_of("edge-gw/dlq") is None


def test_router_rejections() -> None:
    r = Router(FormatsConfig(max_payload_bytes=1000, max_age_s=3600, max_ahead_s=60), clock=lambda: NOW)
    with pytest.raises(InvalidMessage, match="no input format configured for topic 'other/x'"):
        r.route("other/x", b"{}")
    with pytest.raises(InvalidMessage, match="payload of 1001 bytes exceeds 1000"):
        r.route("sensors/x", b" " * 1001)
    # A message of one reading with a timestamp out of bounds: that reading is refused, the payload is its record.
    old = NOW // 10**9 - 3601
    msg = f'{{"temperature":1,"timestamp":{old}}}'.encode()
    parsed = r.route("sensors/x", msg)
    assert parsed.points == []
    assert parsed.refused == [Refused(msg, f"timestamp {old * 10**9} is outside [now - 3600 s, now + 60 s]: 3601 s old",
                                      "too_old")]
    ahead = NOW // 10**9 + 61
    msg = f'{{"temperature":1,"timestamp":{ahead}}}'.encode()
    parsed = r.route("sensors/x", msg)
    assert (parsed.points, [(x.payload, x.kind) for x in parsed.refused]) == ([], [(msg, "ahead")])
    assert parsed.refused[0].reason.endswith(": 61 s ahead of the receiver")
    # The received time may be passed in (the receiver's receive time), and wins over the clock.
    assert r.route("sensors/x", b'{"temperature":1}', received_ns=NOW - 5).points[0].time_ns == NOW - 5


def test_router_configurable_topics() -> None:
    cfg = FormatsConfig(edge=("site/+/up/#",), ruuvi_gateway=("gw/#",), flat=(), measurement="env")
    r = Router(cfg, clock=lambda: NOW)
    assert cfg.filters() == [("site/+/up/#", "edge"), ("gw/#", "ruuvi_gateway")]
    assert r.format_of("site/a/up/x/batch") == "edge"
    assert r.format_of("sensors/x") is None
    got = r.route("site/x/up/pi-kitchen/batch", orjson.dumps(batch()))
    assert got.points[0].measurement == "env"


@pytest.mark.parametrize(
    ("flt", "topic", "match"),
    [
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a/b/c/d", False),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("+/b", "$SYS/b", False),
        ("#", "$SYS/x", False),
        ("a/b", "a/b", True),
        ("a/b", "a/c", False),
        ("a/+", "a/", True),
    ],
)
def test_topic_matches(flt: str, topic: str, match: bool) -> None:
    assert topic_matches(flt, topic) is match


@pytest.mark.parametrize(
    ("topic", "payload", "seq"),
    [
        ("edge-gw/g/batch", b'{"v":2,"seq":17}', 17),
        ("edge-gw/g/batch", b'{"v":1,"gateway":"other","seq":0,"readings":[]}', 0),
        ("edge-gw/g/batch", b'{"seq":9007199254740991,"x":NaN}', None),  # not JSON: the seq can't be trusted
        ("edge-gw/g/batch", b'{"seq":9007199254740992}', None),
        ("edge-gw/g/batch", b'{"seq":-1}', None),
        ("edge-gw/g/batch", b'{"seq":"5"}', None),
        ("edge-gw/g/batch", b'{"seq":5.0}', None),
        ("edge-gw/g/batch", b'{"seq":true}', None),
        ("edge-gw/g/batch", b"[5]", None),
        ("edge-gw/g/status", b'{"seq":5}', None),
    ],
)
def test_the_seq_of_a_batch_that_fails_to_parse(topic: str, payload: bytes, seq: int | None) -> None:
    assert edge_fmt.batch_seq(topic, payload) == seq
