"""`cloud-ingest run` (a subprocess) against a real Mosquitto and influxd, fed every kind of bad message on every
topic form it subscribes to: each one becomes exactly one dead-letter record naming the reason, the counters
move by exactly that many, nothing dies, and the good messages sent after them are all written."""

from __future__ import annotations

import base64
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
from badinput_support import (
    Publisher,
    ReceiverProcess,
    S,
    Subscriber,
    edge_batch,
    influx_count,
    reading,
    ruuvi_message,
    wait_until,
)
from servers import free_port

LIMIT = 200_000  # formats.max_payload for this test, well under the broker's max_packet_size of 1 MiB
BROKER_LIMIT = 1_048_576

# Payloads that are bad whatever the topic, with the start of the reason each must get.
GENERIC: dict[str, tuple[bytes, str]] = {
    "malformed": (b'{"v":1,"gateway":', "malformed JSON: unexpected end of data"),
    "deep_list": (b"[" * 100_000, "malformed JSON: depth limit exceeded"),
    "deep_object": (b'{"a":' * 39_000, "malformed JSON: depth limit exceeded"),  # 195,000 bytes: under LIMIT
    "invalid_utf8": (b'{"v":1,"gateway":"\xff\xfe"}', "malformed JSON: str is not valid UTF-8"),
    "nan": (b'{"v":1,"temperature":NaN}', "malformed JSON: unexpected character"),
    "infinity": (b'{"v":Infinity,"temperature":-Infinity}', "malformed JSON: unexpected character"),
    "overflow": (b'{"v":1,"temperature":1e999}', "malformed JSON: number is infinity"),
    "empty": (b"", "malformed JSON: Input is a zero-length, empty document"),
    "junk": (b"\xff" + random.Random(4).randbytes(4095), "malformed JSON: str is not valid UTF-8"),
    "array": (b"[1,2,3]", "JSON payload is a list, not an object"),
    "over_limit": (b" " * (LIMIT + 1), f"payload of {LIMIT + 1} bytes exceeds {LIMIT}"),
}


def topics(case: int) -> dict[str, str]:
    """Every topic form the receiver subscribes to, with a level unique to the case, so that each dead-letter
    record names the message it came from."""
    return {
        "edge_batch": f"edge-gw/bad-{case}/batch",
        "edge_status": f"edge-gw/bad-{case}/status",
        "ruuvi_tag": f"ruuvi/AA:BB:CC:DD:{case >> 8:02X}:{case & 0xFF:02X}/C0:FF:EE:00:00:01",
        "ruuvi_status": f"ruuvi/AA:BB:CC:DD:{case >> 8:02X}:{case & 0xFF:02X}/gw_status",
        "flat": f"sensors/bad-{case}",
    }


