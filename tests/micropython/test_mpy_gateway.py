"""The MicroPython gateway end to end inside the WebAssembly port: fake BLE adverts in, MQTT bytes out over a fake
socket, and those batches checked byte for byte against edge.wire.encode_batch and parsed by cloud-ingest."""

from __future__ import annotations

import json
import struct
from typing import Any

from mpy_harness import ROOT, MicroPython

from cloud.formats.edge_batch import parse
from core.ruuvi import decode
from core.wire import status_payload
from edge.model import Reading
from edge.wire import encode_batch

VECTORS = [v["hex"] for v in json.loads((ROOT / "tests" / "vectors" / "ruuvi.json").read_text()) if "expected" in v]

E2E = r"""
import json, time, socket, wire, gateway
from binascii import hexlify, unhexlify
from testkit import make, adv_data, mac, dump, record_json

hexes = json.load(open("/data/hexes.json"))
gw, ble = make()
logged = {}
chunks = wire.batch_chunks
def logging_chunks(gid, seq, records, buf):
    # note the records of each batch as they stream past (the gateway streams every batch twice)
    seen = logged[seq] = []
    def tap():
        for r in records:
            seen.append(record_json(r))
            yield r
    yield from chunks(gid, seq, tap(), buf)
gateway.wire.batch_chunks = logging_chunks

# Round 1, before NTP: every tag twice (the second is a duplicate), plus noise.
t0 = time.time_ns()
for i, h in enumerate(hexes):
    p = unhexlify(h)
    ble.inject(mac(i), -40 - i, adv_data(p, flags=i % 2 == 0))
    ble.inject(mac(i), -40 - i, adv_data(p))
    gw.poll_ble()  # the BLE task drains the IRQ queue every 100 ms
ble.inject(mac(900), -50, adv_data(b"\x02\x15" + bytes(21), company=b"\x4c\x00"))  # Apple iBeacon
ble.inject(mac(901), -50, adv_data(unhexlify(hexes[0])[:-1]))  # Ruuvi, one byte short
ble.inject(mac(902), -50, b"\x02\x01\x06\x1b\xff\x99")  # truncated AD structure
t1 = time.time_ns()
gw.poll_ble()
assert gw.ring.depth() == 0 and len(gw.pending) == len(hexes), gw.status_line()

await gw.uplink_step()  # Wi-Fi, NTP (stores the held-back readings), MQTT connect, status
gw.ring.flush()
while gw.ring.committed():
    await gw.uplink_step()

# Round 2, clock synced: only DF5 tags move on, the others repeat (duplicates).
for i, h in enumerate(hexes):
    p = bytearray(unhexlify(h))
    if p[0] == 5:
        p[17] ^= 0x55
    ble.inject(mac(i), -60, adv_data(bytes(p)))
    gw.poll_ble()
gw.ring.flush()
while gw.ring.committed():
    await gw.uplink_step()

s = gw.scanner
dump({"t0": t0, "t1": t1, "logged": [[k, logged[k]] for k in sorted(logged)],
      "adverts": s.adverts, "dups": s.duplicates, "bad": s.decode_errors,
      "tags": s.tags_seen(), "acked": gw.acked, "batches": gw.batches, "depth": gw.ring.depth(),
      "corrections": gw.clock.corrections, "status": gw.status_line(),
      "published": [[t, hexlify(p).decode(), q, r] for t, p, q, r in socket.BROKER.published],
      "connect": hexlify(socket.BROKER.connects[0]).decode()})
"""


def reading(rec: list[Any]) -> Reading:
    mac_hex, time_ns, synced, rssi, raw_hex = rec
    raw = bytes.fromhex(raw_hex)
    mac = ":".join(mac_hex[i : i + 2] for i in range(0, 12, 2))
    return Reading(mac, time_ns, 0, synced, rssi, raw[0], raw, decode(raw))


