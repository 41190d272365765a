"""The 1.x sink against the real influxd 1.6.7: writes, escaping, and every class of write error it produces."""

from __future__ import annotations

import asyncio
import gzip
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from servers import Influxd, series_values

from cloud.formats.ruuvi_gateway import parse as parse_ruuvi
from cloud.model import Point
from cloud.sinks import open_sink
from cloud.sinks.base import SinkAuthError, SinkOptions
from cloud.sinks.influx1 import Influx1Client, Target

FAST = SinkOptions(backoff_initial_s=0.05, backoff_max_s=0.2, timeout_s=5)
T0 = 1_763_913_600_000_000_000


def pt(i: int, temperature: float | int = 21.5, mac: str = "aa:bb:cc:dd:ee:01") -> Point:
    return Point(
        "ruuvi",
        {"mac": mac, "gateway": "gw1", "data_format": "5"},
        {"temperature": temperature, "humidity": 40.25, "battery_voltage": 2977, "rssi": -70},
        T0 + i * 1_000_000_000,
    )


def create_db(db: Influxd, name: str = "iot") -> None:
    db.query(f'CREATE DATABASE "{name}"', method="POST")


def count(db: Influxd, name: str = "iot") -> int:
    rows = series_values(db.query('SELECT count("humidity") FROM "ruuvi"', name))
    return int(rows[0][1]) if rows else 0


def test_write_reads_back_exact_values_and_types(influxd: Influxd) -> None:
    create_db(influxd)

    async def run() -> None:
        sink = open_sink(f"{influxd.url}/iot", options=FAST)
        out = await sink.write([pt(i, 20.0 + i) for i in range(3)])
        assert (out.written, out.rejected) == (3, [])
        assert sink.state == "ok"
        await sink.close()

    asyncio.run(run())
    rows = series_values(influxd.query('SELECT temperature, humidity, battery_voltage, rssi FROM "ruuvi"', "iot"))
    assert rows == [
        ["2025-11-23T16:00:00Z", 20.0, 40.25, 2977, -70],
        ["2025-11-23T16:00:01Z", 21.0, 40.25, 2977, -70],
        ["2025-11-23T16:00:02Z", 22.0, 40.25, 2977, -70],
    ]
    types = series_values(influxd.query('SHOW FIELD KEYS FROM "ruuvi"', "iot"))
    assert sorted(types) == [
        ["battery_voltage", "integer"],
        ["humidity", "float"],
        ["rssi", "integer"],
        ["temperature", "float"],
    ]


def test_tag_escaping_commas_spaces_equals_newlines_read_back(influxd: Influxd) -> None:
    create_db(influxd)
    gw = "gw, one=two\nthree four"
    payload = (
        '{"gw_mac":"' + gw.replace("\n", "\\n") + '","rssi":-70,"aoa":[],"gwts":1763913600,"ts":1763913600,'
        '"data":"0201061BFF99040512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F","coords":""}'
    ).encode()
    parsed = parse_ruuvi("ruuvi/x/CB:B8:33:4C:88:4F", payload)
    assert parsed.points[0].tags["gateway"] == gw

    async def run() -> None:
        sink = open_sink(f"{influxd.url}/iot", options=FAST)
        out = await sink.write(parsed.points)
        assert out.written == 1
        await sink.close()

    asyncio.run(run())
    tags = series_values(influxd.query('SHOW TAG VALUES FROM "ruuvi" WITH KEY = "gateway"', "iot"))
    # The newline is the one character line protocol can't carry: it arrives as the two characters \n.
    assert tags == [["gateway", "gw, one=two\\nthree four"]]
    rows = series_values(
        influxd.query("SELECT temperature, pressure FROM ruuvi WHERE gateway = 'gw, one=two\\\\nthree four'", "iot")
    )
    # ts has whole seconds; the measurement's sequence number (205) is its nanoseconds within the second.
    assert rows == [["2025-11-23T16:00:00.000000205Z", 24.3, 100044.0]]


def test_partial_write_rejects_only_the_conflicting_points(influxd: Influxd) -> None:
    create_db(influxd)
    batch = [pt(i, 20.5) for i in range(100)]
    batch[17] = pt(17, 21)  # an int where the series has floats: field type conflict
    batch[63] = pt(63, 22)

    async def run() -> None:
        sink = open_sink(f"{influxd.url}/iot", options=FAST)
        assert (await sink.write([pt(1000)])).written == 1  # temperature becomes a float field
        out = await sink.write(batch)
        assert out.written == 98
        assert [p.time_ns for p, _ in out.rejected] == [batch[17].time_ns, batch[63].time_ns]
        for _, reason in out.rejected:
            assert reason.startswith("HTTP 400: ")
            assert "field type conflict" in reason
        await sink.close()

    asyncio.run(run())
    assert count(influxd) == 99


def test_retention_policy_missing_is_retried_then_written(influxd: Influxd) -> None:
    """404 database not found: retried (setup may be running), never dead-lettered."""

    async def run() -> None:
        sink = open_sink(f"{influxd.url}/iot", options=FAST)
        task = asyncio.create_task(sink.write([pt(1)]))
        await asyncio.sleep(0.5)
        assert not task.done()
        assert sink.state == "retrying"
        assert sink.last_error is not None and "database not found" in sink.last_error
        await asyncio.to_thread(create_db, influxd)
        out = await asyncio.wait_for(task, 10)
        assert out.written == 1
        await sink.close()

    asyncio.run(run())
    assert count(influxd) == 1


