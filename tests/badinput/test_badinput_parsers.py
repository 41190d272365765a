"""Generated bad messages for the receiver's parsers and line-protocol encoder, in process (the end-to-end
receiver test sends a fixed set through the real daemon; this one reaches the corners).

Valid messages of every input format are mutated at the JSON level (a value swapped for another type, an extreme
number, a key dropped or added, a reading duplicated) and at the byte level. For each: `Router.route` returns or
raises InvalidMessage, nothing else; every point it returns encodes or raises EncodeError; the parsers' fast path
agrees with their exact path (cloud/formats/edge.py `_point`), and the encoder's compiled per-key-set format agrees
with its general loop, so a shape that only the fast paths see cannot write something different.
"""

from __future__ import annotations

import copy
import json
import random
import time
from pathlib import Path
from typing import Any

import orjson
from badinput_support import ruuvi_message

from cloud.formats import FormatsConfig, Router, edge_batch
from cloud.formats._common import FIELD_KINDS
from cloud.lineproto import EncodeError, Encoder
from cloud.model import InvalidMessage, Parsed

RUNS = 60_000
SEED = 4242
NOW = 1_795_450_000_000_000_000
# The router's default bounds on a reading's time (formats.max_age, formats.max_ahead).
OLDEST = NOW - int(FormatsConfig().max_age_s * 1e9)
NEWEST = NOW + int(FormatsConfig().max_ahead_s * 1e9)
VECTORS = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "ruuvi.json").read_text())
FIELDS = [v["expected"] for v in VECTORS if "expected" in v and v["expected"].get("data_format") != 8]
ODD_VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 255, 2**31, 2**63 - 1, -(2**63), 2**63, 2**64 - 1, 0.5, -0.0, 1e308, -1e308,
    5e-324, 1e16, "", "x", "21.5", "aa:bb:cc:dd:ee:ff", "AABBCCDDEEFF", "c0:ff:ee:00:00:0g", "é\u2028\x00", [], {},
    [1, 2], {"a": 1}, "0512fc5394c37c0004fffc040cac364200cdcbb8334c884f",
]
EXTRA_KEYS = [*FIELD_KINDS, "v", "gateway", "seq", "readings", "mac", "time_ns", "rssi", "raw", "fields", "state",
              "gw_mac", "ts", "gwts", "data", "cnt", "sensor_id", "timestamp", "location", "key with space", "k=v,x"]


def base_messages(rng: random.Random) -> list[tuple[str, Any]]:
    """(topic, JSON object) of every input format, valid before mutation."""
    readings = []
    for i in range(rng.randint(1, 4)):
        fields = dict(rng.choice(FIELDS))
        readings.append({"mac": f"c0:ff:ee:00:00:{i:02x}", "time_ns": NOW - rng.randrange(10**12),
                         "clock_synced": True, "rssi": -70, "data_format": fields["data_format"],
                         "raw": "00", "fields": fields})
    _, ruuvi = ruuvi_message("AA:BB:CC:DD:EE:FF", bytes([0xC0, 0xFF, 0xEE, 0, 0, 1]), 1, NOW // 10**9 - 5)
    return [
        ("edge-gw/gw-1/batch", {"v": 1, "gateway": "gw-1", "seq": 7, "readings": readings}),
        ("edge-gw/gw-1/status", {"v": 1, "gateway": "gw-1", "state": "online"}),
        ("ruuvi/AA:BB:CC:DD:EE:FF/C0:FF:EE:00:00:01", orjson.loads(ruuvi)),
        ("ruuvi/AA:BB:CC:DD:EE:FF/gw_status", {"state": "online", "ts": NOW // 10**9}),
        ("sensors/room-1", {"sensor_id": "room-1", "temperature": 21.5, "humidity": 40, "location": "attic",
                            "timestamp": NOW // 10**9 - 5}),
    ]


def odd(rng: random.Random) -> Any:
    return copy.deepcopy(rng.choice(ODD_VALUES))  # a fresh copy: never a container inside itself


def containers(node: Any, out: list[Any]) -> list[Any]:
    if isinstance(node, dict | list):
        out.append(node)
        for child in node.values() if isinstance(node, dict) else node:
            containers(child, out)
    return out


def mutate(rng: random.Random, obj: Any) -> Any:
    for _ in range(rng.randint(1, 3)):
        target = rng.choice(containers(obj, []))
        op = rng.randrange(5)
        if isinstance(target, dict):
            keys = list(target)
            if op <= 1 and keys:
                target[rng.choice(keys)] = odd(rng)
            elif op == 2 and keys:
                del target[rng.choice(keys)]
            elif op == 3:
                target[rng.choice(EXTRA_KEYS)] = odd(rng)
            elif keys:  # same keys, another order: a different compiled key set
                items = list(target.items())
                rng.shuffle(items)
                target.clear()
                target.update(items)
        elif target:
            i = rng.randrange(len(target))
            if op <= 2:
                target[i] = odd(rng)
            else:
                target.append(copy.deepcopy(target[i]))
    return obj


def payload(rng: random.Random, obj: Any) -> bytes:
    data = orjson.dumps(obj)
    if rng.random() < 0.15:  # byte-level damage on top
        buf = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        data = bytes(buf)
    return data


def check_points(parsed: Parsed, topic: str, obj: Any, encoder: Encoder) -> int:
    general = Encoder()
    written = 0
    for p in parsed.points:
        try:
            line = encoder.line(p)
        except EncodeError:
            line = None
        try:
            slow = general._line(general.series_key(p.measurement, p.tags), p)
        except EncodeError:
            slow = None
        assert line == slow, (topic, p)
        written += line is not None
    if topic.endswith("/batch") and isinstance(obj, dict):
        # Every reading is a point or, its time out of bounds, refused on its own (Router.route), never lost.
        exact = [edge_batch._point(r, i, "gw-1", "ruuvi") for i, r in enumerate(obj["readings"])]
        kept = [p for p in exact if p is not None and OLDEST <= p.time_ns <= NEWEST]
        assert parsed.points == kept, obj
        assert len(parsed.refused) == sum(1 for p in exact if p is not None) - len(kept), obj
    return written


def test_parsers_and_encoder_on_generated_bad_messages() -> None:
    rng = random.Random(SEED)
    router = Router(clock=lambda: NOW)
    encoder = Encoder()  # one for the whole run, as in the receiver: its caches see every shape
    outcomes = {"points": 0, "status": 0, "invalid": 0, "lines": 0}
    started = time.monotonic()
    for _ in range(RUNS):
        topic, obj = rng.choice(base_messages(rng))
        obj = mutate(rng, obj)
        try:
            data = payload(rng, obj)
        except orjson.JSONEncodeError:  # e.g. an int over 64 bits, which no JSON sender here could produce
            continue
        try:
            parsed = router.route(topic, data)
        except InvalidMessage as e:
            assert str(e) and "\n" not in str(e)
            outcomes["invalid"] += 1
            continue
        except Exception as e:  # pragma: no cover - the finding itself
            raise AssertionError(f"route({topic!r}, {data[:300]!r}) raised {e!r}") from e
        outcomes["points" if parsed.points else "status"] += 1
        same_obj = orjson.loads(data) if data == orjson.dumps(obj) else None
        outcomes["lines"] += check_points(parsed, topic, same_obj, encoder)
    took = time.monotonic() - started
    # Both outcomes in bulk: the mutations neither always break nor never break a message.
    assert outcomes["invalid"] > RUNS // 4 and outcomes["points"] > RUNS // 10, outcomes
    print(f"parsers: {RUNS} messages {outcomes} in {took:.1f} s")