def specific(now_ns: int) -> list[tuple[str, Callable[[str], bytes], str]]:
    """Wrong types and impossible timestamps, in the shape of each format: (topic form, payload for a topic,
    start of the reason)."""
    fields = reading(0xB0, 1, 1, now_ns).fields
    one = {"mac": "c0:ff:b0:00:00:01", "clock_synced": True, "rssi": -70, "data_format": 5,
           "raw": "0512fc5394c37c0004fffc040cac364200cdcbb8334c884f", "fields": fields}

    def edge(time_ns: int) -> Callable[[str], bytes]:
        return lambda topic: orjson.dumps({"v": 1, "gateway": topic.split("/")[1], "seq": 1,
                                           "readings": [{**one, "time_ns": time_ns}]})

    def ruuvi(ts: int) -> Callable[[str], bytes]:
        return lambda topic: orjson.dumps({**orjson.loads(ruuvi_message("AA:BB:CC:DD:EE:FF", bytes(6), 1, ts)[1]),
                                           "gw_mac": topic.split("/")[1]})

    def const(payload: bytes) -> Callable[[str], bytes]:
        return lambda topic: payload

    future_s, ancient_s = now_ns // S + 86_400, 1
    return [
        ("edge_batch", const(b'{"v":"1","gateway":5,"seq":[],"readings":{}}'), "unknown wire format version '1'"),
        ("edge_batch", edge(now_ns + 86_400 * S), f"timestamp {now_ns + 86_400 * S} is outside"),
        ("edge_batch", edge(1), "timestamp 1 is outside"),
        ("edge_batch", const(edge(now_ns)("edge-gw/other/batch")), "gateway 'other' in the payload differs from"),
        ("edge_status", lambda topic: orjson.dumps({"v": 1, "gateway": topic.split("/")[1], "state": 7}),
         "status state 7 is not online/offline"),
        ("ruuvi_tag", const(b'{"gw_mac":5,"data":123,"ts":"x"}'), "'gw_mac' must be a string, got int"),
        # A Ruuvi Gateway point's time is its ts plus the measurement sequence number (1 here) in ns.
        ("ruuvi_tag", ruuvi(future_s), f"timestamp {future_s * S + 1} is outside"),
        ("ruuvi_tag", ruuvi(ancient_s), f"timestamp {ancient_s * S + 1} is outside"),
        ("ruuvi_status", const(b'{"state":7}'), "gw_status state 7 is not online/offline"),
        ("flat", const(b'{"sensor_id":[1],"temperature":1.0}'), "sensor_id [1] differs from"),
        ("flat", const(b'{"temperature":1.0,"timestamp":"2999-01-01T00:00:00Z"}'), "timestamp 32472144000000000000"),
        ("flat", const(b'{"temperature":1.0,"timestamp":"1971-01-01T00:00:00Z"}'), "timestamp 31536000000000000"),
        # Found by test_badinput_parsers.py: the nanoseconds overflowed (OverflowError, "internal parser error").
        ("flat", const(b'{"temperature":1.0,"timestamp":-1e308}'), "timestamp -1e+308 is out of range"),
    ]


def padded_batch(gateway: str, readings: list[Any], size: int) -> bytes:
    """A valid edge batch made exactly `size` bytes long with an unknown key (receivers ignore unknown keys)."""
    body = orjson.loads(edge_batch(gateway, 1, readings))
    body["pad"] = ""
    short = size - len(orjson.dumps(body))
    body["pad"] = "x" * short
    out = orjson.dumps(body)
    assert len(out) == size
    return out