class BodyLimitedInfluxd(Influxd):
    def config_text(self) -> str:
        return super().config_text().replace("max-body-size = 0", "max-body-size = 2000")


def test_413_splits_the_batch(tmp_path: Path) -> None:
    db = BodyLimitedInfluxd(tmp_path / "small").start()
    try:
        create_db(db)

        async def run() -> None:
            # Uncompressed: ~130 B per line, so 100 lines is ~13 kB, over the 2000-byte limit.
            sink = open_sink(f"{db.url}/iot", options=SinkOptions(gzip=False))
            out = await sink.write([pt(i, 20.0 + i / 8) for i in range(100)])
            assert (out.written, out.rejected) == (100, [])
            await sink.close()

        asyncio.run(run())
        assert count(db) == 100
    finally:
        db.stop()


def test_401_raises_auth_error(tmp_path: Path) -> None:
    db = Influxd(tmp_path / "auth", auth=True).start()
    try:
        db.query("CREATE USER admin WITH PASSWORD 'secret' WITH ALL PRIVILEGES", method="POST")
        admin = Influx1Client(Target.from_url(f"http://admin:secret@127.0.0.1:{db.port}/iot"), FAST)
        admin.query('CREATE DATABASE "iot"')

        async def run() -> None:
            bad = open_sink(f"http://admin:wrong@127.0.0.1:{db.port}/iot", options=FAST)
            with pytest.raises(SinkAuthError, match="401"):
                await bad.write([pt(1)])
            assert bad.state == "auth_failed"
            await bad.close()
            good = open_sink(f"http://admin:secret@127.0.0.1:{db.port}/iot", options=FAST)
            assert (await good.write([pt(1)])).written == 1
            await good.close()

        asyncio.run(run())
        result = admin.query('SELECT count("humidity") FROM "ruuvi"', db="iot")
        assert result[0]["series"][0]["values"][0][1] == 1
        admin.close()
    finally:
        db.stop()


def test_influxd_down_then_up_mid_stream(influxd: Influxd) -> None:
    create_db(influxd)

    async def run() -> None:
        sink = open_sink(f"{influxd.url}/iot", options=FAST)
        assert (await sink.write([pt(i) for i in range(10)])).written == 10
        await asyncio.to_thread(influxd.stop)
        task = asyncio.create_task(sink.write([pt(i) for i in range(10, 20)]))
        await asyncio.sleep(0.6)
        assert not task.done()
        assert sink.state == "retrying"
        assert sink.last_error is not None
        await asyncio.to_thread(influxd.start)
        out = await asyncio.wait_for(task, 20)
        assert (out.written, out.rejected) == (10, [])
        assert sink.state == "ok"
        await sink.close()

    asyncio.run(run())
    assert count(influxd) == 20


class Scripted(http.server.BaseHTTPRequestHandler):
    """A loopback HTTP server answering /write with a scripted list of (status, headers); then 204."""

    script: ClassVar[list[tuple[int, dict[str, str]]]] = []
    seen: ClassVar[list[float]] = []
    bodies: ClassVar[list[bytes]] = []
    paths: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.paths.append(self.path)
        self.seen.append(time.monotonic())
        status, headers = self.script.pop(0) if self.script else (204, {})
        if status == 0:  # a server that hangs: answer only after the client has timed out
            time.sleep(1.0)
            status = 204
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[http.server.ThreadingHTTPServer]:
    Scripted.script, Scripted.seen, Scripted.bodies, Scripted.paths = [], [], [], []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_429_and_503_honour_retry_after(scripted: http.server.ThreadingHTTPServer) -> None:
    Scripted.script = [(429, {"Retry-After": "1"}), (503, {"Retry-After": "1"}), (500, {})]
    port = scripted.server_address[1]

    async def run() -> None:
        sink = open_sink(f"http://127.0.0.1:{port}/iot", options=FAST)
        out = await sink.write([pt(1), pt(2)])
        assert (out.written, out.rejected) == (2, [])
        await sink.close()

    asyncio.run(run())
    t = Scripted.seen
    assert len(t) == 4
    assert t[1] - t[0] >= 0.95  # Retry-After: 1 after the 429
    assert t[2] - t[1] >= 0.95  # and after the 503
    assert t[3] - t[2] < 0.5  # the 500 without Retry-After: our own (short, test-sized) backoff
    assert all(gzip.decompress(b).count(b"\n") == 2 for b in Scripted.bodies)  # gzip, the same 2 lines each time


def test_write_is_cancellable_while_retrying(scripted: http.server.ThreadingHTTPServer) -> None:
    Scripted.script = [(503, {})] * 1000
    port = scripted.server_address[1]

    async def run() -> None:
        sink = open_sink(f"http://127.0.0.1:{port}/iot", options=FAST)
        task = asyncio.create_task(sink.write([pt(1)]))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert sink.state == "retrying"
        assert sink.last_error == "HTTP 503: "
        await sink.close()

    asyncio.run(run())


def test_timeout_is_retried(scripted: http.server.ThreadingHTTPServer) -> None:
    Scripted.script = [(0, {})]
    port = scripted.server_address[1]

    async def run() -> None:
        sink = open_sink(f"http://127.0.0.1:{port}/iot", options=SinkOptions(timeout_s=0.3, backoff_initial_s=0.05))
        out = await sink.write([pt(1)])
        assert (out.written, out.rejected) == (1, [])
        await sink.close()

    asyncio.run(run())
    assert len(Scripted.seen) == 2  # the timed-out attempt, then the retry
