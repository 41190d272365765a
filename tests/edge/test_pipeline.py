"""The gateway's advert path (decode -> dedup -> Reading), pure: a FakeClock and a list as the store."""

from __future__ import annotations

from fakeclock import FakeClock

from edge.dedup import Dedup
from edge.gateway import Pipeline
from edge.model import Advert, Reading
from edge.sources import encode

MAC = "c0:ff:ee:12:34:56"


def df5(seq: int, temperature: float = 21.5) -> bytes:
    return encode.df5(temperature=temperature, humidity=40.0, pressure=100000, acceleration=(0, 0, 1000),
                      battery_voltage=3000, tx_power=4, movement_counter=1, sequence=seq, mac=MAC)


def air(kind: str, seq: int) -> bytes:
    common = {"temperature": 22.0, "humidity": 35.0, "pressure": 100100, "pm2_5": 5.0, "co2": 600,
              "voc_index": 100, "nox_index": 1, "luminosity": 100.0, "sound_average_dba": 40.0, "mac": MAC}
    if kind == "e1":
        return encode.e1(**common, pm1_0=3.0, pm4_0=6.0, pm10_0=7.0, sound_instant_dba=41.0,
                         sound_peak_spl_db=50.0, sequence=seq)
    return encode.df6(**common, sequence=seq & 0xFF)


def make(window_s: float = 10.0) -> tuple[Pipeline, list[Reading], FakeClock]:
    clock = FakeClock()
    out: list[Reading] = []
    return Pipeline(clock, Dedup(window_s=window_s), out.append), out, clock


def test_repeats_are_counted_once_and_readings_carry_the_receive_time() -> None:
    p, out, clock = make()
    for seq in (1, 1, 1, 2, 2, 3):
        p(Advert(MAC, df5(seq), -60))
        clock.advance(0.5)
    assert [r.fields["measurement_sequence_number"] for r in out] == [1, 2, 3]
    assert (p.adverts, p.duplicates, p.decode_errors) == (6, 3, 0)
    first = out[0]
    assert first.time_ns == 1_763_900_000_000_000_000 and first.mono_ns == 1_000_000_000
    assert first.raw == df5(1) and first.rssi == -60 and first.clock_synced is True
    assert first.fields["temperature"] == 21.5


def test_same_sequence_with_other_bytes_is_still_a_duplicate() -> None:
    p, out, _ = make()
    p(Advert(MAC, df5(7, 21.5), -60))
    p(Advert(MAC, df5(7, 21.6), -60))  # not byte-identical, same measurement number
    assert len(out) == 1 and p.duplicates == 1


def test_after_the_window_a_wrapped_counter_is_a_new_reading() -> None:
    p, out, clock = make(window_s=10)
    p(Advert(MAC, df5(5), -60))
    clock.advance(11)
    p(Advert(MAC, df5(5), -60))
    assert len(out) == 2


def test_bad_adverts_are_counted_and_do_not_stop_the_stream() -> None:
    p, out, _ = make()
    for payload in (b"", b"\x05\x00", b"\x42" * 24, df5(1)):
        p(Advert(MAC, payload, None))
    assert p.decode_errors == 3 and len(out) == 1
    assert p.last_error == f"{MAC}: unknown data format 0x42"


def test_ruuvi_air_df6_copy_is_dropped_where_e1_is_heard() -> None:
    p, out, clock = make()
    p(Advert(MAC, air("df6", 10), -70))  # no E1 heard yet: kept
    p(Advert(MAC, air("e1", 11), -70))
    p(Advert(MAC, air("df6", 11), -70))  # the same measurement as legacy advert: dropped
    clock.advance(11)
    p(Advert(MAC, air("df6", 12), -70))  # E1 not heard for a window: DF6 counts again
    assert [r.data_format for r in out] == [6, 0xE1, 6]
    assert p.duplicates == 1


def test_derived_values_are_opt_in() -> None:
    clock = FakeClock()
    out: list[Reading] = []
    Pipeline(clock, Dedup(), out.append, derived=True)(Advert(MAC, df5(1), -60))
    assert out[0].fields["dew_point"] is not None
    assert "acceleration_total" in out[0].fields
