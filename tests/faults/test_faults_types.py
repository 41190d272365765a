"""Field types and timestamps on the cloud side (issue 17, items 3 and 5), on the real pipeline.

14: flat-sensor messages reach an empty shard first, then an edge gateway streams into the same shard: every field
has one type whatever format wrote it, so every point of both is stored.
15: a Ruuvi Gateway relays several measurements of each tag within one second of its whole-second `ts`, and some of
them twice: every distinct measurement is one point, its copies map to that same point.
"""

from __future__ import annotations

import datetime
import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from faults_pipeline import Outcome, Pipeline, assert_exact, compare, finish, wait_until
from paho.mqtt.enums import CallbackAPIVersion

from cloud.formats._common import BOOL_FIELDS, FLOAT_FIELDS, INT_FIELDS
from edge.sources import encode

Record = Callable[[Outcome], None]
MakePipeline = Callable[..., Pipeline]

pytestmark = pytest.mark.slow

S = 1_000_000_000


class Publisher:
    """QoS 1 publishes that return once the broker acknowledged every one."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fault-types-publisher")
        self.client.max_inflight_messages_set(100)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish(self, messages: Iterable[tuple[str, bytes]]) -> int:
        infos = [self.client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(60)
            assert info.is_published()
        return len(infos)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def query(p: Pipeline, q: str) -> list[list[Any]]:
    params = urllib.parse.urlencode({"q": q, "db": "ruuvi", "epoch": "ns"})
    with urllib.request.urlopen(f"{p.influxd.url}/query?{params}", timeout=60) as r:
        res = json.loads(r.read())
    assert "error" not in res["results"][0], res
    return [v for s in res["results"][0].get("series", []) for v in s["values"]]


def field_types(p: Pipeline) -> dict[str, list[str]]:
    """Every field key of raw.ruuvi with every type the database holds for it (several would be a conflict)."""
    out: dict[str, list[str]] = {}
    for key, kind in query(p, 'SHOW FIELD KEYS FROM "raw"."ruuvi"'):
        out.setdefault(key, []).append(kind)
    return out


def schema_type(key: str) -> str:
    """docs/wire-format.md "InfluxDB types"; the flat sensors' own key here is `door_open`, a boolean."""
    if key in FLOAT_FIELDS:
        return "float"
    if key in INT_FIELDS:
        return "integer"
    assert key in BOOL_FIELDS or key == "door_open", key
    return "boolean"


