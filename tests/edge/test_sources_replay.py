"""replay:FILE and the Recorder: the capture format, pacing, and bad lines counted and skipped."""

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from edge.metrics import Counters
from edge.model import Advert
from edge.sources import Recorder, SourceError, SourceOptions, open_source
from edge.sources.replay import ReplaySource
from edge.sources.simulate import Fleet

DF5 = "0512fc5394c37c0004fffc040cac364200cdcbb8334c884f"


def replay(path: Path, **options: Any) -> tuple[ReplaySource, list[Advert]]:
    source = open_source(f"replay:{path}", SourceOptions(**options), Counters())
    assert isinstance(source, ReplaySource)
    got: list[Advert] = []
    asyncio.run(source.run(got.append))
    return source, got


def test_recorder_writes_the_documented_format(tmp_path: Path) -> None:
    path = tmp_path / "cap.jsonl"
    before = time.time_ns()
    with Recorder(path) as rec:
        rec.write(Advert("cb:b8:33:4c:88:4f", bytes.fromhex(DF5), -71), 1000.25)
        rec.write(Advert("C4:00:00:00:00:01", b"\x03\x01", None), 1000.6875)
    lines = path.read_bytes().splitlines()
    header = json.loads(lines[0])
    assert header.keys() == {"format", "version", "started_ns"}
    assert (header["format"], header["version"]) == ("edge-gw-capture", 1)
    assert before <= header["started_ns"] <= time.time_ns()
    assert lines[1:] == [
        b'{"t":0.0,"mac":"cb:b8:33:4c:88:4f","rssi":-71,"data":"' + DF5.encode() + b'"}',
        b'{"t":0.4375,"mac":"c4:00:00:00:00:01","rssi":null,"data":"0301"}',
    ]
    assert rec.written == 2


def test_round_trip_as_fast_as_possible(tmp_path: Path) -> None:
    adverts = [Fleet(25, seed=11).next() for _ in range(5000)]
    path = tmp_path / "cap.jsonl"
    with Recorder(path) as rec:
        for i, adv in enumerate(adverts):
            rec.write(adv, 50.0 + i * 0.01)  # 50 s of capture
    start = time.monotonic()
    source, got = replay(path, realtime=False)
    assert time.monotonic() - start < 5
    assert got == adverts
    assert source.state() == {"kind": "replay", "file": str(path), "realtime": False, "emitted": 5000,
                              "bad_lines": 0, "last_error": "", "finished": True}


def test_realtime_replay_keeps_the_recorded_pace(tmp_path: Path) -> None:
    path = tmp_path / "cap.jsonl"
    with Recorder(path) as rec:
        for i in range(7):
            rec.write(Advert("c4:00:00:00:00:01", bytes.fromhex(DF5), -60), 3.0 + i * 0.05)
    times: list[float] = []
    source = open_source(f"replay:{path}", SourceOptions(realtime=True), Counters())
    start = time.monotonic()
    asyncio.run(source.run(lambda a: times.append(time.monotonic() - start)))
    assert len(times) == 7
    for i, t in enumerate(times):
        assert i * 0.05 - 0.005 <= t <= i * 0.05 + 0.15


def test_count_stops_the_replay(tmp_path: Path) -> None:
    path = tmp_path / "cap.jsonl"
    with Recorder(path) as rec:
        for i in range(10):
            rec.write(Advert("c4:00:00:00:00:01", bytes([5, i]), -60), i)
    _, got = replay(path, realtime=False, count=4)
    assert [a.payload[1] for a in got] == [0, 1, 2, 3]


