"""`simulate`: a fleet of virtual RuuviTags that emit real byte payloads.

Every `air_every`-th tag is a Ruuvi Air and sends each measurement as both E1 and DF6, as the real one does; the
others send DF5. Each tag's
measurement sequence increments (and wraps as the format does), its values drift as a bounded random walk, and each
measurement is sent 2 or 3 times, as real tags re-advertise, so dedup has work to do. The advert stream depends only
on the seed (not on timing), and MACs are stable per (seed, tag index).

Pacing: `rate` adverts/s in total, held against the event loop's monotonic clock. The source wakes every few ms and
emits whatever is due, so 10/s comes out one advert per 100 ms and 50k/s in bursts of ~100.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from typing import Any

from edge.model import Advert
from edge.sources import encode
from edge.sources.base import Emit, SourceOptions

_MIN_SLEEP_S = 0.002  # below this, emitting the next few early is cheaper than another wake-up
_MAX_LAG_S = 1.0  # a consumer slower than `rate` makes us fall behind; never catch up more than this


def tag_mac(seed: int, index: int) -> bytes:
    """A stable random static address (top two bits set, as RuuviTags use) for tag `index` of fleet `seed`."""
    raw = bytearray(hashlib.blake2b(f"edge-gw-sim:{seed}:{index}".encode(), digest_size=6).digest())
    raw[0] |= 0xC0
    return bytes(raw)


def _walk(rng: random.Random, value: float, step: float, lo: float, hi: float) -> float:
    value += (rng.random() - 0.5) * 2 * step
    if value < lo:
        return 2 * lo - value
    if value > hi:
        return 2 * hi - value
    return value


class VirtualTag:
    """One virtual tag: its drifting state and the payload of its current measurement."""

    __slots__ = (
        "advert",
        "air",
        "battery",
        "co2",
        "humidity",
        "left",
        "legacy",
        "mac",
        "mac_bytes",
        "measurements",
        "movement",
        "pm",
        "pressure",
        "rssi",
        "seq",
        "temperature",
    )

    def __init__(self, rng: random.Random, seed: int, index: int, air: bool) -> None:
        self.mac_bytes = tag_mac(seed, index)
        self.mac = self.mac_bytes.hex(":")
        self.air = air
        self.rssi = -45 - rng.randrange(50)
        self.temperature = rng.uniform(15.0, 25.0)
        self.humidity = rng.uniform(30.0, 60.0)
        self.pressure = rng.uniform(99_000.0, 102_000.0)
        self.battery = rng.randrange(2700, 3100)
        self.movement = rng.randrange(255)
        self.co2 = rng.uniform(450.0, 900.0)
        self.pm = rng.uniform(1.0, 15.0)
        # Start anywhere in the counter's range so long runs see it wrap.
        self.seq = rng.randrange(0xFFFFFF if air else 0xFFFF)
        self.measurements = 0
        self.left = 0
        self.advert = Advert(self.mac, b"", None)
        self.legacy: Advert | None = None  # a Ruuvi Air's DF6 copy of the current measurement

    def measure(self, rng: random.Random) -> None:
        """Take the next measurement: drift the values, bump the sequence, encode the payload once."""
        self.temperature = _walk(rng, self.temperature, 0.05, -20.0, 45.0)
        self.humidity = _walk(rng, self.humidity, 0.1, 5.0, 95.0)
        self.pressure = _walk(rng, self.pressure, 3.0, 95_000.0, 105_000.0)
        self.measurements += 1
        rssi = self.rssi - rng.getrandbits(2)
        if self.air:
            self.seq = (self.seq + 1) % 0xFFFFFF
            self.co2 = _walk(rng, self.co2, 5.0, 400.0, 2500.0)
            self.pm = _walk(rng, self.pm, 0.3, 0.0, 100.0)
            t, h, p, pm, co2 = self.temperature, self.humidity, self.pressure, self.pm, round(self.co2)
            # A Ruuvi Air sends every measurement twice over: as E1 (extended advert) and as DF6 (legacy).
            e1 = encode.e1(temperature=t, humidity=h, pressure=p, pm1_0=pm * 0.6, pm2_5=pm, pm4_0=pm * 1.1,
                           pm10_0=pm * 1.2, co2=co2, voc_index=100, nox_index=1, luminosity=120.0,
                           sound_instant_dba=42.0, sound_average_dba=40.0, sound_peak_spl_db=55.0,
                           sequence=self.seq, mac=self.mac_bytes)
            df6 = encode.df6(temperature=t, humidity=h, pressure=p, pm2_5=pm, co2=co2, voc_index=100,
                             nox_index=1, luminosity=120.0, sound_average_dba=40.0, sequence=self.seq,
                             mac=self.mac_bytes)
            self.legacy = Advert(self.mac, df6, rssi)
            payload = e1
        else:
            self.seq = (self.seq + 1) % 0xFFFF  # 0xFFFF is "not available"
            luck = rng.random()
            if luck < 0.02:
                self.movement = (self.movement + 1) % 0xFF
            if luck < 0.01:
                self.battery = max(1600, self.battery - 1)
            # Straight to the raw codes: this runs once per simulated reading, and the checked encoder's
            # per-field validation tripled the simulator's cost (values here stay in range by construction).
            jitter = rng.getrandbits(18)
            payload = encode.df5_codes(
                round(self.temperature * 200), round(self.humidity * 400), round(self.pressure) - 50000,
                (jitter & 0x3F) - 32, ((jitter >> 6) & 0x3F) - 32, 968 + (jitter >> 12),
                self.battery - 1600, 22, self.movement, self.seq, self.mac_bytes)
        self.advert = Advert(self.mac, payload, rssi)
        self.left = 2 + (rng.random() < 0.5)  # each measurement goes out 2 or 3 times


class Fleet:
    """The deterministic advert stream, without any timing: `next()` is one advert."""

    def __init__(self, tags: int, seed: int, air_every: int = 10) -> None:
        if tags < 1:
            raise ValueError("simulate: tags must be at least 1")
        self.rng = random.Random(seed)
        self.tags = [VirtualTag(self.rng, seed, i, air_every > 0 and i % air_every == air_every - 1)
                     for i in range(tags)]
        self._i = 0

    def next(self) -> Advert:
        # Round-robin over the tags interleaves their repeats the way a crowded room sounds.
        tag = self.tags[self._i]
        self._i = (self._i + 1) % len(self.tags)
        if not tag.left:
            tag.measure(self.rng)
        tag.left -= 1
        if tag.legacy is not None and tag.left == 0:
            return tag.legacy  # a Ruuvi Air's last copy of each measurement is its DF6 advert
        return tag.advert


class SimulatedSource:
    def __init__(self, options: SourceOptions) -> None:
        if options.rate < 0:
            raise ValueError("simulate: rate must be >= 0")
        self.options = options
        self.fleet = Fleet(options.tags, options.seed, options.air_every)
        self.emitted = 0

    def state(self) -> dict[str, Any]:
        o = self.options
        return {"kind": "simulate", "tags": o.tags, "rate": o.rate, "seed": o.seed, "count": o.count,
                "emitted": self.emitted}

    async def run(self, emit: Emit) -> None:
        loop = asyncio.get_running_loop()
        rate, count, fleet = self.options.rate, self.options.count, self.fleet
        start = loop.time()
        base = self.emitted  # adverts counted against `start`
        while count is None or self.emitted < count:
            now = loop.time()
            if rate > 0:
                due = base + int((now - start) * rate) + 1
                if due - self.emitted > rate * _MAX_LAG_S:  # we fell behind: hold the rate, don't burst to catch up
                    start, base = now, self.emitted
                    due = base + 1
                burst = due - self.emitted
            else:
                burst = 2048
            if count is not None:
                burst = min(burst, count - self.emitted)
            next_advert = fleet.next
            for _ in range(burst):
                emit(next_advert())
            self.emitted += max(burst, 0)
            if rate > 0:
                wait = (self.emitted - base) / rate - (loop.time() - start)
                await asyncio.sleep(max(wait, _MIN_SLEEP_S))
            else:
                await asyncio.sleep(0)


def _bench(tags: int = 1000, n: int = 1_000_000) -> None:
    """`python -m edge.sources.simulate [TAGS] [N]`: the simulator's own cost (emit does nothing) and memory."""
    import resource
    import sys
    import time
    import tracemalloc

    tracemalloc.start()
    fleet = Fleet(tags, seed=1)
    for _ in range(tags * 3):  # every tag holds a measurement
        fleet.next()
    fleet_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    source = SimulatedSource(SourceOptions(tags=tags, rate=0, count=n, seed=1))
    start = time.perf_counter()
    asyncio.run(source.run(lambda advert: None))
    elapsed = time.perf_counter() - start
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sys.stdout.write(f"simulate: {tags} tags, {n} adverts in {elapsed:.2f} s = {n / elapsed:,.0f} adverts/s; "
                     f"fleet state {fleet_bytes / 1024:.0f} KiB; process peak RSS {rss_mb:.1f} MB\n")


if __name__ == "__main__":
    import sys

    _bench(*(int(a) for a in sys.argv[1:3]))
