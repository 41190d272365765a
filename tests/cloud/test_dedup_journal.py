"""The dedup journal: a real SQLite file keeps the dedup memory across restarts, and a receiver killed with -9 does
not write the other gateway's copy of a measurement it had already written."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from test_receiver_kill import cloud_ingest, run_args, wait_subscribed
from test_receiver_support import Publisher, create_db, edge_batch, mac_text, now_ns, reading, stored, wait_until

from cloud.batcher import Batch
from cloud.config import check_runtime, dedup_state_file, load_config
from cloud.dedup import Dedup, fingerprint
from cloud.dedup_journal import DedupJournal, JournalError, entries
from cloud.metrics import Metrics
from cloud.model import Point
from cloud.monitor import Monitor
from cloud.sinks.base import Rejected, WriteOutcome
from cloud.write_path import Message, WritePath, WritePathSettings
from core.settings import ConfigError, state_dir

S = 1_000_000_000
MS = 1_000_000
T0 = 1_763_900_000 * S


def p(gw: str, tag: int, seq: int | None, t: int, temp: float = 20.0) -> Point:
    fields: dict[str, float | int | bool | str] = {"temperature": temp}
    if seq is not None:
        fields["measurement_sequence_number"] = seq
    return Point("ruuvi", {"mac": f"aa:aa:aa:aa:aa:{tag:02x}", "gateway": gw, "data_format": "5"}, fields, t)


def restarted(path: Path, max_entries: int = 1000) -> tuple[Dedup, DedupJournal]:
    """What a new receiver process does at start-up."""
    d = Dedup(max_entries=max_entries)
    j = DedupJournal(path, max_entries=max_entries)
    d.remember(j.load())
    return d, j


def test_entries_are_the_points_dedup_can_match() -> None:
    pts = [p("gw-a", 1, 7, T0), p("gw-a", 2, None, T0), p("gw-b", 3, 65535, T0 + 5)]
    pts.append(Point("ruuvi", {"gateway": "gw-a"}, {"measurement_sequence_number": 1}, T0))  # no mac
    pts.append(Point("ruuvi", {"mac": "m"}, {"measurement_sequence_number": True}, T0))  # a bool is not a number
    pts.append(Point("other", {"mac": "m"}, {"measurement_sequence_number": 9}, T0 + 1))  # no gateway tag
    fp = fingerprint({"temperature": 20.0})
    assert entries(pts) == [("ruuvi", "aa:aa:aa:aa:aa:01", "5", 7, fp, T0, "gw-a"),
                            ("ruuvi", "aa:aa:aa:aa:aa:03", "5", 65535, fp, T0 + 5, "gw-b"),
                            ("other", "m", "", 9, fingerprint({"measurement_sequence_number": 9}), T0 + 1, "")]


def test_dedup_gives_the_same_entries_for_what_it_keeps() -> None:
    """The write path journals Dedup.filter's entries instead of working them out again: they must be the same."""
    pts = [p("gw-a", 1, 7, T0), p("gw-a", 2, None, T0), p("gw-b", 3, 65535, T0 + 5), p("gw-b", 1, 7, T0 + 9)]
    pts.append(Point("ruuvi", {"gateway": "gw-a"}, {"measurement_sequence_number": 1}, T0))
    pts.append(Point("ruuvi", {"mac": "m"}, {"measurement_sequence_number": True}, T0))
    pts.append(Point("other", {"mac": "m"}, {"measurement_sequence_number": 9}, T0 + 1))
    result = Dedup().filter(pts)
    assert len(result.kept) == 6 and len(result.entries) == 6  # gw-b's copy of tag 1's measurement 7 dropped
    assert [e for e in result.entries if e is not None] == entries(result.kept)
    assert [e is None for e in result.entries] == [False, True, False, True, True, False]


def test_after_a_restart_the_other_gateways_copy_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "dedup.sqlite"
    d, j = restarted(path)
    first = [p("gw-a", i, 100 + i, T0 + i * MS) for i in range(5)] + [p("gw-a", 9, None, T0)]
    kept = d.filter(first).kept
    assert j.record(kept) == 5
    j.close()

    d2, j2 = restarted(path)
    assert len(d2) == 5
    copies = [p("gw-b", i, 100 + i, T0 + i * MS + 200 * MS) for i in range(5)]
    new = p("gw-b", 5, 105, T0 + 5 * MS)
    r = d2.filter([*copies, new])
    assert r.kept == [new]
    assert r.duplicates == {"gw-b": 5}
    # gw-a's own copy again (MQTT redelivery of a message written but not acknowledged before the kill)
    r = d2.filter([p("gw-a", 0, 100, T0)])
    assert r.kept == [] and r.redeliveries == 1
    # other values under the same number: a new measurement (the tag rebooted); its copy is matched in turn
    rebooted = p("gw-b", 1, 101, T0 + 31 * S, temp=25.0)
    assert d2.filter([rebooted]).kept == [rebooted]
    assert d2.filter([p("gw-a", 1, 101, T0 - 3600 * S, temp=25.0)]).duplicates == {"gw-a": 1}
    j2.close()