def test_batches_are_byte_identical_to_edge_wire_and_parse_in_cloud_ingest(mpy: MicroPython) -> None:
    hexes = VECTORS
    n = len(hexes)
    (out,) = mpy.run_json(E2E, files={"/data/hexes.json": json.dumps(hexes).encode()})
    n_df5 = sum(1 for h in hexes if h.startswith("05"))

    assert out["adverts"] == 2 * n + 1 + n  # the iBeacon and the truncated AD never reach the queue
    assert out["bad"] == 1
    assert out["dups"] == n + (n - n_df5)
    assert out["tags"] == n
    assert out["acked"] == n + n_df5
    assert out["depth"] == 0
    assert out["corrections"] == n  # every held-back reading got its time from the ticks

    published = out["published"]
    online = status_payload("esp32-1", "online")
    assert published[0] == ["edge-gw/esp32-1/status", online.hex(), 1, True]
    batches = [p for p in published if p[0] == "edge-gw/esp32-1/batch"]
    assert len(batches) == out["batches"] == len(out["logged"])
    assert [json.loads(bytes.fromhex(p[1]))["seq"] for p in batches] == list(range(len(batches)))
    assert all(p[2] == 1 and p[3] is False for p in batches)

    all_readings: list[Reading] = []
    for (seq, records), (topic, payload_hex, _qos, _retain) in zip(out["logged"], batches, strict=True):
        payload = bytes.fromhex(payload_hex)
        readings = [reading(r) for r in records]
        assert 1 <= len(readings) <= 7
        assert payload == encode_batch("esp32-1", seq, readings)
        ours = parse(topic, payload)
        assert ours.gateway == "esp32-1"
        assert ours.points == parse(topic, encode_batch("esp32-1", seq, readings)).points
        assert [p.time_ns for p in ours.points] == [r.time_ns for r in readings if r.fields.keys() - {"data_format"}]
        all_readings.extend(readings)

    # Held-back readings got the time they were heard, computed back from ticks after NTP.
    first_round = all_readings[:n]
    assert all(out["t0"] - 20_000_000 <= r.time_ns <= out["t1"] + 20_000_000 for r in first_round)
    assert all(r.clock_synced for r in all_readings)
    assert [r.raw.hex() for r in first_round] == hexes
    assert [r.rssi for r in first_round] == [-40 - i for i in range(n)]
    assert {r.rssi for r in all_readings[n:]} == {-60}

    # CONNECT: client id, will (offline, retained, QoS 1), username = gateway id, password, keepalive 30.
    body = bytes.fromhex(out["connect"])
    assert body[:7] == b"\x00\x04MQTT\x04"
    assert body[7] == 0x02 | 0x04 | 0x08 | 0x20 | 0x80 | 0x40
    assert struct.unpack(">H", body[8:10])[0] == 30

    def strings(b: bytes) -> list[bytes]:
        out: list[bytes] = []
        while b:
            n = struct.unpack(">H", b[:2])[0]
            out.append(b[2 : 2 + n])
            b = b[2 + n :]
        return out

    assert strings(body[10:]) == [
        b"esp32-1",
        b"edge-gw/esp32-1/status",
        status_payload("esp32-1", "offline"),
        b"esp32-1",
        b"s3cret",
    ]
    assert out["status"].startswith("buffer=0/128 pending=0 dropped=0 lost=0 last_ack=0s ago")
    assert " unconfirmed=0 oldest_unconfirmed=0s bad_confirms=0 " in out["status"]


RESEND = r"""
import socket
from ring import Ring
from testkit import make, adv_data, df5, mac, dump

gw, ble = make()
for i in range(3):
    ble.inject(mac(i), -70, adv_data(df5(100 + i)))
await gw.uplink_step()  # sync + connect; nothing committed yet
gw.poll_ble()
gw.ring.flush()
socket.BROKER.silent_after = 1  # the status gets its PUBACK, the batch does not
try:
    await gw.uplink_step()
    raise AssertionError("publish without PUBACK returned")
except Exception as e:
    error = repr(e)
kept = gw.ring.committed()
gw.drop_connection()
socket.BROKER.silent_after = None
await gw.uplink_step()  # reconnects, sends the same batch again
after = Ring("/ring.bin", 8192, 256)  # what a reboot would find
dump({"error": error, "kept": kept, "left": gw.ring.committed(), "errors": gw.publish_errors,
      "reboot": [after.head, after.tail, after.batch_seq],
      "published": [[t, p.decode(), q, r] for t, p, q, r in socket.BROKER.published]})
"""


