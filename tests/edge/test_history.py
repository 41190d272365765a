"""History download over GATT: the real bleak against a fake BlueZ whose tag serves Ruuvi's log-read protocol over the
Nordic UART service (tests/edge/fakebluez.py HistoryTag). History readings go into the real buffer (Store)."""
import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from fakebluez import FakeBlueZ

from edge.history import HISTORY_FORMAT, HistoryFiller, HistorySettings, LogParser, NoHistory, read_log
from edge.model import Reading
from edge.sources.encode import df5
from edge.store import Store

MAC = "c1:00:00:00:00:01"
PLAIN = "c1:00:00:00:00:02"
STEP = 60  # the tag logs once a minute here
T0 = (int(time.time()) // STEP - 120) * STEP  # two hours of log, ending now


def tag_log() -> list[tuple[int, float, float, int]]:
    # Negative temperatures and pressures above 65535 Pa: the values ruuvitag-sensor's reader gets wrong.
    return [(T0 + i * STEP, -10.0 + i * 0.25, 40.0 + i * 0.1, 99_000 + i) for i in range(120)]


def advert(mac: str) -> bytes:
    return df5(temperature=5.0, humidity=40.0, pressure=99_000, sequence=1, mac=mac)


def live(mac: str, t_s: int) -> Reading:
    return Reading(mac, t_s * 1_000_000_000, time.monotonic_ns(), True, -60, 5, b"", {})


def settings(**kw: Any) -> HistorySettings:
    base: dict[str, Any] = {"enabled": True, "gap_threshold_s": 300.0, "timeout_s": 10.0, "backoff_min_s": 0.0,
                            "backoff_max_s": 0.0, "adapter": "hci0"}
    return HistorySettings(**{**base, **kw})


def history_rows(db: Path) -> list[tuple[str, int, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT mac, time_ns, fields_json FROM readings WHERE data_format = ? ORDER BY time_ns",
                            (HISTORY_FORMAT,)).fetchall()


def test_parser_reads_signed_values_and_needs_the_end_marker() -> None:
    p = LogParser()
    t = (1_700_000_000).to_bytes(4, "big")
    p.feed(bytes([0x3A, 0x30, 0x10]) + t + (-1876).to_bytes(4, "big", signed=True))
    p.feed(bytes([0x3A, 0x31, 0x10]) + t + (4012).to_bytes(4, "big"))
    p.feed(bytes([0x3A, 0x32, 0x10]) + t + (101_325).to_bytes(4, "big"))
    assert len(p.records) == 1 and not p.done  # complete with its third value
    p.feed(bytes([0x3A, 0x3A, 0x10]) + b"\xff" * 8)
    assert p.done and [(r.time_s, r.temperature, r.humidity, r.pressure) for r in p.records] == [
        (1_700_000_000, -18.76, 40.12, 101_325)]


def test_a_30_minute_outage_is_filled_exactly(bluez: FakeBlueZ, tmp_path: Path) -> None:
    """The gateway stopped for 30 minutes of tag time: its last live reading (in the buffer) is at `stop`, the next
    at `restart`. Exactly the logged measurements strictly between them are stored, with the tag's timestamps."""
    db = tmp_path / "buffer.db"
    stop, restart = T0 + 60 * STEP, T0 + 90 * STEP
    expected = {t for t, *_ in tag_log() if stop < t < restart}
    assert len(expected) == 29

    async def main() -> HistoryFiller:
        await bluez.connect()
        tag = await bluez.add_history_tag(0, MAC, advert(MAC), tag_log())
        store = Store(db)
        filler = HistoryFiller(settings(), lambda r: store.add([r]), {MAC: stop * 1_000_000_000})
        filler.observe(live(MAC, restart))
        assert filler.tags[MAC].state == "pending"
        await filler.fetch(MAC, filler.tags[MAC])
        store.close()
        assert tag.reads == [(tag.reads[0][0], stop + 1)]  # asked from the gap's start, not the whole log
        await bluez.close()
        return filler

    filler = asyncio.run(main())
    rows = history_rows(db)
    assert {t // 1_000_000_000 for _, t, _ in rows} == expected
    assert len(rows) == len(expected)
    first = next(r for r in tag_log() if r[0] == min(expected))
    assert rows[0][2] == (f'{{"data_format":58,"temperature":{first[1]},"humidity":{first[2]},'
                          f'"pressure":{first[3]}}}')
    assert filler.report()[MAC] == {"state": "idle", "gaps": [], "records": 29, "downloads": 1, "failures": 0,
                                    "last_error": ""}
    assert filler.counts == {"history_downloads": 1, "history_records": 29, "history_failures": 0}


def test_two_gaps_one_read_and_the_live_readings_between_them_win(bluez: FakeBlueZ, tmp_path: Path) -> None:
    """Two gaps found before the download ran: one read from the older gap's start serves both, and the log's
    records between them, where live readings were heard, are not stored a second time."""
    db = tmp_path / "buffer.db"
    heard = [T0 + 10 * STEP, *range(T0 + 30 * STEP, T0 + 51 * STEP, STEP), T0 + 70 * STEP]
    expected = {t for t, *_ in tag_log() if T0 + 10 * STEP < t < T0 + 30 * STEP or T0 + 50 * STEP < t < T0 + 70 * STEP}
    assert len(expected) == 38

    async def main() -> tuple[HistoryFiller, list[tuple[int, int]]]:
        await bluez.connect()
        tag = await bluez.add_history_tag(0, MAC, advert(MAC), tag_log())
        store = Store(db)
        filler = HistoryFiller(settings(), lambda r: store.add([r]), {MAC: heard[0] * 1_000_000_000})
        for t in heard[1:]:
            filler.observe(live(MAC, t))
        assert filler.tags[MAC].gaps == [[T0 + 10 * STEP, T0 + 30 * STEP], [T0 + 50 * STEP, T0 + 70 * STEP]]
        await filler.fetch(MAC, filler.tags[MAC])
        store.close()
        await bluez.close()
        return filler, tag.reads

    filler, reads = asyncio.run(main())
    assert [t // 1_000_000_000 for _, t, _ in history_rows(db)] == sorted(expected)
    assert [since for _, since in reads] == [T0 + 10 * STEP + 1]
    assert filler.report()[MAC] == {"state": "idle", "gaps": [], "records": 38, "downloads": 1, "failures": 0,
                                    "last_error": ""}


def test_a_download_cut_off_halfway_resumes_without_duplicates(bluez: FakeBlueZ, tmp_path: Path) -> None:
    db = tmp_path / "buffer.db"
    stop, restart = T0 + 30 * STEP, T0 + 60 * STEP
    expected = {t for t, *_ in tag_log() if stop < t < restart}

    async def main() -> tuple[HistoryFiller, list[tuple[int, int]]]:
        await bluez.connect()
        tag = await bluez.add_history_tag(0, MAC, advert(MAC), tag_log())
        tag.cut_after = 12  # the link drops after 12 records
        store = Store(db)
        filler = HistoryFiller(settings(timeout_s=20.0), lambda r: store.add([r]), {MAC: stop * 1_000_000_000})
        filler.observe(live(MAC, restart))
        started = time.monotonic()
        await filler.fetch(MAC, filler.tags[MAC])
        # The disconnect ends the download at once (bleak's disconnected callback), not its 20 s timeout.
        assert time.monotonic() - started < 5
        state = filler.tags[MAC]
        assert (state.state, state.records, state.failures) == ("pending", 12, 1)
        assert state.last_error == f"{MAC}: the link dropped after 12 records"
        await filler.fetch(MAC, state)  # the retry (backoff 0 here)
        store.close()
        await bluez.close()
        return filler, tag.reads

    filler, reads = asyncio.run(main())
    rows = history_rows(db)
    assert [t // 1_000_000_000 for _, t, _ in rows] == sorted(expected)  # each once, none missing
    assert reads[1][1] == stop + 12 * STEP + 1  # resumed after the last record received, not from the start
    assert filler.counts == {"history_downloads": 2, "history_records": 29, "history_failures": 1}
    assert filler.tags[MAC].state == "idle"


def test_a_cut_off_download_resumes_after_a_gateway_restart(bluez: FakeBlueZ, tmp_path: Path) -> None:
    """The link drops after 12 records and the gateway restarts before the retry: the open part of the gap, saved
    with the status, is fetched by the next run's scheduler, from the 13th record on."""
    db = tmp_path / "buffer.db"
    stop, restart = T0 + 30 * STEP, T0 + 60 * STEP
    expected = {t for t, *_ in tag_log() if stop < t < restart}

    async def main() -> tuple[HistoryFiller, list[tuple[int, int]]]:
        await bluez.connect()
        tag = await bluez.add_history_tag(0, MAC, advert(MAC), tag_log())
        tag.cut_after = 12
        store = Store(db)
        first = HistoryFiller(settings(), lambda r: store.add([r]), {MAC: stop * 1_000_000_000})
        first.observe(live(MAC, restart))
        await first.fetch(MAC, first.tags[MAC])
        saved = first.report()
        # The next run: its last seen is the live reading after the gap, so it finds no gap by itself.
        second = HistoryFiller(settings(), lambda r: store.add([r]), {MAC: restart * 1_000_000_000})
        second.restore(saved)
        second.observe(live(MAC, restart + 10))
        runner = asyncio.create_task(second.run())
        deadline = time.monotonic() + 10
        while second.tags[MAC].state != "idle" and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        runner.cancel()
        store.close()
        await bluez.close()
        return second, tag.reads

    second, reads = asyncio.run(main())
    assert [t // 1_000_000_000 for _, t, _ in history_rows(db)] == sorted(expected)
    assert [since for _, since in reads] == [stop + 1, stop + 12 * STEP + 1]
    assert second.counts == {"history_downloads": 1, "history_records": 17, "history_failures": 0}
    # The saved error stays shown until a newer one; the records count carries over.
    assert second.report()[MAC] == {"state": "idle", "gaps": [], "records": 29, "downloads": 1, "failures": 0,
                                    "last_error": f"{MAC}: the link dropped after 12 records"}


def test_a_tag_without_history_is_not_asked_twice(bluez: FakeBlueZ) -> None:
    calls: list[str] = []

    async def counting_reader(mac: str, *args: Any, **kw: Any) -> int:
        calls.append(mac)
        return await read_log(mac, *args, **kw)

    async def main() -> HistoryFiller:
        await bluez.connect()
        await bluez.add_tag(1, PLAIN, advert(PLAIN))  # advertises, no GATT application
        filler = HistoryFiller(settings(), lambda r: None, {PLAIN: T0 * 1_000_000_000}, reader=counting_reader)
        filler.observe(live(PLAIN, T0 + 30 * STEP))
        runner = asyncio.create_task(filler.run())
        deadline = time.monotonic() + 10
        while filler.tags[PLAIN].state != "unsupported" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        filler.observe(live(PLAIN, T0 + 90 * STEP))  # another gap later
        await asyncio.sleep(0.5)
        runner.cancel()
        # The gateway restarts: what the last run saved in the buffer's status says this tag has no log.
        again = HistoryFiller(settings(), lambda r: None, {PLAIN: (T0 + 90 * STEP) * 1_000_000_000},
                              reader=counting_reader)
        again.restore(filler.report())
        again.observe(live(PLAIN, T0 + 120 * STEP))
        runner = asyncio.create_task(again.run())
        await asyncio.sleep(0.5)
        runner.cancel()
        assert again.tags[PLAIN].state == "unsupported"
        await bluez.close()
        return filler

    filler = asyncio.run(main())
    assert calls == [PLAIN]
    assert filler.tags[PLAIN].state == "unsupported"
    assert "no Nordic UART service" in filler.tags[PLAIN].last_error
    assert filler.counts == {"history_downloads": 1, "history_records": 0, "history_failures": 0}


def test_no_history_is_raised_by_the_reader(bluez: FakeBlueZ) -> None:
    async def main() -> None:
        await bluez.connect()
        await bluez.add_tag(1, PLAIN, advert(PLAIN))
        with pytest.raises(NoHistory):
            await read_log(PLAIN, 0, int(time.time()), adapter="hci0", timeout_s=5, on_record=lambda r: None)
        await bluez.close()

    asyncio.run(main())


def test_history_readings_leave_the_tags_live_state_alone(tmp_path: Path) -> None:
    """A 0x3A reading from the log is not a data-format change, and its past time is not the tag's last seen."""
    store = Store(tmp_path / "buffer.db")
    now = int(time.time())
    payload = df5(temperature=5.0, humidity=40.0, pressure=99_000, sequence=7, mac=MAC)
    fields = {"data_format": 5, "temperature": 5.0, "humidity": 40.0, "pressure": 99_000,
              "measurement_sequence_number": 7}
    store.add([Reading(MAC, now * 1_000_000_000, time.monotonic_ns(), True, -60, 5, payload, fields)])
    before = store.report()["tags"]
    store.add([Reading(MAC, (now - 600) * 1_000_000_000, time.monotonic_ns(), True, None, HISTORY_FORMAT, b"",
                       {"data_format": HISTORY_FORMAT, "temperature": 4.0, "humidity": 41.0, "pressure": 99_001})])
    after = store.report()["tags"]
    store.close()
    assert [(t["data_format"], t["last_seen_ns"], t["received"], t["expected"]) for t in after] == [
        (5, now * 1_000_000_000, 1, 1)]
    # Everything else too (the age moves with the clock): the last values are still the live advert's.
    assert [{k: v for k, v in t.items() if k != "last_seen_age_s"} for t in after] == [
        {k: v for k, v in t.items() if k != "last_seen_age_s"} for t in before]
