"""The simulate source: real payloads, deterministic, stable MACs, increasing sequences, 2-3 repeats, held rate."""

import asyncio
import itertools
import subprocess
import sys
from collections import defaultdict

import pytest
from fakeclock import FakeClock

from core import ruuvi
from edge.dedup import Dedup
from edge.gateway import Pipeline
from edge.metrics import Counters
from edge.model import Advert, Reading
from edge.sources import SourceError, SourceOptions, open_source
from edge.sources.simulate import Fleet, SimulatedSource, tag_mac


def take(fleet: Fleet, n: int) -> list[Advert]:
    return [fleet.next() for _ in range(n)]


def test_same_seed_same_stream_other_seed_other_stream() -> None:
    a, b, c = take(Fleet(50, seed=7), 3000), take(Fleet(50, seed=7), 3000), take(Fleet(50, seed=8), 3000)
    assert a == b
    assert a != c
    assert {x.mac for x in a}.isdisjoint({x.mac for x in c})


def test_macs_are_stable_random_static_addresses() -> None:
    fleet = Fleet(1000, seed=3)
    macs = [t.mac for t in fleet.tags]
    assert len(set(macs)) == 1000
    assert macs[:2] == [tag_mac(3, 0).hex(":"), tag_mac(3, 1).hex(":")]
    # Stable across runs and versions: a replayed capture or a buffer from last week names the same tags.
    assert [tag_mac(3, 0).hex(":"), tag_mac(3, 1).hex(":"), tag_mac(4, 0).hex(":")] == [
        "d7:d2:50:f3:4a:7b", "f5:fb:4a:49:dc:2d", "e0:6a:6e:37:64:58"]
    assert all(int(m[:2], 16) & 0xC0 == 0xC0 for m in macs)
    assert Fleet(20, seed=1).tags[5].mac == Fleet(10, seed=1).tags[5].mac  # fleet size does not move MACs


def test_payloads_decode_and_match_the_sender() -> None:
    fleet = Fleet(20, seed=1)  # tags 9 and 19 are Ruuvi Airs
    formats: dict[str, list[int]] = defaultdict(list)
    for adv in take(fleet, 20 * 30):
        fields = ruuvi.decode(adv.payload)
        formats[adv.mac].append(fields["data_format"])
        assert adv.mac.endswith(fields["mac"])  # DF6 carries the low 3 bytes, DF5/E1 all 6
        assert -95 <= adv.rssi <= -45  # type: ignore[operator]
        assert -20 <= fields["temperature"] <= 45 and 5 <= fields["humidity"] <= 95
    air = {fleet.tags[9].mac, fleet.tags[19].mac}
    for mac, fmts in formats.items():
        if mac in air:
            assert set(fmts) == {6, 0xE1}
        else:
            assert set(fmts) == {5}
    # A Ruuvi Air sends each measurement as E1 and as DF6: every measurement's 2-3 copies hold both, with the same
    # sequence number (DF6 carries its low 8 bits).
    seqs: dict[int, set[int]] = defaultdict(set)
    for adv in take(Fleet(20, seed=1), 20 * 30):
        if adv.mac == fleet.tags[9].mac:
            fields = ruuvi.decode(adv.payload)
            seqs[fields["measurement_sequence_number"] & 0xFF].add(fields["data_format"])
    assert all(fmts == {6, 0xE1} for fmts in list(seqs.values())[:-1])


def test_each_measurement_repeats_two_or_three_times_and_sequences_increment() -> None:
    fleet = Fleet(10, seed=2, air_every=0)
    per_tag: dict[str, list[int]] = defaultdict(list)
    for adv in take(fleet, 10 * 300):
        per_tag[adv.mac].append(ruuvi.decode(adv.payload)["measurement_sequence_number"])
    for seqs in per_tag.values():
        groups = [(k, len(list(g))) for k, g in itertools.groupby(seqs)]
        assert all(n in (2, 3) for _, n in groups[:-1])  # the last may still be in progress
        assert all(b == (a + 1) % 0xFFFF for (a, _), (b, _) in itertools.pairwise(groups))
        assert 2.2 < len(seqs) / len(groups) < 2.8


def test_sequence_wraps_like_a_tag() -> None:
    fleet = Fleet(1, seed=1, air_every=0)
    fleet.tags[0].seq = 65532
    seqs = [ruuvi.decode(a.payload)["measurement_sequence_number"] for a in take(fleet, 12)]
    assert [k for k, _ in itertools.groupby(seqs)][:4] == [65533, 65534, 0, 1]


def test_values_drift_smoothly() -> None:
    fleet = Fleet(1, seed=5, air_every=0)
    temps = [k for k, _ in itertools.groupby(ruuvi.decode(a.payload)["temperature"] for a in take(fleet, 3000))]
    steps = [abs(b - a) for a, b in itertools.pairwise(temps)]
    assert max(steps) <= 0.055  # 0.05 step + encoding resolution 0.005
    assert max(temps) - min(temps) > 0.3  # it does move


def test_dedup_keeps_one_reading_per_measurement() -> None:
    fleet = Fleet(30, seed=9)
    kept: list[Reading] = []
    pipeline = Pipeline(FakeClock(), Dedup(window_s=60), kept.append)
    for adv in take(fleet, 9000):
        pipeline(adv)
    assert len(kept) == sum(t.measurements for t in fleet.tags)
    assert pipeline.duplicates == 9000 - len(kept)


def test_count_stops_exactly_and_state_reports() -> None:
    source = open_source("simulate", SourceOptions(tags=5, rate=0, count=1234, seed=4), Counters())
    got: list[Advert] = []
    asyncio.run(source.run(got.append))
    assert len(got) == 1234
    assert got == take(Fleet(5, seed=4), 1234)
    assert source.state() == {"kind": "simulate", "tags": 5, "rate": 0, "seed": 4, "count": 1234, "emitted": 1234}


@pytest.mark.parametrize(("rate", "count"), [(20.0, 10), (400.0, 200), (20_000.0, 10_000)])
def test_a_paced_run_emits_exactly_count_adverts_in_order(rate: float, count: int) -> None:
    """How close the pacing keeps to the rate is measured in bench/bench_timing.py, not asserted here."""
    source = SimulatedSource(SourceOptions(tags=50, rate=rate, count=count, seed=3))
    got: list[Advert] = []
    asyncio.run(source.run(got.append))
    assert got == take(Fleet(50, seed=3), count)


def test_bad_options() -> None:
    with pytest.raises(SourceError, match="simulate: tags must be at least 1"):
        open_source("simulate", SourceOptions(tags=0), Counters())
    with pytest.raises(SourceError, match="unknown source 'wifi'"):
        open_source("wifi", SourceOptions(), Counters())


def test_simulate_does_not_import_bleak() -> None:
    code = ("import asyncio, sys; from edge.sources import open_source, SourceOptions;"
            "from edge.metrics import Counters;"
            "s = open_source('simulate', SourceOptions(rate=0, count=10), Counters()); asyncio.run(s.run(print));"
            "print(sorted(m for m in ('bleak', 'dbus_fast') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "[]"
