"""The simulator's encoders: the official vectors re-encoded byte for byte, and round trips through the decoder."""

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import ruuvi
from edge.sources import encode

VECTORS = json.loads((Path(__file__).parent.parent / "vectors" / "ruuvi.json").read_text())
# Vectors whose bytes carry something the decoded fields do not, so no encoder can give them back:
NOT_FROM_FIELDS = {
    ("6", "invalid"): "flags 0xFF also sets bits 3 and 5, which DF6 does not use",
    ("E1", "reserved bytes are ignored"): "reserved bytes 29-33 are 00; the encoder writes FF as the docs say",
}
ENCODABLE = [v for v in VECTORS if v["format"] in ("5", "6", "E1") and not v.get("error")
             and (v["format"], v["name"]) not in NOT_FROM_FIELDS]


def encode_fields(fmt: str, f: dict[str, Any]) -> bytes:
    flags = (encode.CALIBRATION * f.get("calibration_in_progress", False)
             | encode.BUTTON * f.get("button_pressed", False)
             | encode.RTC_ON_BOOT * f.get("rtc_running_on_boot", False))
    env = {"temperature": f["temperature"], "humidity": f["humidity"], "pressure": f["pressure"], "mac": f["mac"]}
    if fmt == "5":
        return encode.df5(**env, acceleration=(f["acceleration_x"], f["acceleration_y"], f["acceleration_z"]),
                          battery_voltage=f["battery_voltage"], tx_power=f["tx_power"],
                          movement_counter=f["movement_counter"], sequence=f["measurement_sequence_number"])
    air = {k: f[k] for k in ("pm2_5", "co2", "voc_index", "nox_index", "luminosity", "sound_average_dba")}
    if fmt == "6":
        return encode.df6(**env, **air, sequence=f["measurement_sequence_number"], flags=flags)
    return encode.e1(**env, **air, pm1_0=f["pm1_0"], pm4_0=f["pm4_0"], pm10_0=f["pm10_0"],
                     sound_instant_dba=f["sound_instant_dba"], sound_peak_spl_db=f["sound_peak_spl_db"],
                     sequence=f["measurement_sequence_number"], flags=flags)


def test_there_are_vectors_for_each_format() -> None:
    assert {v["format"] for v in ENCODABLE} == {"5", "6", "E1"}
    assert len(ENCODABLE) >= 30
    assert all(any((v["format"], v["name"]) == k for v in VECTORS) for k in NOT_FROM_FIELDS)


@pytest.mark.parametrize("vector", ENCODABLE, ids=[f'{v["format"]}-{v["name"]}' for v in ENCODABLE])
def test_vector_reencodes_to_the_same_bytes(vector: dict[str, Any]) -> None:
    assert encode_fields(vector["format"], vector["expected"]).hex() == vector["hex"]


def test_df5_hand_computed() -> None:
    # temperature 1.0 -> 200 = 0x00c8; humidity 50.0 -> 20000 = 0x4e20; pressure 101325 -> 51325 = 0xc87d;
    # acc (0, -1, 1000); 3000 mV / +4 dBm -> (1400 << 5) | 22 = 0xaf16; movement 7; seq 65534; mac
    payload = encode.df5(temperature=1.0, humidity=50.0, pressure=101325, acceleration=(0, -1, 1000),
                         battery_voltage=3000, tx_power=4, movement_counter=7, sequence=65534,
                         mac="c0:01:02:03:04:05")
    assert payload.hex() == "05" "00c8" "4e20" "c87d" "0000" "ffff" "03e8" "af16" "07" "fffe" "c00102030405"


def test_out_of_range_raises() -> None:
    with pytest.raises(ValueError, match="temperature 200 is out of range"):
        encode.df5(temperature=200, humidity=0, pressure=50000)
    with pytest.raises(ValueError, match="sequence 65535 is out of range"):
        encode.df5(temperature=0, humidity=0, pressure=50000, sequence=65535)
    with pytest.raises(ValueError, match="mac must have 6 bytes"):
        encode.e1(temperature=0, humidity=0, pressure=50000, mac="01:02")


temps = st.integers(-32767, 32767).map(lambda c: c / 200)
hums = st.integers(0, 40000).map(lambda c: c / 400)
press = st.integers(50000, 115534)


