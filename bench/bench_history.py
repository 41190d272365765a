"""History download over GATT: how long a log read takes, and what it costs the live stream while it runs.

    python bench/bench_history.py                    # logs of 30, 1440 and 2880 records, 4 live tags, 3 runs each
    python bench/bench_history.py --records 1440 --runs 5

The real code on both sides of the fake BlueZ of the tests (tests/edge/fakebluez.py: bluezoo on a private
dbus-daemon): the gateway's own BLE source (edge/sources/ble.py, bleak) scans while edge/history.py `read_log`
connects to a fake tag serving Ruuvi's log-read protocol over the Nordic UART service. Every fake tag is reported
on each scan tick (0.2 s), so the live stream is ticks x tags adverts per second. Printed per log size: download
time (connect, read to the end marker, disconnect), records per second, the live tags' adverts per second during the
download against the same scanner's rate in the seconds before it, and the longest time any live tag went unheard
in either window (a paused scanner would show as a silence as long as the download). The reader is given the
scanner's BLEDevice, as in the gateway, so it starts no discovery of its own.

What this cannot say: the radio. A real tag sends its log at the pace of its BLE connection (interval, notifications
per event), and a real adapter may share air time between the connection and the scan differently; here the pace is
that of D-Bus and bluezoo. Not a test: the VM is shared; the load average at start and end is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for _p in (REPO, REPO / "tests" / "edge"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from fakebluez import FakeBlueZ  # noqa: E402

from edge.history import read_log  # noqa: E402
from edge.metrics import Counters  # noqa: E402
from edge.model import Advert  # noqa: E402
from edge.sources import SourceOptions  # noqa: E402
from edge.sources.ble import BleakSource  # noqa: E402
from edge.sources.encode import df5  # noqa: E402

HISTORY_MAC = "c1:00:00:00:00:01"
STEP = 60


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


async def measure(fake: FakeBlueZ, records: int, live_tags: int, runs: int, idle_s: float) -> list[dict[str, float]]:
    now = int(time.time())
    log = [(now - (records - i) * STEP, 20.0 + (i % 50) / 10, 40.0, 100_000) for i in range(records)]
    await fake.connect()
    await fake.add_history_tag(0, HISTORY_MAC, df5(temperature=1.0, humidity=2.0, pressure=99_000, sequence=1,
                                                   mac=HISTORY_MAC), log)
    for i in range(1, live_tags + 1):
        mac = f"c2:00:00:00:00:{i:02x}"
        await fake.add_tag(i, mac, df5(temperature=1.0, humidity=2.0, pressure=99_000, sequence=i, mac=mac))
    heard: list[float] = []
    by_tag: dict[str, list[float]] = {}

    def emit(adv: Advert) -> None:
        now = time.monotonic()
        if adv.mac != HISTORY_MAC:  # the tag being read also "adverts" on each of its Device1 changes (Connected...)
            heard.append(now)
        by_tag.setdefault(adv.mac, []).append(now)

    def longest_silence(a: float, b: float) -> float:
        """The longest time any live tag went unheard within [a, b] (edges included): a paused scan shows here."""
        worst = 0.0
        for mac, times in by_tag.items():
            if mac == HISTORY_MAC:
                continue
            inside = [a, *(t for t in times if a <= t < b), b]
            worst = max(worst, *(y - x for x, y in itertools.pairwise(inside)))
        return worst

    source = BleakSource(SourceOptions(adapter="hci0", passive=False, watchdog_s=60.0), Counters())
    scan = asyncio.create_task(source.run(emit))
    results = []
    try:
        await asyncio.sleep(2.0)  # the scanner is up and every tag known
        for _ in range(runs):
            t0 = time.monotonic()
            await asyncio.sleep(idle_s)
            t1 = time.monotonic()
            # As the gateway does: the scanner's own BLEDevice, no discovery of the reader's own.
            got = await read_log(HISTORY_MAC, 0, int(time.time()), adapter="hci0", timeout_s=600,
                                 on_record=lambda r: None, device=source.device(HISTORY_MAC))
            t2 = time.monotonic()
            assert got == records, (got, records)
            before = sum(1 for t in heard if t0 <= t < t1) / (t1 - t0)
            during = sum(1 for t in heard if t1 <= t < t2) / (t2 - t1)
            results.append({"download_s": t2 - t1, "before": before, "during": during,
                            "silence_before": longest_silence(t0 + 0.5, t1), "silence_during": longest_silence(t1, t2)})
    finally:
        scan.cancel()
        await asyncio.gather(scan, return_exceptions=True)
        await fake.close()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, nargs="+", default=[30, 1440, 2880])
    ap.add_argument("--live-tags", type=int, default=4)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--idle", type=float, default=3.0, help="seconds of scanning alone before each download")
    args = ap.parse_args()
    print(f"load average at start: {loadavg()}")
    for n in args.records:
        with tempfile.TemporaryDirectory() as tmp:
            fake = FakeBlueZ(Path(tmp) / "bluez").start()
            os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = fake.address
            try:
                res = asyncio.run(measure(fake, n, args.live_tags, args.runs, args.idle))
            finally:
                fake.stop()
        secs = [r["download_s"] for r in res]
        median = statistics.median(secs)
        before = statistics.median(r["before"] for r in res)
        during = statistics.median(r["during"] for r in res)
        runs = ", ".join(f"{s:.2f}" for s in secs)
        quiet_before = max(r["silence_before"] for r in res)
        quiet_during = max(r["silence_during"] for r in res)
        print(f"{n:5d} records: download {median:.2f} s median (runs {runs}), {n / median:.0f} records/s;"
              f" live adverts/s before {before:.1f}, during {during:.1f}; longest silence of a live tag before"
              f" {quiet_before:.2f} s, during {quiet_during:.2f} s")
    print(f"load average at end: {loadavg()}")


if __name__ == "__main__":
    main()