def one_shard_ahead(margin_s: float = 180.0) -> None:
    """The raw policy (90 d) has one-day shards: wait out a UTC midnight that would fall inside the scenario."""
    now = datetime.datetime.now(datetime.UTC)
    midnight = (now + datetime.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    left = (midnight - now).total_seconds()
    if left < margin_s:
        time.sleep(left + 2)


def flat_messages(sensors: int, per_sensor: int, t0_s: int) -> tuple[list[tuple[str, bytes]], set[tuple[str, int]]]:
    """Flat JSON as a non-Ruuvi device sends it: integers as floats (2977.0), floats as integers (21), no sequence
    number. Returns the messages and the (sensor, time_ns) of each point they make."""
    msgs: list[tuple[str, bytes]] = []
    want: set[tuple[str, int]] = set()
    for k in range(per_sensor):
        for s in range(sensors):
            t = t0_s + k
            body = {"sensor_id": f"flat-{s}", "temperature": 20 + (k + s) % 5, "humidity": 40.5, "pressure": 101325,
                    "battery_voltage": 2977.0 - k, "rssi": -60.0 - s, "acceleration_x": 4, "movement_counter": k,
                    "tx_power": 4, "door_open": k % 2 == 0, "timestamp": t}
            msgs.append((f"sensors/flat-{s}", json.dumps(body).encode()))
            want.add((f"flat-{s}", t * S))
    return msgs, want


def test_flat_first_then_edge_in_one_shard(make_pipeline: MakePipeline, record: Record) -> None:
    started = time.monotonic()
    one_shard_ahead()
    p = make_pipeline()
    pub = Publisher(p.broker.port)
    try:
        flat, flat_want = flat_messages(20, 25, int(time.time()) - 120)
        pub.publish(flat)
    finally:
        pub.close()
    wait_until(lambda: len(query(p, "SELECT temperature FROM raw.ruuvi WHERE data_format = 'flat'")) == 500, 60,
               "the flat points stored")
    # The flat points set the shard's types first: the edge readings must find the schema's integers there.
    first = field_types(p)
    assert first["battery_voltage"] == ["integer"] and first["rssi"] == ["integer"], first

    gw = p.gateway("gw-types")
    gw.start(seed=141, tags=20, rate=1000)
    wait_until(lambda: p.count_stored() >= 3000, 60, "3000 edge readings stored")
    outcomes: list[Outcome] = []
    edge, _ = finish(p, outcomes.append, "14-field-types", started)

    rows = query(p, "SELECT temperature, mac FROM raw.ruuvi WHERE data_format = 'flat'")
    flat_have = [(mac, int(t)) for t, _temp, mac in rows]
    shards = [r for r in query(p, "SHOW SHARDS") if r[1] == "ruuvi" and r[2] == "raw"]
    types = field_types(p)
    assert p.receiver is not None
    dead = p.receiver.status().get("dead_letters")
    outcome = Outcome(
        "14-field-types", edge.sent + len(flat_want), edge.stored + len(flat_have), 0,
        lost=edge.lost + len(flat_want - set(flat_have)),
        duplicated=edge.duplicated + len(set(flat_have) - flat_want) + len(flat_have) - len(set(flat_have)),
        seconds=time.monotonic() - started,
        note=f"{len(flat_want)} flat-sensor points written first, then {edge.sent} edge readings, one shard "
             f"({len(shards)}); no field type conflict, {dead} dead letters")
    record(outcome)
    assert len(shards) == 1, shards
    assert dead == 0
    assert types == {k: [schema_type(k)] for k in types}, types
    assert "door_open" in types and "measurement_sequence_number" in types
    assert_exact(outcome)


def advert(tag: int, seq: int, temperature: float) -> str:
    payload = encode.df5(temperature=temperature, humidity=40.0, pressure=100044, acceleration=(4, -4, 1036),
                         battery_voltage=2977, tx_power=4, movement_counter=7, sequence=seq, mac=tag_mac(tag))
    return (bytes([0x02, 0x01, 0x06, len(payload) + 3, 0xFF, 0x99, 0x04]) + payload).hex().upper()


def tag_mac(tag: int) -> bytes:
    return bytes([0xC0, 0xFF, 0xEE, 0x00, 0x15, tag])


def mac_text(tag: int) -> str:
    return ":".join(f"{b:02X}" for b in tag_mac(tag))


def test_ruuvi_gateway_measurements_in_the_same_second(make_pipeline: MakePipeline, record: Record) -> None:
    started = time.monotonic()
    p = make_pipeline()
    gw_mac = "C8:25:2D:8E:9C:2C"
    tags, seconds, per_second = 10, 30, 3
    t0_s = int(time.time()) - 600
    originals: list[tuple[str, bytes]] = []
    again: list[tuple[str, bytes]] = []  # the same measurement once more: a re-delivery, or a repeated advert
    want: set[tuple[str, int, int]] = set()
    n = 0
    for s in range(seconds):
        for k in range(per_second):
            for tag in range(tags):
                seq = s * per_second + k
                body = {"gw_mac": gw_mac, "rssi": -60 - tag, "aoa": [], "gwts": t0_s + s, "ts": t0_s + s,
                        "data": advert(tag, seq, 20 + 0.25 * seq), "coords": ""}
                msg = (f"ruuvi/{gw_mac}/{mac_text(tag)}", json.dumps(body).encode())
                originals.append(msg)
                want.add((mac_text(tag).lower(), seq, (t0_s + s) * S + seq))
                n += 1
                if n % 5 == 0:
                    again.append(msg)  # byte for byte
                if n % 7 == 0:
                    again.append((msg[0], json.dumps({**body, "rssi": -90}).encode()))  # heard again, weaker
    pub = Publisher(p.broker.port)
    try:
        # Some copies right behind their original (one batch), the rest once everything is stored.
        pub.publish(originals[:450] + again[: len(again) // 2] + originals[450:])
        wait_until(lambda: p.count_stored() >= len(want), 60, "every measurement stored")
        pub.publish(again[len(again) // 2 :])
    finally:
        pub.close()
    p.wait_receiver_idle()
    time.sleep(1.0)  # the late copies are written (or dropped) by now: a duplicate would show
    p.wait_receiver_idle()
    stored = p.stored()
    outcome = compare("15-ruuvi-gateway-same-second", len(want), {gw_mac.lower(): want}, stored, started)
    seconds_used = {t // S for _gw, _mac, _seq, t in stored}
    outcome.note = (f"{tags} tags x {per_second} measurements per `ts` second x {seconds} s; {len(again)} copies "
                    f"sent again ({len(again) - len(again) // 2} after the originals were stored), none stored twice")
    record(outcome)
    assert len(seconds_used) == seconds
    assert_exact(outcome)