@given(t=temps, h=hums, p=press, a=st.tuples(*[st.integers(-32767, 32767)] * 3), v=st.integers(1600, 3646),
       tx=st.integers(-20, 10).map(lambda c: c * 2), m=st.integers(0, 254), seq=st.integers(0, 65534),
       mac=st.binary(min_size=6, max_size=6).filter(lambda b: b != b"\xff" * 6))
def test_df5_round_trip(t: float, h: float, p: int, a: tuple[int, int, int], v: int, tx: int, m: int, seq: int,
                        mac: bytes) -> None:
    got = ruuvi.decode(encode.df5(temperature=t, humidity=h, pressure=p, acceleration=a, battery_voltage=v,
                                  tx_power=tx, movement_counter=m, sequence=seq, mac=mac))
    assert got == {"data_format": 5, "temperature": t, "humidity": h, "pressure": p, "acceleration_x": a[0],
                   "acceleration_y": a[1], "acceleration_z": a[2], "battery_voltage": v, "tx_power": tx,
                   "movement_counter": m, "measurement_sequence_number": seq, "mac": mac.hex(":")}


@given(t=temps, h=hums, p=press, pm=st.integers(0, 10000).map(lambda c: c / 10), co2=st.integers(0, 40000),
       voc=st.integers(0, 500), nox=st.integers(0, 500), lux=st.integers(0, 14428400).map(lambda c: c / 100),
       snd=st.integers(0, 510).map(lambda c: (90 + c) / 5), seq=st.integers(0, 0xFFFFFE))
def test_air_round_trip(t: float, h: float, p: int, pm: float, co2: int, voc: int, nox: int, lux: float,
                        snd: float, seq: int) -> None:
    mac = "c4:05:06:07:08:09"
    common = {"temperature": t, "humidity": h, "pressure": p, "pm2_5": pm, "co2": co2, "voc_index": voc,
              "nox_index": nox, "sound_average_dba": snd, "calibration_in_progress": False, "button_pressed": False,
              "rtc_running_on_boot": False}
    e1 = ruuvi.decode(encode.e1(temperature=t, humidity=h, pressure=p, pm1_0=pm, pm2_5=pm, pm4_0=pm, pm10_0=pm,
                                co2=co2, voc_index=voc, nox_index=nox, luminosity=lux, sound_instant_dba=snd,
                                sound_average_dba=snd, sound_peak_spl_db=snd, sequence=seq, mac=mac))
    assert e1 == {"data_format": 0xE1, **common, "measurement_sequence_number": seq, "mac": mac, "pm1_0": pm,
                  "pm4_0": pm, "pm10_0": pm, "luminosity": lux, "sound_instant_dba": snd, "sound_peak_spl_db": snd}
    df6 = ruuvi.decode(encode.df6(temperature=t, humidity=h, pressure=p, pm2_5=pm, co2=co2, voc_index=voc,
                                  nox_index=nox, luminosity=lux, sound_average_dba=snd, sequence=seq, mac=mac))
    lux6 = df6.pop("luminosity")
    assert df6 == {"data_format": 6, **common, "measurement_sequence_number": seq & 0xFF, "mac": "07:08:09"}
    # DF6 luminosity is a log code: within half a step (about 2.2 %) of the value, plus rounding near 0.
    assert abs(lux6 - min(lux, 65535.0)) <= 0.022 * lux + 0.03


@given(
    t=st.integers(-32767, 32767), h=st.integers(0, 65534), p=st.integers(0, 65534),
    acc=st.tuples(st.integers(-32767, 32767), st.integers(-32767, 32767), st.integers(-32767, 32767)),
    volts=st.integers(0, 2046), tx=st.integers(0, 15), movement=st.integers(0, 254), seq=st.integers(0, 65534),
)
def test_df5_codes_is_the_checked_encoder_without_checks(
    t: int, h: int, p: int, acc: tuple[int, int, int], volts: int, tx: int, movement: int, seq: int
) -> None:
    mac = bytes.fromhex("c0ffee123456")
    checked = encode.df5(temperature=t / 200, humidity=h / 400, pressure=p + 50000, acceleration=acc,
                         battery_voltage=volts + 1600, tx_power=tx * 2 - 40, movement_counter=movement,
                         sequence=seq, mac=mac)
    assert encode.df5_codes(t, h, p, *acc, volts, tx, movement, seq, mac) == checked
