"""The wire encoder: canonical bytes per docs/wire-format.md, and the stored-reading fast path builds the same bytes."""

from __future__ import annotations

import json

import orjson
import pytest

from core import ruuvi
from core.wire import WireError, batch_topic, status_payload, status_topic
from edge.model import Reading
from edge.store import StoredReading
from edge.wire import encode_batch, encode_stored_batch

DF5_HEX = "0512fc5394c37c0004fffc040cac364200cdcbb8334c884f"
DF6_HEX = "06170c5668c79e007000c90501d9ffcd004c884f"

GOLDEN = (
    b'{"v":1,"gateway":"pi-kitchen","seq":4711,"readings":['
    b'{"mac":"cb:b8:33:4c:88:4f","time_ns":1763913600123456789,"clock_synced":true,"rssi":-71,"data_format":5,'
    b'"raw":"0512fc5394c37c0004fffc040cac364200cdcbb8334c884f",'
    b'"fields":{"data_format":5,"temperature":24.3,"humidity":53.49,"pressure":100044,"acceleration_x":4,'
    b'"acceleration_y":-4,"acceleration_z":1036,"battery_voltage":2977,"tx_power":4,"movement_counter":66,'
    b'"measurement_sequence_number":205,"mac":"cb:b8:33:4c:88:4f"}},'
    b'{"mac":"d4:12:34:4c:88:4f","time_ns":1763913600987654321,"clock_synced":false,"rssi":null,"data_format":6,'
    b'"raw":"06170c5668c79e007000c90501d9ffcd004c884f",'
    b'"fields":{"data_format":6,"temperature":29.5,"humidity":55.3,"pressure":101102,'
    b'"measurement_sequence_number":205,"mac":"4c:88:4f","pm2_5":11.2,"co2":201,"voc_index":10,"nox_index":2,'
    b'"luminosity":13026.67,"sound_average_dba":120.0,"calibration_in_progress":false,"button_pressed":false,'
    b'"rtc_running_on_boot":false}}'
    b"]}"
)


def reading(mac: str, time_ns: int, synced: bool, rssi: int | None, hex_: str) -> Reading:
    raw = bytes.fromhex(hex_)
    return Reading(mac, time_ns, 5_000_000_000, synced, rssi, raw[0], raw, ruuvi.decode(raw))


def golden_readings() -> list[Reading]:
    return [
        reading("cb:b8:33:4c:88:4f", 1763913600123456789, True, -71, DF5_HEX),
        reading("d4:12:34:4c:88:4f", 1763913600987654321, False, None, DF6_HEX),
    ]


def stored(readings: list[Reading], first_id: int = 1) -> list[StoredReading]:
    return [
        StoredReading(first_id + i, r.mac, r.time_ns, r.clock_synced, r.rssi, r.data_format, r.raw,
               orjson.dumps(r.fields).decode())
        for i, r in enumerate(readings)
    ]


def test_encode_batch_golden_bytes() -> None:
    assert encode_batch("pi-kitchen", 4711, golden_readings()) == GOLDEN


def test_stored_fast_path_gives_identical_bytes() -> None:
    payload, n = encode_stored_batch("pi-kitchen", 4711, stored(golden_readings(), first_id=90))
    assert n == 2
    assert payload == GOLDEN


def test_golden_is_plain_json_in_documented_key_order() -> None:
    doc = json.loads(GOLDEN)
    assert list(doc) == ["v", "gateway", "seq", "readings"]
    assert [list(r) for r in doc["readings"]] == [
        ["mac", "time_ns", "clock_synced", "rssi", "data_format", "raw", "fields"]
    ] * 2
    assert doc["readings"][1]["rssi"] is None


def test_size_cap_splits_and_every_payload_fits() -> None:
    rows = stored([golden_readings()[0]] * 2000)
    one = len(encode_stored_batch("gw", 0, rows[:1])[0])
    cap = 10 * 1024
    sent = 0
    while sent < len(rows):
        payload, n = encode_stored_batch("gw", 7, rows[sent:], max_bytes=cap)
        assert len(payload) <= cap
        assert len(json.loads(payload)["readings"]) == n
        sent += n
    assert sent == 2000
    per_reading = one - len(b'{"v":1,"gateway":"gw","seq":0,"readings":[]}')
    # As many as fit: header + n readings + (n-1) commas <= cap.
    header = len(b'{"v":1,"gateway":"gw","seq":7,"readings":[]}')
    assert encode_stored_batch("gw", 7, rows, max_bytes=cap)[1] == (cap - header + 1) // (per_reading + 1)


def test_a_single_oversized_reading_still_goes_alone() -> None:
    rows = stored(golden_readings())
    payload, n = encode_stored_batch("gw", 0, rows, max_bytes=100)
    assert n == 1
    assert len(payload) > 100


def test_status_payloads_and_topics() -> None:
    assert status_payload("pi-kitchen", "online") == b'{"v":1,"gateway":"pi-kitchen","state":"online"}'
    assert status_payload("pi-kitchen", "offline") == b'{"v":1,"gateway":"pi-kitchen","state":"offline"}'
    assert batch_topic("edge-gw", "pi-kitchen") == "edge-gw/pi-kitchen/batch"
    assert status_topic("site/a", "gw.1") == "site/a/gw.1/status"


@pytest.mark.parametrize("gw", ["", "dlq", "a/b", "x" * 65, "a b", "ü", 'a"b'])
def test_bad_gateway_ids_are_refused(gw: str) -> None:
    with pytest.raises(WireError, match="gateway id"):
        encode_batch(gw, 0, golden_readings())


@pytest.mark.parametrize("prefix", ["ruuvi", "ruuvi/x", "a/#", "a/+/b", "/a", "a//b", ""])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(WireError, match="topic prefix"):
        batch_topic(prefix, "gw")


@pytest.mark.parametrize("mac", ["CB:B8:33:4C:88:4F", 'cb:b8:33:4c:88:4"', "cb:b8:33:4c:88", "cbb8334c884f"])
def test_bad_macs_are_refused_rather_than_spliced(mac: str) -> None:
    r = golden_readings()[0]
    r.mac = mac
    with pytest.raises(WireError, match="mac"):
        encode_batch("gw", 0, [r])


def test_empty_batch_and_negative_seq_are_refused() -> None:
    with pytest.raises(WireError):
        encode_batch("gw", 0, [])
    with pytest.raises(WireError):
        encode_stored_batch("gw", 0, [])
    with pytest.raises(WireError, match="seq"):
        encode_batch("gw", -1, golden_readings())
