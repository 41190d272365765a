"""The 2.x sink (influxdb-client, org/bucket/token) against a real /api/v2/write: VictoriaMetrics."""

from __future__ import annotations

import asyncio
import http.server
import time

import pytest
from test_sink_influx1 import Scripted, scripted  # noqa: F401 - the fixture
from vm import VictoriaMetrics, victoria  # noqa: F401 - the fixture

from cloud.model import Point
from cloud.sinks import open_sink
from cloud.sinks.base import SinkAuthError, SinkConfigError, SinkOptions

FAST = SinkOptions(backoff_initial_s=0.05, backoff_max_s=0.2, timeout_s=5, token="t0ken")


def test_influx2_write_reads_back(victoria: VictoriaMetrics) -> None:  # noqa: F811
    t0 = (time.time_ns() // 10**9 - 600) * 10**9
    points = [
        Point(
            "ruuvi",
            {"mac": "aa:bb:cc:dd:ee:01", "gateway": "gw one,=x", "data_format": "5"},
            {"temperature": 20.0 + i / 4, "battery_voltage": 2900 + i, "button_pressed": i % 2 == 0},
            t0 + i * 1_000_000_000,
        )
        for i in range(10)
    ]

    async def run() -> None:
        sink = open_sink(f"influx2://127.0.0.1:{victoria.port}?org=home&bucket=ruuvi", options=FAST)
        out = await sink.write(points)
        assert (out.written, out.rejected) == (10, [])
        assert sink.state == "ok"
        await sink.close()

    asyncio.run(run())
    series = {s["metric"]["__name__"]: s for s in victoria.export('{__name__=~"ruuvi_.*"}')}
    assert sorted(series) == ["ruuvi_battery_voltage", "ruuvi_button_pressed", "ruuvi_temperature"]
    temp = series["ruuvi_temperature"]
    assert temp["metric"] == {
        "__name__": "ruuvi_temperature",
        "mac": "aa:bb:cc:dd:ee:01",
        "gateway": "gw one,=x",
        "data_format": "5",
    }
    assert temp["values"] == [20.0 + i / 4 for i in range(10)]
    assert temp["timestamps"] == [t0 // 10**6 + i * 1000 for i in range(10)]  # VM keeps ms
    assert series["ruuvi_battery_voltage"]["values"] == [2900 + i for i in range(10)]
    assert series["ruuvi_button_pressed"]["values"] == [1, 0] * 5


def test_influx2_down_then_up(victoria: VictoriaMetrics) -> None:  # noqa: F811
    t0 = (time.time_ns() // 10**9 - 600) * 10**9
    victoria.stop()

    async def run() -> None:
        sink = open_sink(f"influx2://127.0.0.1:{victoria.port}?org=home&bucket=ruuvi", options=FAST)
        task = asyncio.create_task(
            sink.write([Point("ruuvi", {"mac": "m"}, {"temperature": 1.5}, t0 + i * 10**9) for i in range(5)])
        )
        await asyncio.sleep(0.5)
        assert not task.done()
        assert sink.state == "retrying"
        await asyncio.to_thread(victoria.start)
        out = await asyncio.wait_for(task, 20)
        assert out.written == 5
        await sink.close()

    asyncio.run(run())
    [series] = victoria.export('{__name__="ruuvi_temperature"}')
    assert series["values"] == [1.5] * 5


def test_influx2_url_needs_org_and_bucket() -> None:
    with pytest.raises(SinkConfigError, match="org and bucket"):
        open_sink("influx2://127.0.0.1:1?org=home")
    with pytest.raises(SinkConfigError, match="scheme"):
        open_sink("ftp://127.0.0.1/x")


def test_influx2_classifies_api_errors_like_1x(scripted: http.server.ThreadingHTTPServer) -> None:  # noqa: F811
    """influxdb-client's ApiException carries status and headers: 429 honours Retry-After, 400 bisects, 401 is fatal."""
    port = scripted.server_address[1]
    pts = [Point("ruuvi", {"mac": "m"}, {"temperature": 1.5}, 10**18 + i) for i in range(4)]
    # 429 with Retry-After, then: the whole batch 400 -> halves: first half 204, second half 400 -> singles 204, 400.
    Scripted.script = [(429, {"Retry-After": "1"}), (400, {}), (204, {}), (400, {}), (204, {}), (400, {})]

    async def run() -> None:
        sink = open_sink(f"influx2://127.0.0.1:{port}?org=o&bucket=b", options=FAST)
        out = await sink.write(pts)
        assert out.written == 3
        assert [(p.time_ns, reason[:8]) for p, reason in out.rejected] == [(10**18 + 3, "HTTP 400")]
        Scripted.script = [(401, {})]
        with pytest.raises(SinkAuthError, match="401"):
            await sink.write(pts)
        await sink.close()

    asyncio.run(run())
    t = Scripted.seen
    assert t[1] - t[0] >= 0.95
    assert all(p.startswith("/api/v2/write?") and "bucket=b" in p and "org=o" in p for p in Scripted.paths)