def test_bad_messages_on_every_topic_are_dead_lettered_and_good_ones_still_written(
        mosquitto: Any, influxd: Any, tmp_path: Path) -> None:
    influxd.query('CREATE DATABASE "ruuvi"', method="POST")
    now = time.time_ns()
    bad: dict[str, tuple[bytes, str]] = {}  # topic -> (payload, reason prefix)
    case = 0
    for payload, reason in GENERIC.values():
        for topic in topics(case).values():
            bad[topic] = (payload, reason)
        case += 1
    for form, build, reason in specific(now):
        topic = topics(case)[form]
        bad[topic] = (build(topic), reason)
        case += 1
    # Just under the limit: a good batch (written below); just over: dead-lettered.
    under = padded_batch("gw-under", [reading(0xA1, i, i, now - 30 * S + i) for i in range(50)], LIMIT)
    bad["edge-gw/gw-over/batch"] = (padded_batch("gw-over", [reading(0xA2, 0, 0, now - 30 * S)], LIMIT + 1),
                                    f"payload of {LIMIT + 1} bytes exceeds {LIMIT}")
    assert len(bad) == len(GENERIC) * 5 + 13 + 1
    rx = ReceiverProcess(tmp_path, mosquitto.url, f"{influxd.url}/ruuvi", free_port(),
                         f"formats.max_payload={LIMIT}", "batch.max_interval=100ms")
    try:
        rx.start()
        dlq = Subscriber(mosquitto.port, "edge-gw/dlq", "dlq-reader")
        pub = Publisher(mosquitto.port, "bad-publisher")
        pub.publish((topic, payload) for topic, (payload, _) in bad.items())
        # Over the broker's max_packet_size: Mosquitto drops the sender's connection and the message never
        # reaches the receiver (an MQTT 3.1.1 client, so paho does not refuse to send it first).
        big = Publisher(mosquitto.port, "huge-publisher", protocol=paho.MQTTv311)
        big.client.publish("edge-gw/gw-huge/batch", b"{" + b" " * BROKER_LIMIT + b"}", qos=1)
        wait_until(lambda: bool(big.disconnects), 10, "the broker to drop the oversized publisher")
        big.client.loop_stop()

        # Good traffic after all of that, on every data topic form.
        good: list[tuple[str, bytes]] = []
        for b in range(3):
            rs = [reading(0xA0, i, b, now - 20 * S + b * S + i) for i in range(100)]
            good.append(("edge-gw/gw-good/batch", edge_batch("gw-good", b, rs)))
        good.append(("edge-gw/gw-under/batch", under))
        good.append(("edge-gw/gw-good/status", b'{"v":1,"gateway":"gw-good","state":"online"}'))
        good += [ruuvi_message("AA:BB:CC:DD:EE:01", bytes([0xC0, 0xFF, 0xA3, 0, 0, i]), i, now // S - 10)
                 for i in range(20)]
        good += [(f"sensors/room-{i}", orjson.dumps({"temperature": 20 + i, "humidity": 40}))
                 for i in range(10)]
        good.append(("ruuvi/AA:BB:CC:DD:EE:01/gw_status", b'{"state":"online"}'))
        pub.publish(good)
        want_points = 300 + 50 + 20 + 10
        wait_until(lambda: influx_count(influxd.url) >= want_points and len(dlq.messages) >= len(bad), 30,
                   f"{want_points} points and {len(bad)} dead letters")
        time.sleep(0.5)  # anything extra would show up now
        assert influx_count(influxd.url) == want_points
        assert influx_count(influxd.url, "WHERE \"gateway\" = 'gw-good'") == 300
        assert influx_count(influxd.url, "WHERE \"gateway\" = 'gw-under'") == 50
        assert influx_count(influxd.url, "WHERE \"data_format\" = 'flat'") == 10

        records = [orjson.loads(p) for _, p in dlq.messages]
        assert sorted(r["topic"] for r in records) == sorted(bad)  # exactly one record per bad message
        for rec in records:
            payload, reason = bad[rec["topic"]]
            # A timestamp out of bounds refuses that reading alone (stage "reading"); an edge batch's record holds
            # the reading, the other formats' the message (it is the reading).
            stage = "reading" if reason.startswith("timestamp ") and "out of range" not in reason else "parse"
            if stage == "reading" and rec["topic"].endswith("/batch"):
                payload = orjson.dumps(orjson.loads(payload)["readings"][0])
            assert (rec["v"], rec["stage"], rec["receiver"]) == (1, stage, "badinput-rx")
            assert rec["reason"].startswith(reason) or reason in rec["reason"], (rec["topic"], rec["reason"])
            assert "\n" not in rec["reason"]
            assert rec["payload_size"] == len(payload)
            assert rec["truncated"] == (len(payload) > 65536)
            kept = payload[:65536]
            got = base64.b64decode(rec["payload"]) if rec["payload_encoding"] == "base64" else \
                rec["payload"].encode()
            assert got == kept or (rec["truncated"] and kept.startswith(got)), rec["topic"]
        assert {r["payload_encoding"] for r in records} == {"utf-8", "base64"}

        wait_until(lambda: (rx.status() or {}).get("dead_letters") == len(bad), 5, "status dead_letters")
        refused = sum(1 for r in records if r["stage"] == "reading")
        assert refused == 6  # the timestamps out of bounds, each a reading refused on its own
        assert rx.metric('cloud_ingest_dead_letters_total{stage="parse"}') == len(bad) - refused
        assert rx.metric('cloud_ingest_dead_letters_total{stage="reading"}') == refused
        assert rx.metric("cloud_ingest_points_written_total") == want_points
        assert rx.proc is not None and rx.proc.poll() is None  # still running
        assert mosquitto.proc.poll() is None
        pub.close()
        dlq.close()
    finally:
        code = rx.stop()
    assert code == 0  # and it shuts down cleanly
    assert "Client huge-publisher disconnected due to oversize packet." in mosquitto.log.read_text()
    rx_log = rx.log.read_text()
    assert "Traceback" not in rx_log
    # ...and warning lines naming topic and reason, at a bounded rate: the first at once, then one per 10 s at most
    # (each dead letter is counted and published all the same, as checked above).
    warned = [ln for ln in rx_log.splitlines() if " WARNING cloud.receiver: dead letter (parse) from " in ln
              or " WARNING cloud.receiver: dead letter (reading) from " in ln]
    assert 1 <= len(warned) <= 4, warned
    assert len(warned) < len(bad)
