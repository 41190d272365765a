"""bench_load.py's BLE half: the fake BlueZ of the tests (tests/edge/fakebluez.py) with N virtual tags, for
`edge-gw run --source bleak`.

The fake's scanner reports every advertising tag once per scan tick, so a tick of N / rate seconds gives each tag
`rate / N` adverts/s, the rate asked for. A feeder process (this file run as a script) owns the tags'
advertisements on the private bus and gives each tag a new measurement (sequence + 1, drifting temperature) every
2 or 3 ticks, as the simulator does (real tags repeat each measurement a few times), so about 2.5 adverts make one
reading in both runs.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
for _p in (REPO, REPO / "tests", REPO / "tests" / "edge"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from bench.e2e.procs import clean_env, gateway_cmd  # noqa: E402


def start_fake_bluez(work: Path, broker_url: str, db: Path, tags: int,
                     rate: float) -> tuple[list[str], dict[str, str], Callable[[], None]]:
    """Start dbus-daemon + bluezoo + the feeder; return the gateway's command and environment, and a stopper."""
    from fakebluez import FakeBlueZ

    tick = tags / rate
    fake = FakeBlueZ(work / "bluez", scan_interval=tick).start()
    env = clean_env(DBUS_SYSTEM_BUS_ADDRESS=fake.address)
    feeder = subprocess.Popen([sys.executable, __file__, str(tags), str(tick)], env=env, stdout=subprocess.PIPE,
                              stderr=(work / "feeder.log").open("ab"))
    assert feeder.stdout is not None
    line = feeder.stdout.readline().decode().strip()
    if line != "ready":
        feeder.kill()
        fake.stop()
        raise RuntimeError(f"feeder did not start: {line!r}; see {work / 'feeder.log'}")

    def stop() -> None:
        feeder.terminate()
        feeder.wait(10)
        if feeder.stdout is not None:
            feeder.stdout.close()
        fake.stop()

    # The gateway's own argv, with the simulator's options swapped for the BLE source on hci0.
    cmd = gateway_cmd("load", broker_url, db)
    i = cmd.index("simulate")
    cmd[i - 1:i + 1] = ["--source", "bleak", "--adapter", "hci0"]
    return cmd, env, stop


async def feed(tags: int, tick: float) -> None:
    from fakebluez import FakeBlueZ

    from edge.sources.encode import df5
    from edge.sources.simulate import tag_mac

    fake = FakeBlueZ(Path("/nonexistent"))
    fake.address = os.environ["DBUS_SYSTEM_BUS_ADDRESS"]
    await fake.connect()
    macs = [tag_mac(1, i).hex(":").upper() for i in range(tags)]
    seqs = [i * 7 for i in range(tags)]

    def payload(i: int) -> bytes:
        return df5(temperature=20.0 + (seqs[i] % 50) / 10, humidity=40.0, pressure=100_500, sequence=seqs[i],
                   mac=macs[i])

    for i in range(tags):
        await fake.add_tag(i, macs[i], payload(i), rssi=-50 - i % 40)
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    start = loop.time()
    n = 0
    while True:
        n += 1
        await asyncio.sleep(max(0.0, start + n * tick - loop.time()))
        for i in range(tags):
            # Every 2 or 3 ticks per tag (alternating by tag), spread over the fleet.
            if (n + i) % (2 + i % 2) == 0:
                seqs[i] = (seqs[i] + 1) & 0xFFFF
                fake.tags[i].set_payload(payload(i))


if __name__ == "__main__":
    asyncio.run(feed(int(sys.argv[1]), float(sys.argv[2])))