def test_a_batch_without_puback_stays_in_the_ring_and_is_sent_again(mpy: MicroPython) -> None:
    (out,) = mpy.run_json(RESEND)
    assert out["error"].startswith("MQTTError(")
    assert out["kept"] == 3
    assert out["left"] == 0
    assert out["errors"] == 1
    # the acked position survives a reset, and a reboot starts after the reserved block of seqs
    assert out["reboot"] == [3, 3, 64]
    topics = [p[0].rsplit("/", 1)[1] for p in out["published"]]
    assert topics == ["status", "batch", "status", "batch"]
    first, again = json.loads(out["published"][1][1]), json.loads(out["published"][3][1])
    # the same readings under a new seq: duplicates are resolved by (mac, time_ns) downstream
    assert (first["seq"], again["seq"]) == (0, 1)
    assert first["readings"] == again["readings"]
    assert len(first["readings"]) == 3


WIFI = r"""
import time, network
from testkit import make, dump

network.WLAN.fail_connects = 1
gw, ble = make()
w = gw.wifi
import asyncio
a = await w.ensure(asyncio.sleep_ms)
b = await w.ensure(asyncio.sleep_ms)  # inside the backoff delay: no new attempt
attempts_then = w.attempts
delay = w.backoff.delay_ms
w._next_try = time.ticks_ms()  # the delay has passed
c = await w.ensure(asyncio.sleep_ms)
dump({"results": [a, b, c], "attempts": [attempts_then, w.attempts], "delay": delay,
      "wlan": gw.wifi.wlan.attempts, "after": w.backoff.delay_ms})
"""


def test_wifi_retries_with_backoff(mpy: MicroPython) -> None:
    (out,) = mpy.run_json(WIFI)
    assert out["results"] == [False, False, True]
    assert out["attempts"] == [1, 2]
    assert out["delay"] == 2000  # 1 s waited after the first failure, the next wait doubles
    assert out["wlan"] == [["lab", "wifi-pw"], ["lab", "wifi-pw"]]
    assert out["after"] == 1000  # reset once connected


RUN = r"""
import asyncio, socket
from testkit import make, adv_data, df5, mac, dump

gw, ble = make(start=False)
task = asyncio.create_task(gw.run())
await asyncio.sleep_ms(50)
for i in range(5):
    ble.inject(mac(i), -70, adv_data(df5(i)))
await asyncio.sleep_ms(2600)  # flush_s = 1, interval_s = 1
dump({"acked": gw.acked, "topics": [p[0] for p in socket.BROKER.published], "scans": ble.scans})
"""


def test_run_loop_scans_flushes_publishes_and_prints_status(mpy: MicroPython) -> None:
    text = mpy.run(RUN)
    out = json.loads(next(line for line in text.splitlines() if line.startswith("@"))[1:])
    assert out["acked"] == 5
    assert out["topics"][0] == "edge-gw/esp32-1/status"
    assert "edge-gw/esp32-1/batch" in out["topics"]
    assert out["scans"] == [[0, 30000, 30000, False]]
    status = [line for line in text.splitlines() if line.startswith("[edge-gw] buffer=")]
    assert len(status) >= 2
    assert "tags=5" in status[-1] and "mqtt=up" in status[-1] and "clock=synced" in status[-1]


BAD_CONFIG = r"""
import gateway
f = open("/config.json", "w")
f.write('{"gateway_id": "dlq", "wifi": {"ssid": ""}, "broker": {"host": "b", "port": 70000, "tls": "yes"},'
        ' "buffer": {"page_bytes": 1000}, "colour": "red"}')
f.close()
print("result:", gateway.boot("/config.json"))
gateway.boot("/missing.json")
"""


def test_a_bad_config_is_reported_on_the_repl_and_nothing_starts(mpy: MicroPython) -> None:
    text = mpy.run(BAD_CONFIG)
    assert text.splitlines() == [
        "[edge-gw] config.json is not valid:",
        "  - colour is not a known setting",
        "  - gateway_id must be 1-64 characters from A-Z a-z 0-9 . _ - (not 'dlq'), got 'dlq'",
        "  - wifi.ssid must be a non-empty string",
        "  - broker.tls must be true or false",
        "  - broker.port must be an integer from 1 to 65535, got 70000",
        "  - buffer.page_bytes must be a multiple of 64 (one record), got 1000",
        "result: None",
        "[edge-gw] /missing.json not found: copy one to the board (see micropython/README.md)",
    ]


