"""A gateway's buffer file is damaged while the gateway is stopped (issue 17, item 2)."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from faults_pipeline import EDGE, Outcome, Pipeline, Point, clean_env, compare, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "edge"))
from damage_support import leaf_pages, reachable_rowids, scribble

Record = Callable[[Outcome], None]
MakePipeline = Callable[..., Pipeline]

pytestmark = pytest.mark.slow


def identities(db: Path, ids: set[int]) -> set[Point]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT id, mac, json_extract(fields_json, '$.measurement_sequence_number'), time_ns "
                            "FROM readings")
        return {(m, int(q), int(t)) for i, m, q, t in rows if i in ids}


def test_damaged_buffer(make_pipeline: MakePipeline, record: Record, tmp_path: Path) -> None:
    """A backlog is buffered with the broker down; the gateway stops; random bytes land on three pages in the middle
    of its file. `status` exits 1 and names the damage. The gateway starts again: it salvages every readable reading
    into a fresh file, moves the damaged one aside, and forwards the salvaged backlog with new live readings. Every
    readable committed reading reaches InfluxDB; the missing ones are exactly the rows on the destroyed pages, and
    their number is what the gateway reports as lost."""
    started = time.monotonic()
    p = make_pipeline()
    p.broker.stop()
    gw = p.gateway("gw-damage")
    gw.start(seed=161, tags=50, rate=3000)
    wait_until(lambda: gw.committed() > 15_000, 60, "a backlog")
    gw.stop()
    intact = tmp_path / "intact.db"
    shutil.copyfile(gw.db, intact)
    assert not Path(f"{gw.db}-wal").exists()  # a clean stop leaves the file alone
    committed_before = gw.committed()
    leaves = leaf_pages(intact, "readings")
    bad = leaves[len(leaves) // 2:len(leaves) // 2 + 3]
    scribble(gw.db, bad, seed=16)
    readable = reachable_rowids(intact, "readings", set(bad))
    everything = identities(intact, set(range(1, committed_before + 1)))
    unreadable = everything - identities(intact, readable)
    assert len(everything) == committed_before and 0 < len(unreadable) < 200
    stopped = subprocess.run([*EDGE, "status", "--db", str(gw.db)], capture_output=True, text=True, check=False,
                             env=clean_env())
    assert stopped.returncode == 1 and "is damaged" in stopped.stderr, stopped.stderr

    p.broker.start()
    gw.start(seed=162, tags=50, rate=500)
    # Until the start-up check is done: before that, `status` sees the damaged file (and exits 1).
    wait_until(lambda: "salvaged" in gw.tail(), 60, "the salvage")
    wait_until(lambda: gw.status()["counters"]["readings_acked"] >= len(readable), 90, "the salvaged backlog sent")
    status = gw.status()
    damage = status["damage"]
    assert (damage["salvaged_readings"], damage["lost_rows"]) == (len(readable), len(unreadable))
    assert Path(damage["moved_to"]).exists()
    assert status["integrity"] is None  # the daemon runs: it checked at its start
    errors = [ln for ln in gw.tail().splitlines() if "ERROR" in ln or "Traceback" in ln]
    assert not any("Traceback" in ln for ln in errors), errors

    committed = p.settle({gw.name: unreadable})
    with contextlib.suppress(TimeoutError):
        p.wait_stored(sum(len(v) for v in committed.values()))
    stored = p.stored()
    have = {(mac, seq, t) for _g, mac, seq, t in stored}
    sent = gw.committed()
    outcome = compare("16-damaged-buffer", sent, {gw.name: committed[gw.name] - unreadable}, stored, started)
    missing = (committed[gw.name] | unreadable) - have
    outcome.lost = len(missing)
    outcome.note = (f"{committed_before} readings buffered, random bytes on 3 of {len(leaves)} leaf pages: "
                    f"{len(readable)} salvaged and stored, {len(unreadable)} unreadable, counted as lost_rows by the "
                    f"gateway ({damage['lost_rows']})")
    record(outcome)
    if outcome.duplicated or missing != unreadable:
        p.explain({gw.name: committed[gw.name] - unreadable}, stored)
    assert missing == unreadable  # exactly the rows on the destroyed pages, nothing else
    assert outcome.duplicated == 0, outcome
    assert outcome.stored == sent - len(unreadable)
