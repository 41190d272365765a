"""History download end to end: the gateway (edge.gateway.Gateway, real bleak source against the fake BlueZ) was
stopped for 30 minutes of tag time; restarted, it hears the tag live, finds the gap from its buffer, reads exactly
the missing interval from the tag's log over GATT, and the readings go through the real Mosquitto, the real
receiver (cloud-ingest, with confirmations) into a real InfluxDB, with the tag's own timestamps."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from fakebluez import FakeBlueZ

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cloud"))
from test_receiver_support import make_config, start_receiver, stored

from cloud.rollups import RollupConfig, Rollups
from cloud.schema import setup
from cloud.sinks.base import SinkOptions
from cloud.sinks.influx1 import Influx1Client, Target
from edge import status
from edge.clock import SystemClock
from edge.config import load_config
from edge.gateway import Gateway
from edge.metrics import Counters
from edge.model import Reading
from edge.sources.encode import df5
from edge.store import Store

MAC = "c1:00:00:00:00:01"
STEP = 60  # the tag logs once a minute here
S = 1_000_000_000
H = 3600 * S


def test_a_30_minute_outage_is_filled_exactly_in_influxdb(bluez: FakeBlueZ, mosquitto: Any, influxd: Any,
                                                          tmp_path: Path) -> None:
    now = int(time.time())
    last_logged = (now // STEP - 1) * STEP  # the log's newest record is at least a minute old
    log = [(last_logged - i * STEP, -5.0 + i * 0.25, 40.0 + i * 0.5, 99_500 + i) for i in range(120)][::-1]
    stop = last_logged - 30 * STEP  # the gateway's last live reading before it was stopped
    missed = {t: (temp, hum, p) for t, temp, hum, p in log if t > stop}
    assert len(missed) == 30

    db = tmp_path / "edge.db"
    # The buffer as the stopped gateway left it: the tag's last live reading at `stop` (already delivered or not,
    # it is in the tags table either way).
    before = Store(db)
    payload = df5(temperature=1.0, humidity=50.0, pressure=99_000, sequence=100, mac=MAC)
    before.add([Reading(MAC, stop * S, time.monotonic_ns(), True, -60, 5, payload,
                        {"data_format": 5, "temperature": 1.0, "humidity": 50.0, "pressure": 99_000,
                         "measurement_sequence_number": 100})])
    before.close()

    url = f"{influxd.url}/ruuvi"
    assert setup(url).ok  # raw and rollup retention policies, continuous queries
    # The receiver's late-data hook re-runs the rollups of every finished interval a write touches. Its clock is an
    # hour ahead here, so that every hour the gap touches counts as finished (otherwise whether the gap crosses an
    # hour boundary would depend on the minute the test runs at; the current hour is the continuous query's job).
    rollups = Rollups(Influx1Client(Target.from_url(url), SinkOptions()), RollupConfig(settle_s=0.2),
                      clock=lambda: time.time_ns() + H)
    receiver = start_receiver(make_config(mosquitto.port, url, tmp_path, batch__max_interval="0.2"),
                              rollups=rollups)
    cfg = load_config(None, {
        "gateway.id": "gw-hist", "gateway.db": str(db), "mqtt.url": mosquitto.url, "source.kind": "bleak",
        "source.adapter": "hci0", "source.passive": "false", "clock.assume_synced": "true",
        "history.enabled": "true", "history.gap_threshold": "10m", "history.timeout": "20s",
    }, environ={})
    counters = Counters()
    figures: dict[str, float] = {}

    async def main() -> Gateway:
        await bluez.connect()
        tag = await bluez.add_history_tag(0, MAC, df5(temperature=2.0, humidity=51.0, pressure=99_100, sequence=200,
                                                      mac=MAC), log)
        gateway = Gateway(cfg, SystemClock(assume_synced=True), counters)
        task = asyncio.create_task(gateway.run())
        try:
            started = time.monotonic()
            while gateway.history is None or gateway.history.counts["history_downloads"] == 0:
                assert time.monotonic() - started < 20, "no download started"
                await asyncio.sleep(0.01)
            adverts_at_start, t_start = gateway.pipeline.adverts, time.monotonic()
            state = gateway.history.tags[MAC]
            while state.state == "running":
                await asyncio.sleep(0.01)
            figures["download_s"] = time.monotonic() - t_start
            figures["adverts_during"] = gateway.pipeline.adverts - adverts_at_start
            assert state.state == "idle", state
            # Only the interval from the gap's start: the log from `stop` on, not the whole two hours.
            assert [since for _, since in tag.reads] == [stop + 1]
            # Live adverts went on during the download: the scanner was not paused.
            t_after, adverts_after = time.monotonic(), gateway.pipeline.adverts
            await asyncio.sleep(2.0)
            figures["adverts_per_s_after"] = (gateway.pipeline.adverts - adverts_after) / (time.monotonic() - t_after)
            deadline = time.monotonic() + 30
            while len([p for p in stored(influxd) if p["data_format"] == "58"]) < len(missed):
                assert time.monotonic() < deadline, "history points did not reach InfluxDB"
                await asyncio.sleep(0.1)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await bluez.close()
        return gateway

    hours = sorted({t * S - t * S % H for t in missed})

    def rollup_rows() -> dict[int, tuple[int, float]]:
        q = urllib.parse.urlencode({"db": "ruuvi", "epoch": "ns", "q": (
            'SELECT "count_temperature", "mean_temperature" FROM "rollups"."ruuvi_1h" '
            f"WHERE data_format = '58' AND time >= {hours[0]} GROUP BY *")})
        with urllib.request.urlopen(f"{influxd.url}/query?{q}", timeout=30) as r:
            res = json.loads(r.read())
        return {row[0]: (row[1], row[2]) for series in res["results"][0].get("series", []) for row in series["values"]}

    try:
        gateway = asyncio.run(main())
        points = stored(influxd)
        deadline = time.monotonic() + 20
        while set(rollup_rows()) != set(hours):
            assert time.monotonic() < deadline, f"rollups of the gap's hours: {rollup_rows()} not {hours}"
            time.sleep(0.1)
    finally:
        receiver.stop()
    # Each hour the gap touches is rolled up over exactly its history records.
    want = {h: [v[0] for t, v in missed.items() if h <= t * S < h + H] for h in hours}
    got = rollup_rows()
    assert {h: c for h, (c, _) in got.items()} == {h: len(v) for h, v in want.items()}
    assert {h: round(m, 6) for h, (_, m) in got.items()} == {h: round(sum(v) / len(v), 6) for h, v in want.items()}

    history = [p for p in points if p["data_format"] == "58"]
    # Exactly the missed measurements, each once, at the tag's own times, with its values.
    assert {p["time"] // S: (p["temperature"], p["humidity"], p["pressure"]) for p in history} == missed
    assert len(history) == len(missed)
    assert {(p["mac"], p["gateway"]) for p in history} == {(MAC, "gw-hist")}
    assert all(p["measurement_sequence_number"] is None and p["rssi"] is None for p in history)
    # The live readings around the gap are there too, under their own data format, and none in the gap.
    live = sorted(p["time"] for p in points if p["data_format"] == "5")
    assert live[0] == stop * S and live[1] > last_logged * S
    assert gateway.history is not None
    assert gateway.history.counts == {"history_downloads": 1, "history_records": 30, "history_failures": 0}
    assert {k: counters.snapshot()[k] for k in gateway.history.counts} == gateway.history.counts
    # `edge-gw status` (the buffer's saved status, as the CLI reads it): the tag's gap, filled, and the counts.
    report = status.load(db)
    assert report["history"] == {"enabled": True, "tags": {MAC: {
        "state": "idle", "gaps": [], "records": 30, "downloads": 1, "failures": 0, "last_error": ""}}}
    text = status.render(report, now_ns=time.time_ns())
    assert "history   downloads 1  records 30  failures 0" in text
    assert f"{MAC}  idle" in text
    print(f"\nhistory e2e: 30 records in {figures['download_s']:.3f} s; live adverts during the download "
          f"{figures['adverts_during']}, after it {figures['adverts_per_s_after']:.1f}/s")
    assert figures["adverts_during"] > 0 or figures["download_s"] < 0.4  # one scan tick is 0.2 s