def test_the_file_keeps_what_the_memory_holds_and_no_more(tmp_path: Path) -> None:
    path = tmp_path / "dedup.sqlite"
    d, j = restarted(path, max_entries=10)
    batches = [[p("gw-a", b * 4 + i, b * 4 + i, T0 + (b * 4 + i) * MS) for i in range(4)] for b in range(5)]
    for batch in batches:
        j.record(d.filter(batch).kept)
    # The newest batches that hold 10 entries: 3 batches of 4 (2 would hold only 8).
    assert j.stored_entries() == 12
    with sqlite3.connect(path) as conn:
        assert [n for (n,) in conn.execute("SELECT n FROM batches ORDER BY id")] == [4, 4, 4]
    j.close()

    d2, j2 = restarted(path, max_entries=10)
    assert len(d2) == 10
    # Both memories forgot the same oldest 10 measurements and hold the same newest 10.
    newest = [p("gw-b", i, i, T0 + i * MS + S) for i in range(10, 20)]
    oldest = [p("gw-b", i, i, T0 + i * MS + S) for i in range(10)]
    for memory in (d2, d):
        r = memory.filter(newest)
        assert r.kept == [] and r.duplicates == {"gw-b": 10}
        assert memory.filter(oldest).kept == oldest
    j2.close()


def test_the_order_of_the_memory_survives(tmp_path: Path) -> None:
    # A key written again later (its sequence number wrapped) is the newest entry, as in the running memory.
    path = tmp_path / "dedup.sqlite"
    d, j = restarted(path, max_entries=2)
    for batch in ([p("gw-a", 1, 5, T0)], [p("gw-a", 2, 5, T0 + 1)], [p("gw-a", 1, 5, T0 + 60 * S, temp=21.0)]):
        j.record(d.filter(batch).kept)
    j.close()
    d2, j2 = restarted(path, max_entries=2)
    r = d2.filter([p("gw-b", 1, 5, T0 + 60 * S + 1, temp=21.0), p("gw-b", 2, 5, T0 + 2)])
    assert r.kept == [] and r.duplicates == {"gw-b": 2}
    j2.close()


def test_the_file_stops_growing(tmp_path: Path) -> None:
    path = tmp_path / "dedup.sqlite"
    d, j = restarted(path, max_entries=1000)

    def pages() -> int:
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return int(conn.execute("PRAGMA page_count").fetchone()[0])

    for b in range(100, 400):  # entries of one size throughout: 3-digit sequence numbers and gateway ids
        j.record(d.filter([p(f"gw-{b}", i, b, T0 + b * S + i) for i in range(100)]).kept)
        if b == 149:
            after_50 = pages()
    assert j.stored_entries() == 1000
    assert pages() <= after_50 + 1  # the pages of deleted batches are reused
    j.close()


def test_an_unreadable_file_is_set_aside_and_the_receiver_starts_empty(tmp_path: Path) -> None:
    path = tmp_path / "dedup.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    d, j = restarted(path)
    assert len(d) == 0
    assert j.record([p("gw-a", 1, 1, T0)]) == 1
    j.close()
    aside = [f.name for f in tmp_path.iterdir() if f.name.startswith("dedup.sqlite.bad-")]
    assert len(aside) == 1
    assert (tmp_path / aside[0]).read_bytes() == b"this is not a database" * 100
    assert len(restarted(path)[0]) == 1


def test_a_newer_format_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "dedup.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    d, j = restarted(path)
    assert len(d) == 0
    j.close()
    assert len([f for f in tmp_path.iterdir() if f.name.startswith("dedup.sqlite.bad-")]) == 1