def test_bad_lines_are_counted_and_skipped(tmp_path: Path, caplog: Any) -> None:
    good = '{"t": 0.5, "mac": "C4:00:00:00:00:01", "rssi": -60, "data": "0301"}'
    bad = [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"mac": "c4:00:00:00:00:01", "rssi": -60, "data": "0301"}', "'t' must be a number >= 0, got None"),
        ('{"t": -1, "mac": "c4:00:00:00:00:01", "rssi": -60, "data": "0301"}', "'t' must be a number >= 0, got -1"),
        ('{"t": true, "mac": "c4:00:00:00:00:01", "rssi": -60, "data": "0301"}', "'t' must be a number"),
        ('{"t": 1, "mac": "c4:00:00:00:01", "rssi": -60, "data": "0301"}', "'mac' must look like"),
        ('{"t": 1, "mac": "c4:00:00:00:00:01", "rssi": "-60", "data": "0301"}', "'rssi' must be an integer or null"),
        ('{"t": 1, "mac": "c4:00:00:00:00:01", "rssi": -60, "data": "zz"}', "'data' is not hex"),
        ('{"t": 1, "mac": "c4:00:00:00:00:01", "rssi": -60, "data": ""}', "'data' must be a non-empty hex string"),
    ]
    path = tmp_path / "cap.jsonl"
    body = [good] + [line for line, _ in bad] + ["", good]
    path.write_bytes(b'{"format": "edge-gw-capture", "version": 1, "started_ns": 0}\n'
                     + "\n".join(body).encode() + b"\n\xff\xfe garbage bytes\n" + good.encode() + b"\n")
    with caplog.at_level(logging.WARNING, logger="edge.sources.replay"):
        source, got = replay(path, realtime=False)
    assert got == [Advert("c4:00:00:00:00:01", b"\x03\x01", -60)] * 3
    state = source.state()
    assert (state["emitted"], state["bad_lines"]) == (3, len(bad) + 1)
    assert state["last_error"].startswith(f"line {len(body) + 2}: not JSON")
    messages = [r.getMessage() for r in caplog.records]
    for n, (_, why) in enumerate(bad, start=3):
        assert any(f"skipping line {n}: {why}" in m for m in messages), (n, why)
    assert messages[-1] == f"replay {path}: {len(bad) + 1} bad line(s) skipped; last: {state['last_error']}"


def test_a_flood_of_bad_lines_logs_a_bounded_number(tmp_path: Path, caplog: Any) -> None:
    path = tmp_path / "cap.jsonl"
    path.write_text('{"format": "edge-gw-capture", "version": 1}\n' + "junk\n" * 500)
    with caplog.at_level(logging.WARNING, logger="edge.sources.replay"):
        source, got = replay(path, realtime=False)
    assert (got, source.state()["bad_lines"]) == ([], 500)
    assert len(caplog.records) == 22  # 20 lines, "more bad lines", the summary


@pytest.mark.parametrize(("content", "message"), [
    (b"", "line 1 is not an edge-gw capture header"),
    (b'{"t": 0, "mac": "c4:00:00:00:00:01", "rssi": 1, "data": "05"}\n', "line 1 is not an edge-gw capture header"),
    (b'{"format": "edge-gw-capture", "version": 2}\n',
     "capture version 2 is not supported (this edge-gw reads version 1)"),
])
def test_not_a_capture_is_a_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "cap.jsonl"
    path.write_bytes(content)
    with pytest.raises(SourceError, match="^replay .*cap.jsonl: " + message.replace("(", r"\(").replace(")", r"\)")):
        open_source(f"replay:{path}", SourceOptions(), Counters())


def test_missing_file_and_empty_spec(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"cannot read the capture \(No such file or directory\)"):
        open_source(f"replay:{tmp_path / 'nope.jsonl'}", SourceOptions(), Counters())
    with pytest.raises(SourceError, match="unknown source 'replay:'"):
        open_source("replay:", SourceOptions(), Counters())


def test_empty_recording_replays_nothing(tmp_path: Path) -> None:
    path = tmp_path / "cap.jsonl"
    with Recorder(path):
        pass
    _, got = replay(path)
    assert got == []


def test_write_outside_the_context_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not open"):
        Recorder(tmp_path / "x.jsonl").write(Advert("c4:00:00:00:00:01", b"\x05", None), 0.0)
