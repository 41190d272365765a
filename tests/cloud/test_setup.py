"""`setup` against the real influxd 1.6.7: creates, is idempotent, corrects drift, and its CQs really run."""

from __future__ import annotations

import time

import pytest
from servers import Influxd, series_values
from vm import VictoriaMetrics, victoria  # noqa: F401 - the fixture

from cloud.influx_duration import duration_ns
from cloud.rollups import RollupConfig, create_cq
from cloud.schema import flux_task, setup
from cloud.sinks.base import SinkConfigError, SinkOptions
from cloud.sinks.influx1 import Influx1Client, Target


def state(db: Influxd, name: str = "iot") -> tuple[list[list[object]], list[list[object]]]:
    rps = series_values(db.query(f"SHOW RETENTION POLICIES ON {name}"))
    cqs = series_values(db.query("SHOW CONTINUOUS QUERIES"))
    return rps, cqs


def test_setup_creates_everything_and_second_run_changes_nothing(influxd: Influxd) -> None:
    url = f"{influxd.url}/iot"
    first = setup(url)
    assert first.ok, first.problems
    assert first.actions == [
        "CREATE DATABASE iot",
        "CREATE RETENTION POLICY raw ON iot DURATION 90d REPLICATION 1 DEFAULT",
        "CREATE RETENTION POLICY rollups ON iot DURATION INF REPLICATION 1",
        create_cq(RollupConfig(), "iot", "1h"),
        create_cq(RollupConfig(), "iot", "1d"),
    ]
    after_first = state(influxd)
    second = setup(url)
    assert (second.ok, second.actions) == (True, [])
    assert state(influxd) == after_first
    rps, cqs = after_first
    assert rps == [
        ["autogen", "0s", "168h0m0s", 1, False],
        ["raw", "2160h0m0s", "24h0m0s", 1, True],
        ["rollups", "0s", "168h0m0s", 1, False],
    ]
    assert cqs == [
        [
            "ruuvi_1h",
            "CREATE CONTINUOUS QUERY ruuvi_1h ON iot BEGIN SELECT mean(*), min(*), max(*), count(*), "
            "last(battery_voltage) AS last_battery_voltage INTO iot.rollups.ruuvi_1h FROM iot.raw.ruuvi "
            "GROUP BY time(1h), * END",
        ],
        [
            "ruuvi_1d",
            "CREATE CONTINUOUS QUERY ruuvi_1d ON iot BEGIN SELECT mean(*), min(*), max(*), count(*), "
            "last(battery_voltage) AS last_battery_voltage INTO iot.rollups.ruuvi_1d FROM iot.raw.ruuvi "
            "GROUP BY time(1d), * END",
        ],
    ]


def test_setup_corrects_drift(influxd: Influxd) -> None:
    url = f"{influxd.url}/iot"
    assert setup(url).ok
    influxd.query("ALTER RETENTION POLICY raw ON iot DURATION 30d", method="POST")
    influxd.query("ALTER RETENTION POLICY autogen ON iot DEFAULT", method="POST")
    influxd.query("DROP CONTINUOUS QUERY ruuvi_1d ON iot", method="POST")
    cfg = RollupConfig(raw_duration="30w")
    fixed = setup(url, cfg)
    assert fixed.ok, fixed.problems
    # The 1h CQ does not depend on the retention duration: left alone. The missing 1d CQ is recreated.
    assert fixed.actions == [
        "ALTER RETENTION POLICY raw ON iot DURATION 30w DEFAULT",
        create_cq(cfg, "iot", "1d"),
    ]
    rps, _ = state(influxd)
    assert ["raw", "5040h0m0s", "24h0m0s", 1, True] in rps
    assert setup(url, cfg).actions == []
    # A changed rollup definition replaces the CQs (they can't be altered in place).
    cfg2 = RollupConfig(raw_duration="30w", battery_field="battery")
    changed = setup(url, cfg2)
    assert changed.ok, changed.problems
    assert changed.actions == [
        "DROP CONTINUOUS QUERY ruuvi_1h ON iot",
        create_cq(cfg2, "iot", "1h"),
        "DROP CONTINUOUS QUERY ruuvi_1d ON iot",
        create_cq(cfg2, "iot", "1d"),
    ]


def test_cq_runs_and_writes_the_rollup(influxd: Influxd) -> None:
    """The CQ text is valid and does what the re-run does: with RESAMPLE EVERY 1s it fires within seconds."""
    cfg = RollupConfig(cq_resample="RESAMPLE EVERY 1s FOR 2h", intervals=("1h",))
    url = f"{influxd.url}/iot"
    assert setup(url, cfg).ok
    now = time.time_ns()
    hour = now - now % 3_600_000_000_000
    t1 = max(hour, now - 120_000_000_000)
    body = (
        f"ruuvi,mac=aa,gateway=g,data_format=5 temperature=20.5,battery_voltage=2900i {t1}\n"
        f"ruuvi,mac=aa,gateway=g,data_format=5 temperature=21.5,battery_voltage=2800i {t1 + 1_000_000}\n"
    )
    client = Influx1Client(Target.from_url(url), SinkOptions())
    assert client.write_lines(body.strip().split("\n")).status == 204
    deadline = time.monotonic() + 15
    rows: list[list[object]] = []
    while time.monotonic() < deadline and not rows:
        time.sleep(0.5)
        rows = series_values(
            influxd.query(
                "SELECT mean_temperature, min_temperature, max_temperature, count_temperature, "
                "last_battery_voltage FROM iot.rollups.ruuvi_1h",
                "iot",
            )
        )
    client.close()
    assert [r[1:] for r in rows] == [[21.0, 20.5, 21.5, 2, 2800]]


def test_durations() -> None:
    assert duration_ns("90d") == 90 * 86400 * 10**9
    assert duration_ns("2160h0m0s") == duration_ns("90d")
    assert duration_ns("104w") == 104 * 7 * 86400 * 10**9
    assert duration_ns("INF") == duration_ns("0s") == 0
    with pytest.raises(SinkConfigError):
        duration_ns("90 days")


def test_flux_task_text_for_2x() -> None:
    """Only the generated text can be checked here: no 2.x server with a tasks API installs on this machine."""
    flux = flux_task(RollupConfig(), "ruuvi", "ruuvi_rollups", "1h", "2d")
    assert 'from(bucket: "ruuvi") |> range(start: -2d)' in flux
    assert "aggregateWindow(every: 1h, fn: fn, createEmpty: false)" in flux
    assert '_measurement: "ruuvi_1h"' in flux
    assert 'to(bucket: "ruuvi_rollups")' in flux
    assert 'r._field == "battery_voltage") |> rollup(fn: last, name: "last")' in flux
    assert '"temperature"' in flux and '"button_pressed"' not in flux


def test_setup_refuses_a_url_rp_the_rollups_do_not_read(influxd: Influxd) -> None:
    report = setup(f"{influxd.url}/iot?rp=other")
    assert report.problems == ["the URL writes to retention policy 'other', the rollups read 'raw'"]
    assert setup(f"{influxd.url}/iot?rp=raw").ok


def test_influx2_setup_reports_a_server_without_the_api(victoria: VictoriaMetrics) -> None:  # noqa: F811
    """The 2.x path runs (buckets, then tasks) and fails cleanly, in one line, where the API is missing."""
    report = setup(f"influx2://127.0.0.1:{victoria.port}?org=o&bucket=b", options=SinkOptions(token="t"))
    assert report.actions == []
    [problem] = report.problems
    assert problem.startswith("ApiException: (400)")
    assert 'unsupported path requested: "/api/v2/buckets"' in problem
    assert "\n" not in problem
