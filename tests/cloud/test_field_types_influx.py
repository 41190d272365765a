"""Field types in the real influxd 1.6.7 (issue 17, item 3): every format writes a field with one type, so flat
sensors and edge gateways share the `ruuvi` measurement in one shard in either order; and a batch the database
refuses as a whole is rejected in one request instead of being bisected."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest
from servers import Influxd, series_values

from cloud.formats import Router
from cloud.model import Point
from cloud.sinks import open_sink
from cloud.sinks.base import SinkOptions, dropped_all
from cloud.sinks.influx1 import Influx1Sink
from core.ruuvi import decode
from edge.model import Reading
from edge.wire import encode_batch

FAST = SinkOptions(backoff_initial_s=0.05, backoff_max_s=0.2, timeout_s=10)
# 2025-11-24 00:00 UTC, a Monday: 7-day shard groups start on Thursdays, so the minutes after it are one shard.
T0 = 1_763_942_400_000_000_000
S = 1_000_000_000
DF5 = bytes.fromhex("0512fc5394c37c0004fffc040cac364200cdcbb8334c884f")
# docs/wire-format.md "InfluxDB types" for the fields both formats write here, plus a flat-only one.
EXPECTED_TYPES = [
    ["acceleration_x", "integer"],
    ["acceleration_y", "integer"],
    ["acceleration_z", "integer"],
    ["battery_voltage", "integer"],
    ["co2_ppm", "float"],
    ["door_open", "boolean"],
    ["humidity", "float"],
    ["measurement_sequence_number", "integer"],
    ["movement_counter", "integer"],
    ["pressure", "float"],
    ["rssi", "integer"],
    ["temperature", "float"],
    ["tx_power", "integer"],
]


def flat_points(router: Router, n: int, t0: int) -> list[Point]:
    """n flat-sensor messages as a non-Ruuvi device words them: integers and floats in any JSON form."""
    out: list[Point] = []
    for i in range(n):
        payload = (
            f'{{"temperature":{20 + i % 5},"humidity":41.5,"pressure":101325,"battery_voltage":{2900 + i}.0,'
            f'"rssi":-{60 + i % 30},"co2_ppm":{400 + i},"door_open":{"true" if i % 2 else "false"},'
            f'"timestamp":{(t0 + i * S) // S}}}'
        ).encode()
        out.extend(router.route(f"sensors/flat-{i % 7}", payload, received_ns=t0 + n * S).points)
    return out


def edge_points(router: Router, n: int, t0: int) -> list[Point]:
    """n DF5 readings of an edge gateway, as edge.wire encodes them."""
    fields = decode(DF5)
    readings = [Reading(f"aa:bb:cc:dd:00:{i % 256:02x}", t0 + i * S, i, True, -70, 5, DF5, fields) for i in range(n)]
    return router.route("edge-gw/pi-1/batch", encode_batch("pi-1", 1, readings), received_ns=t0 + n * S).points


def write(influxd: Influxd, points: Sequence[Point]) -> tuple[int, int]:
    async def run() -> tuple[int, int]:
        sink = open_sink(f"{influxd.url}/iot", options=FAST)
        out = await sink.write(points)
        await sink.close()
        return out.written, len(out.rejects)

    return asyncio.run(run())


def stored(influxd: Influxd, data_format: str) -> int:
    rows = series_values(
        influxd.query(f"SELECT count(temperature) FROM ruuvi WHERE data_format = '{data_format}'", "iot")
    )
    return int(rows[0][1]) if rows else 0


@pytest.mark.parametrize("first", ["flat", "edge"])
def test_flat_and_edge_share_one_shard_in_either_order(influxd: Influxd, first: str) -> None:
    influxd.query("CREATE DATABASE iot", method="POST")
    router = Router(clock=lambda: T0 + 10**6 * S)
    batches = {"flat": flat_points(router, 500, T0), "edge": edge_points(router, 500, T0 + 600 * S)}
    second = "edge" if first == "flat" else "flat"
    assert write(influxd, batches[first]) == (500, 0)
    assert write(influxd, batches[second]) == (500, 0)
    assert (stored(influxd, "flat"), stored(influxd, "5")) == (500, 500)
    shards = [r for r in series_values(influxd.query("SHOW SHARDS")) if r[1] == "iot"]
    assert len(shards) == 1
    assert sorted(series_values(influxd.query("SHOW FIELD KEYS FROM ruuvi", "iot"))) == EXPECTED_TYPES
    rows = series_values(
        influxd.query("SELECT battery_voltage, rssi, co2_ppm FROM ruuvi WHERE mac = 'flat-1' LIMIT 1", "iot")
    )
    assert rows == [["2025-11-24T00:00:01Z", 2901, -61, 401.0]]


def counting(sink: Influx1Sink) -> list[int]:
    """The number of points of every /write request the sink sends from now on."""
    sizes: list[int] = []
    send = sink.client.write_lines

    def write_lines(lines: Sequence[str]) -> object:
        sizes.append(len(lines))
        return send(lines)

    sink.client.write_lines = write_lines  # type: ignore[method-assign,assignment]
    return sizes


def refused(
    influxd: Influxd, url: str, setup: Sequence[Point], points: Sequence[Point]
) -> tuple[list[int], list[str], float]:
    async def run() -> tuple[list[int], list[str], float]:
        sink = open_sink(url, options=FAST)
        assert isinstance(sink, Influx1Sink)
        if setup:
            assert (await sink.write(setup)).written == len(setup)
        sizes = counting(sink)
        t = time.perf_counter()
        out = await sink.write(points)
        elapsed = time.perf_counter() - t
        await sink.close()
        assert out.written == 0
        assert [r.index for r in out.rejects] == list(range(len(points)))
        assert [r.point for r in out.rejects] == list(points)
        return sizes, [r.reason for r in out.rejects], elapsed

    return asyncio.run(run())


def float_volts(n: int, t0: int) -> list[Point]:
    return [
        Point("ruuvi", {"mac": f"m{i % 50}"}, {"battery_voltage": 2.9, "temperature": 1.0}, t0 + i * S // 1000)
        for i in range(n)
    ]


def test_a_batch_refused_for_one_type_conflict_is_rejected_in_one_request(influxd: Influxd) -> None:
    influxd.query("CREATE DATABASE iot", method="POST")
    setup = [Point("ruuvi", {"mac": "m0"}, {"battery_voltage": 2977}, T0)]
    sizes, reasons, elapsed = refused(influxd, f"{influxd.url}/iot", setup, float_volts(5000, T0))
    assert sizes == [5000]
    assert set(reasons) == {
        'HTTP 400: {"error":"partial write: field type conflict: input field \\"battery_voltage\\" on measurement '
        '\\"ruuvi\\" is type float, already exists as type integer dropped=5000"}'
    }
    print(f"5000 points refused for a type conflict in {elapsed:.3f} s: {5000 / elapsed:,.0f} points/s")
    assert series_values(influxd.query("SELECT count(*) FROM ruuvi", "iot"))[0][1] == 1


def test_a_batch_beyond_the_retention_policy_is_rejected_in_one_request(influxd: Influxd) -> None:
    influxd.query("CREATE DATABASE iot", method="POST")
    influxd.query("CREATE RETENTION POLICY short ON iot DURATION 1h REPLICATION 1", method="POST")
    sizes, reasons, _ = refused(influxd, f"{influxd.url}/iot?rp=short", [], float_volts(5000, T0))
    assert sizes == [5000]
    assert set(reasons) == {'HTTP 400: {"error":"partial write: points beyond retention policy dropped=5000"}'}


def test_an_all_bad_batch_over_two_shards_is_split_once(influxd: Influxd) -> None:
    """InfluxDB answers with the first shard's count only, less than the points sent: the batch is bisected, and
    each half, all in one shard, is rejected at once."""
    influxd.query("CREATE DATABASE iot", method="POST")
    week = 7 * 86400 * S
    setup = [Point("ruuvi", {"mac": "m0"}, {"battery_voltage": 2977}, t) for t in (T0, T0 + week)]
    points = float_volts(100, T0)[:50] + float_volts(50, T0 + week)
    sizes, reasons, _ = refused(influxd, f"{influxd.url}/iot", setup, points)
    assert sizes == [100, 50, 50]
    assert all(r.endswith('dropped=50"}') for r in reasons)


def test_a_mixed_batch_is_still_bisected_to_the_bad_points(influxd: Influxd) -> None:
    influxd.query("CREATE DATABASE iot", method="POST")
    good = [Point("ruuvi", {"mac": "m0"}, {"battery_voltage": 2977}, T0 + i * S) for i in range(64)]
    bad = [Point("ruuvi", {"mac": "m0"}, {"battery_voltage": 2.9}, T0 + (100 + i) * S) for i in range(2)]
    batch = good[:10] + bad[:1] + good[10:50] + bad[1:] + good[50:]

    async def run() -> list[int]:
        sink = open_sink(f"{influxd.url}/iot", options=FAST)
        assert isinstance(sink, Influx1Sink)
        assert (await sink.write(good[:1])).written == 1
        sizes = counting(sink)
        out = await sink.write(batch)
        assert out.written == 64
        assert [r.index for r in out.rejects] == [10, 51]
        await sink.close()
        return sizes

    sizes = asyncio.run(run())
    assert sizes[0] == 66 and len(sizes) > 3  # bisected down to the two single points
    assert series_values(influxd.query("SELECT count(battery_voltage) FROM ruuvi", "iot"))[0][1] == 64


@pytest.mark.parametrize(
    ("text", "sent", "expected"),
    [
        ('{"error":"partial write: points beyond retention policy dropped=3"}\n', 3, True),
        ('{"error":"partial write: points beyond retention policy dropped=3"}', 4, False),
        ('{"code":"invalid","message":"partial write: points beyond retention policy dropped=2"}', 2, True),
        ('{"error":"partial write: unable to parse \'x dropped=2\': invalid field format dropped=0"}', 2, False),
        ('{"error":"field type conflict: input field \\"dropped=2\\" on measurement \\"m\\""}', 2, False),
        ("dropped=2", 2, False),
        ("", 2, False),
    ],
)
def test_dropped_all_reads_only_the_count_at_the_end(text: str, sent: int, expected: bool) -> None:
    assert dropped_all(text, sent) is expected
