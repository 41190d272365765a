"""`cloud-ingest setup` then `cloud-ingest run`: a store-and-forward backlog hours late ends up in the hourly
rollups, recomputed by the receiver's late-data hook (the wiring of cloud.rollups into the receiver)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from test_receiver_kill import cloud_ingest, run_args, wait_subscribed
from test_receiver_support import Publisher, edge_batch, now_ns, reading, wait_until

S = 1_000_000_000
H = 3600 * S


def rows(influxd: Any, q: str) -> list[list[Any]]:
    res = influxd.query(q, "ruuvi")
    return [row for s in res["results"][0].get("series", []) for row in s["values"]]


def test_late_backlog_is_rolled_up(mosquitto: Any, influxd: Any, tmp_path: Path) -> None:
    url = f"{influxd.url}/ruuvi"
    setup = cloud_ingest("setup", "--influx", url, log=tmp_path / "setup.log")
    assert setup.wait(30) == 0, (tmp_path / "setup.log").read_text()
    args = run_args(mosquitto.port, url, tmp_path)
    args[args.index("rollups.enabled=false")] = "rollups.enabled=true"
    log = tmp_path / "rx.log"
    rx = cloud_ingest(*args, "--set", "rollups.settle=0.3", log=log)
    pub = Publisher(mosquitto.port)
    try:
        wait_subscribed(log)
        # A gateway that was offline for 6 hours sends its backlog: one reading per tag every 10 minutes.
        start = (now_ns() // H - 6) * H
        readings = [reading(tag, k, start + k * 600 * S + tag, temp_c=20 + k % 7 + tag / 10)
                    for k in range(36) for tag in range(3)]
        pub.publish([("edge-gw/gw-late/batch", edge_batch("gw-late", i, readings[i:i + 20]))
                     for i in range(0, len(readings), 20)])
        wait_until(lambda: len(rows(influxd, 'SELECT * FROM "raw"."ruuvi"')) == 108, 20, "raw points")

        def rollup() -> list[list[Any]]:
            return rows(influxd, 'SELECT "mean_temperature", "count_temperature" FROM "rollups"."ruuvi_1h" '
                                 f"WHERE time >= {start} AND time < {start + 6 * H} GROUP BY *")

        wait_until(lambda: len(rollup()) == 18, 20, "18 hourly rows (6 hours x 3 tags)")
        got = sorted((r[0], round(r[1], 9), r[2]) for r in rollup())
        want = sorted((r[0], round(r[1], 9), r[2]) for r in rows(
            influxd, 'SELECT mean("temperature"), count("temperature") FROM "raw"."ruuvi" '
                     f"WHERE time >= {start} AND time < {start + 6 * H} GROUP BY time(1h), *"))
        assert got == want
        assert all(r[2] == 6 for r in got)
    finally:
        pub.close()
        if rx.poll() is None:
            rx.send_signal(signal.SIGTERM)
            rx.wait(30)
    assert rx.returncode == 0, log.read_text()[-3000:]