def test_a_format_1_file_is_set_aside_with_its_reason(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Format 1 keyed entries by receive time and had neither data format nor values: it cannot seed this memory.
    path = tmp_path / "dedup.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE batches (id INTEGER PRIMARY KEY, written_ns INTEGER NOT NULL, n INTEGER NOT NULL,"
                     " entries BLOB NOT NULL)")
        conn.execute("INSERT INTO batches VALUES (1, 0, 1, ?)", (json.dumps([["ruuvi", "m", 7, T0, "gw-a"]]),))
        conn.execute("PRAGMA user_version = 1")
    d, j = restarted(path)
    assert len(d) == 0
    j.close()
    assert "format version 1, not 2" in caplog.text
    assert len([f for f in tmp_path.iterdir() if f.name.startswith("dedup.sqlite.bad-")]) == 1


def test_a_file_that_cannot_be_created_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match=r"dedup state file .*missing/dedup.sqlite: unable to open"):
        DedupJournal(tmp_path / "missing" / "dedup.sqlite", max_entries=10)


def test_where_the_state_file_is(tmp_path: Path) -> None:
    def cfg(**o: object) -> Any:
        return load_config(None, o, environ={})

    status = cfg(**{"status.file": "/var/lib/ci/status.json"})
    assert dedup_state_file(status) == Path("/var/lib/ci/status.dedup.sqlite")
    assert dedup_state_file(cfg(**{"dedup.state_file": "/x/d.sqlite"})) == Path("/x/d.sqlite")
    # Empty: the state folder (core.settings.state_dir; /var/lib/cloud-ingest for root with no systemd folder).
    assert dedup_state_file(cfg(**{"status.file": ""})) == state_dir("cloud-ingest", {}) / "status.dedup.sqlite"
    assert dedup_state_file(cfg(**{"dedup.enabled": "false"})) is None
    # A missing folder is created (0750); one that cannot be is a one-line error naming the key.
    made = cfg(**{"status.file": str(tmp_path / "s.json"), "dedup.state_file": str(tmp_path / "new" / "d.sqlite")})
    check_runtime(made)
    assert (tmp_path / "new").is_dir() and (tmp_path / "new").stat().st_mode & 0o777 == 0o750
    (tmp_path / "a-file").write_text("")
    bad = cfg(**{"status.file": str(tmp_path / "s.json"), "dedup.state_file": str(tmp_path / "a-file" / "d.sqlite")})
    with pytest.raises(ConfigError, match=r"^dedup.state_file: cannot create the folder .*/a-file: "):
        check_runtime(bad)


# ---- the receiver as a real process --------------------------------------------------------------------------


def status_of(tmp: Path) -> dict[str, Any]:
    try:
        return json.loads((tmp / "status.json").read_bytes())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


def test_receiver_killed_with_9_does_not_write_the_other_gateways_copy(mosquitto_factory: Any, influxd: Any,
                                                                      tmp_path: Path) -> None:
    mosquitto = mosquitto_factory(tmp_path / "mq").start()
    url = create_db(influxd)
    log = tmp_path / "rx.log"
    rx = cloud_ingest(*run_args(mosquitto.port, url, tmp_path, "--set", "status.interval=0.1"), log=log)
    pub = Publisher(mosquitto.port)
    t0 = now_ns() - 60 * S
    tags = 50
    try:
        wait_subscribed(log)
        pub.publish([("edge-gw/gw-a/batch", edge_batch("gw-a", 1, [reading(i, 300 + i, t0 + i * MS)
                                                                   for i in range(tags)]))])
        # Acknowledged means journaled: the PUBACK goes out only after the journal's commit.
        wait_until(lambda: status_of(tmp_path).get("written") == tags
                   and status_of(tmp_path).get("inflight_messages") == 0, 30, "gw-a's batch written and acked")
        os.kill(rx.pid, signal.SIGKILL)
        rx.wait(10)
        assert rx.returncode == -signal.SIGKILL
        assert (tmp_path / "status.dedup.sqlite").is_file()

        rx = cloud_ingest(*run_args(mosquitto.port, url, tmp_path, "--set", "status.interval=0.1"), log=log)
        wait_subscribed(log)
        # gw-b heard the same measurements 0.3 s later, and one more that gw-a missed.
        copies = [reading(i, 300 + i, t0 + i * MS + 300 * MS) for i in range(tags)]
        extra = reading(tags, 300 + tags, t0 + tags * MS)
        pub.publish([("edge-gw/gw-b/batch", edge_batch("gw-b", 1, [*copies, extra]))])
        wait_until(lambda: status_of(tmp_path).get("duplicates") == tags
                   and status_of(tmp_path).get("inflight_messages") == 0, 30, "gw-b's batch handled")
        pts = stored(influxd)
        assert sorted((x["time"], x["mac"], x["gateway"]) for x in pts) == sorted(
            [(t0 + i * MS, mac_text(i), "gw-a") for i in range(tags)] + [(t0 + tags * MS, mac_text(tags), "gw-b")])
        st = status_of(tmp_path)
        assert st["written"] == tags + 1
        assert st["gateways"]["gw-b"]["duplicates"] == tags
        assert f"dedup: {tags} measurements remembered from {tmp_path / 'status.dedup.sqlite'}" in log.read_text()
    finally:
        pub.close()
        if rx.poll() is None:
            rx.send_signal(signal.SIGTERM)
            rx.wait(30)
    assert rx.returncode == 0, log.read_text()[-3000:]


