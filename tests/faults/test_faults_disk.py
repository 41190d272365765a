"""Faults under the gateway's buffer (issue 17): the file system fills up under a live gateway."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from faults_pipeline import Outcome, Pipeline, compare, wait_until
from servers import tmpfs

Record = Callable[[Outcome], None]
MakePipeline = Callable[..., Pipeline]

pytestmark = pytest.mark.slow


def test_disk_full_under_the_buffer(make_pipeline: MakePipeline, record: Record, tmp_path: Path) -> None:
    """The buffer on a 20 MiB tmpfs that something else has mostly filled, the broker down, the simulator at full
    rate: the gateway keeps running and drops by policy (counted), logs at a bounded rate, says it runs; once space
    and the broker are back it forwards everything it still holds, and SIGTERM ends it with 0."""
    started = time.monotonic()
    p = make_pipeline()
    with tmpfs(tmp_path / "disk", "20m") as disk:
        filler = disk / "filler"
        filler.write_bytes(b"\0" * (12 << 20))  # another tenant of the disk: 8 MiB are left for the buffer
        p.broker.stop()
        gw = p.gateway("gw-disk", ledger=True, workdir=disk / "gw")
        gw.start(seed=131, tags=200, rate=4000)
        # Until the buffer has filled what is left and dropped by policy.
        wait_until(lambda: gw.status()["dropped"]["cap"] >= 5000, 120, "drops at the full disk")
        assert gw.running(), gw.tail()
        full_since = time.monotonic()
        time.sleep(5)
        status = gw.status()
        assert gw.running(), gw.tail()
        assert status["daemon_pid"] == gw.proc.pid  # type: ignore[union-attr]
        elapsed = time.monotonic() - full_since + 5
        errors = [ln for ln in gw.tail().splitlines() if re.search(r"ERROR|Traceback", ln)]
        assert len(errors) <= elapsed / 5 + 4, errors  # bounded: not one line per failed commit
        assert not any("Traceback" in ln for ln in errors), errors
        # Space and the broker come back: forwarding resumes without a restart.
        filler.unlink()
        p.broker.start()
        wait_until(lambda: gw.buffered() < 2000, 120, "the held readings forwarded")
        gw.stop()  # SIGTERM: exit 0, asserted in stop()
        dropped_cap = gw.status()["dropped"]["cap"]
        committed = p.settle()
        stored = p.stored()
        ledger = committed[gw.name]
        have = {(mac, seq, t) for _g, mac, seq, t in stored}
        missing = ledger - have
        outcome = compare("13-disk-full", len(ledger), {gw.name: ledger - missing}, stored, started, len(missing))
        outcome.note = f"dropped by policy at the full disk: {dropped_cap} counted, {len(missing)} missing"
        record(outcome)
    assert outcome.duplicated == 0, outcome
    assert len(missing) == dropped_cap, (len(missing), dropped_cap)  # every reading not stored was a counted drop
    assert outcome.stored == len(ledger) - dropped_cap