SCANNER = r"""
from testkit import adv_data, df5, mac, dump
import bluetooth, scanner
ble = bluetooth.BLE()
s = scanner.Scanner(ble, queue_len=4, max_tags=2)
s.start()
# Ruuvi data as the second of two manufacturer-data structures
other = adv_data(b"\x01\x02", company=b"\x59\x00", flags=False)
ble.inject(mac(1), -1, b"\x02\x01\x06" + other + adv_data(df5(1), flags=False))
got = []
s.drain(lambda m, r, p: got.append([m.hex(), r, p.hex()]))
for i in range(6):  # overflows the 4-entry queue: the oldest go
    ble.inject(mac(10 + i), -2, adv_data(df5(i)))
s.drain(lambda m, r, p: got.append([m.hex(), r, p.hex()]))
ble.inject(mac(20), -3, adv_data(df5(7)))
ble.inject(mac(20), -3, adv_data(df5(7)))
s.drain(lambda m, r, p: got.append([m.hex(), r, p.hex()]))
dump({"got": got, "tags": s.tags_seen(), "dups": s.duplicates, "adverts": s.adverts})
"""


def test_scanner_filters_copies_bounds_and_dedups(mpy: MicroPython) -> None:
    (out,) = mpy.run_json(SCANNER)
    got = out["got"]
    assert [g[0][-4:] for g in got] == ["0001", "000c", "000d", "000e", "000f", "0014"]
    df5 = bytes.fromhex("0512fc5394c37c0004fffc040cac364200cdcbb8334c884f")
    assert [g[2] for g in got] == [(df5[:16] + bytes([0, i]) + df5[18:]).hex() for i in (1, 2, 3, 4, 5, 7)]
    assert [g[1] for g in got] == [-1, -2, -2, -2, -2, -3]
    assert out["dups"] == 1
    assert out["adverts"] == 7
    assert out["tags"] == 2  # max_tags=2: the table is cleared whenever a third tag turns up


REFUSED = r"""
import socket, mqtt
from testkit import make, dump

gw, ble = make()
errors = []
socket.BROKER.refuse_tcp = 1
socket.BROKER.connack_code = 5
for _ in range(3):
    try:
        await gw.uplink_step()
        errors.append(None)
    except mqtt.MQTTError as e:
        errors.append(str(e))
        gw.drop_connection()
        socket.BROKER.connack_code = 0 if "refused" in str(e) else 5
dump({"errors": errors, "connects": gw.connects, "open": [not s.closed for s in socket.BROKER.sockets],
      "up": gw.client is not None})
"""


def test_refused_connections_raise_and_leave_no_socket_open(mpy: MicroPython) -> None:
    (out,) = mpy.run_json(REFUSED)
    assert out["errors"] == [
        "cannot connect to broker.lan:1883: OSError(111,)",
        "connection refused: not authorised",
        None,
    ]
    assert out["connects"] == 3
    assert out["open"] == [False, False, True]  # only the working connection stays open
    assert out["up"] is True


IDS = ["esp32-1", "a", "A.b_c-9", "x" * 64, "x" * 65, "", "dlq", "a/b", "a b", "ä"]
PREFIXES = ["edge-gw", "site/edge-gw", "a.b/c_d/e-f", "", "/edge", "edge/", "a//b", "ruuvi", "ruuvi/x", "e+", "#"]

VALIDITY = r"""
import json, config
from testkit import merged, dump
ids, prefixes = json.load(open("/data/cases.json"))
def ok(overrides):
    try:
        config.validate(merged(overrides))
        return True
    except config.ConfigError:
        return False
dump([[ok({"gateway_id": i}) for i in ids], [ok({"topic_prefix": p}) for p in prefixes]])
"""


def test_board_config_accepts_exactly_the_ids_and_prefixes_edge_wire_accepts(mpy: MicroPython) -> None:
    from core.wire import WireError, check_gateway_id, check_prefix

    def accepted(check: Any, value: str) -> bool:
        try:
            check(value)
        except WireError:
            return False
        return True

    (got,) = mpy.run_json(VALIDITY, files={"/data/cases.json": json.dumps([IDS, PREFIXES]).encode()})
    assert got == [[accepted(check_gateway_id, i) for i in IDS], [accepted(check_prefix, p) for p in PREFIXES]]
    assert got[0].count(True) == 4 and got[1].count(True) == 3