def test_run_with_a_state_file_that_cannot_be_opened_exits_1(tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    log = tmp_path / "rx.log"
    rx = cloud_ingest(*run_args(9, "http://127.0.0.1:9/ruuvi", tmp_path, "--set",
                                f"dedup.state_file={tmp_path / 'adir'}"), log=log)
    assert rx.wait(30) == 1
    last = log.read_text().splitlines()[-1]
    assert last == f"Error: dedup state file {tmp_path / 'adir'}: unable to open database file"


class _Msg(Message):
    def acknowledge(self) -> None:
        pass


async def _published(topic: str, payload: bytes) -> Any:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    return done


def _write_path(sink: Any, journal: DedupJournal) -> WritePath:
    return WritePath(WritePathSettings("rx", confirm=False), sink=sink, publish=_published,
                     monitor=Monitor(Metrics(), client_id="rx", sink=sink, status_file=None),
                     dedup=Dedup(max_entries=1000), journal=journal)


def test_a_point_the_database_refused_is_not_journaled(tmp_path: Path) -> None:
    """Only what was stored is remembered: a refused point's copy from another gateway must still be written."""

    class RefuseSecond:
        state, last_error, last_write_ns, failed_attempts = "ok", None, None, 0

        async def write(self, points: list[Point]) -> WriteOutcome:
            return WriteOutcome(len(points) - 1, [Rejected(1, points[1], "HTTP 400: field type conflict", "x")])

    journal = DedupJournal(tmp_path / "d.sqlite", max_entries=100)
    path = _write_path(RefuseSecond(), journal)
    batch: Batch[Message] = Batch(0.0)
    batch.items.append((_Msg("t"), [p("gw-a", 1, 7, T0), p("gw-a", 2, 8, T0), p("gw-a", 3, 9, T0)]))
    asyncio.run(path.write(batch))
    path.close()
    journal.close()
    assert [(e[1], e[3]) for e in DedupJournal(tmp_path / "d.sqlite", max_entries=100).load()] == [
        ("aa:aa:aa:aa:aa:01", 7), ("aa:aa:aa:aa:aa:03", 9)]


def test_the_journal_is_written_on_one_thread_one_batch_at_a_time(tmp_path: Path) -> None:
    """Off the event loop, but never two writes at once on the one SQLite connection, and all done at close()."""

    class Store:
        """Answers the writes 4 ms apart, so that journal writes queue behind and overlap with each other."""
        state, last_error, last_write_ns, failed_attempts = "ok", None, None, 0
        writes = 0

        async def write(self, points: list[Point]) -> WriteOutcome:
            self.writes += 1
            await asyncio.sleep(0.004 * self.writes)
            return WriteOutcome(len(points), [])

    journal = DedupJournal(tmp_path / "d.sqlite", max_entries=1000)
    threads: set[int] = set()
    busy = threading.Lock()
    record_entries = journal.record_entries

    def watched(batch: Any) -> int:
        assert busy.acquire(blocking=False), "two journal writes at once"
        try:
            threads.add(threading.get_ident())
            time.sleep(0.01)
            return record_entries(batch)
        finally:
            busy.release()

    journal.record_entries = watched  # type: ignore[method-assign]
    path = _write_path(Store(), journal)

    async def run() -> None:
        batches = []
        for b in range(6):
            batch: Batch[Message] = Batch(0.0)
            batch.items.append((_Msg("t"), [p("gw-a", 1, b * 10 + s, T0 + s) for s in range(10)]))
            batches.append(path.write(batch))
        await asyncio.gather(*batches)  # as several writers do

    asyncio.run(run())
    path.close()
    assert len(threads) == 1 and threading.get_ident() not in threads
    assert journal.stored_entries() == 60
    journal.close()
