"""The fixtures themselves: each server really runs, answers, and is gone after stop()."""

from __future__ import annotations

import os
import subprocess
import urllib.request

from servers import Influxd, Mosquitto, series_values


def test_mosquitto_roundtrip(mosquitto: Mosquitto) -> None:
    sub = subprocess.Popen(
        ["mosquitto_sub", "-p", str(mosquitto.port), "-h", "127.0.0.1", "-t", "t/#", "-C", "1", "-W", "5"],
        stdout=subprocess.PIPE,
    )
    import time

    time.sleep(0.3)
    subprocess.run(
        ["mosquitto_pub", "-p", str(mosquitto.port), "-h", "127.0.0.1", "-t", "t/x", "-m", "hello"], check=True
    )
    out, _ = sub.communicate(timeout=10)
    assert out == b"hello\n"
    pid = mosquitto.proc.pid  # type: ignore[union-attr]
    mosquitto.stop()
    try:
        os.kill(pid, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive


def test_influxd_write_and_query(influxd: Influxd) -> None:
    influxd.query("CREATE DATABASE t", method="POST")
    req = urllib.request.Request(
        f"{influxd.url}/write?db=t&precision=ns", data=b"m,tag=a v=1.5 1000000000\n", method="POST"
    )
    with urllib.request.urlopen(req) as r:
        assert r.status == 204
    assert series_values(influxd.query("SELECT v FROM m", db="t")) == [["1970-01-01T00:00:01Z", 1.5]]
