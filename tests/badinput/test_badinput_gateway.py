"""`edge-gw run --source replay:FILE` with a capture full of junk: undecodable payloads are counted as decode
errors, unreadable lines are counted and skipped, the daemon keeps going, and every good advert after the junk is
stored and forwarded."""

from __future__ import annotations

import random
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
from badinput_support import EDGE_GW, Subscriber, clean_env, df5, mac_bytes, wait_until


def advert_line(t: float, mac: bytes, data: bytes) -> bytes:
    return orjson.dumps({"t": t, "mac": mac.hex(":"), "rssi": -60, "data": data.hex()}) + b"\n"


def junk_payloads() -> list[bytes]:
    """Valid capture lines whose payload is not a Ruuvi advert: each must count as one decode error."""
    rng = random.Random(11)
    good = df5(1, mac_bytes(0xDD, 0))
    return [
        b"\xff\x01\x02",  # unknown data format
        b"\x00",  # format 0
        b"\x05",  # a format byte alone
        good[:-1],  # DF5, one byte short
        good + b"\x00",  # DF5, one byte long
        b"\x03" + rng.randbytes(20),  # DF3 of the wrong length
        b"\xe1" + rng.randbytes(10),  # E1 of the wrong length
        b"\xc5" + rng.randbytes(30),
        b"\x06" + rng.randbytes(5),
        b"\x08" + rng.randbytes(3),
        b"\x05" + rng.randbytes(299),
        rng.randbytes(1000),
    ]


BAD_LINES = [
    b'{"t":',  # cut JSON
    b"\xff\xfe\x00junk\x80",  # binary, not UTF-8
    b"[1,2,3]",
    b"NaN",
    b'{"t":-1,"mac":"c0:ff:dd:00:00:01","rssi":-60,"data":"05"}',
    b'{"t":0,"mac":"not-a-mac","rssi":-60,"data":"05"}',
    b'{"t":0,"mac":"c0:ff:dd:00:00:01","rssi":"loud","data":"05"}',
    b'{"t":0,"mac":"c0:ff:dd:00:00:01","rssi":-60,"data":"zz"}',
    b'{"t":0,"mac":"c0:ff:dd:00:00:01","rssi":-60,"data":""}',
    b'{"t":0,"mac":"c0:ff:dd:00:00:01","rssi":-60}',
    b'{"t":true,"mac":"c0:ff:dd:00:00:01","rssi":-60,"data":"05"}',
    b"x" * 200_000,  # one very long line
]


def test_junk_adverts_are_counted_and_good_ones_after_them_stored(mosquitto: Any, tmp_path: Path) -> None:
    junk = junk_payloads()
    before = [(mac_bytes(0xD1, i), df5(i, mac_bytes(0xD1, i))) for i in range(20)]
    after = [(mac_bytes(0xD2, i), df5(i, mac_bytes(0xD2, i))) for i in range(30)]
    capture = tmp_path / "junk.jsonl"
    with capture.open("wb") as f:
        f.write(orjson.dumps({"format": "edge-gw-capture", "version": 1, "started_ns": time.time_ns()}) + b"\n")
        for mac, data in before:
            f.write(advert_line(0.0, mac, data))
        for i, data in enumerate(junk):
            f.write(advert_line(0.0, mac_bytes(0xDE, i), data))
            f.write(BAD_LINES[i % len(BAD_LINES)] + b"\n")
        f.write(b"\n\n")  # blank lines are not errors
        for mac, data in after:
            f.write(advert_line(0.0, mac, data))
    assert len(junk) == len(BAD_LINES)
    sub = Subscriber(mosquitto.port, "edge-gw/+/batch", "batch-reader")
    db = tmp_path / "gw.db"
    adverts = len(before) + len(junk) + len(after)
    try:
        run = subprocess.run([*EDGE_GW, "run", "--gateway-id", "gw-junk", "--mqtt", mosquitto.url, "--db", str(db),
                              "--source", f"replay:{capture}", "--count", str(adverts), "--drain", "30",
                              "--assume-synced"], check=False, capture_output=True, text=True, timeout=60,
                             # This test reads batches with a plain subscriber, which confirms nothing.
                             env=clean_env(EDGE_GW_UPLINK_CONFIRM="broker"))
        assert run.returncode == 0, run.stderr
        assert run.stderr.splitlines()[-1] == f"adverts={adverts} committed={len(before) + len(after)} drained=yes"
        want = {mac.hex(":") for mac, _ in before + after}
        wait_until(lambda: {r["mac"] for _, p in sub.messages for r in orjson.loads(p)["readings"]} >= want, 10,
                   "every good reading forwarded")
    finally:
        sub.close()
    forwarded = [r["mac"] for _, p in sub.messages for r in orjson.loads(p)["readings"]]
    assert sorted(forwarded) == sorted(want)  # the junk produced no reading
    # Every bad line was logged with its number (the first 20 are; there are 12 here), with no traceback.
    assert run.stderr.count(f"replay {capture}: skipping line ") == len(BAD_LINES)
    assert "Traceback" not in run.stderr

    status = subprocess.run([*EDGE_GW, "status", "--json", "--db", str(db)], check=False, capture_output=True,
                            text=True, timeout=30, env=clean_env())
    assert status.returncode == 0, status.stderr
    report = orjson.loads(status.stdout)
    counters = report["counters"]
    assert (counters["adverts_received"], counters["decode_errors"], counters["readings_stored"],
            counters["readings_acked"]) == (adverts, len(junk), len(before) + len(after), len(before) + len(after))
    scanner = report["gateway"]["scanner"]
    assert scanner["bad_lines"] == len(BAD_LINES)
    assert scanner["last_error"].startswith(f"line {1 + len(before) + 2 * len(junk)}: not JSON")
    assert report["buffer"]["rows"] == 0
