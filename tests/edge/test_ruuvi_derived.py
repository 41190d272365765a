"""derived(): RuuviCollector's formulas, against the worked example in the protocol notes."""

from __future__ import annotations

import math

import pytest

from core.ruuvi import decode, derived, payload_from_hex

DF5_VALID = "0512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F"  # 24.3 °C, 53.49 %, 100044 Pa


def test_worked_example() -> None:
    fields = decode(payload_from_hex(DF5_VALID))
    assert derived(fields) == {
        "dew_point": 14.262,
        "absolute_humidity": 11.839,
        "equilibrium_vapor_pressure": 3037.496,
        "air_density": 1.165,
        "acceleration_total": 1036.015,
    }
    assert list(derived(fields)) == [
        "dew_point",
        "absolute_humidity",
        "equilibrium_vapor_pressure",
        "air_density",
        "acceleration_total",
    ]


def test_worked_example_matches_the_notes_figures() -> None:
    # The notes give e_s 3037.50 Pa, AH 11.839 g/m³, Td 14.262 °C, rho 1.16535 kg/m³, |a| 1.03602 g.
    d = derived({"temperature": 24.3, "humidity": 53.49, "pressure": 100044})
    assert d["equilibrium_vapor_pressure"] == pytest.approx(3037.50, abs=0.005)
    assert d["absolute_humidity"] == 11.839
    assert d["dew_point"] == 14.262
    assert d["air_density"] == pytest.approx(1.16535, abs=0.0005)
    a = derived({"acceleration_x": 4, "acceleration_y": -4, "acceleration_z": 1036})
    assert a["acceleration_total"] == pytest.approx(1036.02, abs=0.005)


def test_values_are_rounded_to_three_decimals() -> None:
    d = derived({"temperature": 29.5, "humidity": 55.3, "pressure": 101102, "acceleration_x": 1})
    for key in ("dew_point", "absolute_humidity", "equilibrium_vapor_pressure", "air_density"):
        assert d[key] == round(d[key], 3)


@pytest.mark.parametrize(
    ("fields", "none_keys"),
    [
        ({}, "all"),
        ({"temperature": None, "humidity": 50.0, "pressure": 100000}, "all"),
        ({"temperature": 20.0, "humidity": None, "pressure": 100000}, ["dew_point", "absolute_humidity",
                                                                      "air_density", "acceleration_total"]),
        ({"temperature": 20.0, "humidity": 50.0, "pressure": None}, ["air_density", "acceleration_total"]),
        ({"temperature": 20.0, "humidity": 50.0, "pressure": 100000, "acceleration_x": 1, "acceleration_y": None,
          "acceleration_z": 3}, ["acceleration_total"]),
        ({"temperature": 20.0, "humidity": 0.0, "pressure": 100000}, ["dew_point", "acceleration_total"]),
    ],
)  # fmt: skip
def test_none_when_an_input_is_none_or_missing(fields: dict[str, object], none_keys: str | list[str]) -> None:
    d = derived(fields)
    expected_none = set(d) if none_keys == "all" else set(none_keys)
    assert {k for k, v in d.items() if v is None} == expected_none


def test_formats_without_acceleration() -> None:
    df6 = decode(payload_from_hex("06170C5668C79E007000C90501D9FFCD004C884F"))
    d = derived(df6)
    assert d["acceleration_total"] is None
    assert d["dew_point"] == 19.61
    assert derived(decode(payload_from_hex("0843825B56324FE019C4BD4D6D3CECAC6E1CAABBCCDDEEDD"))) == dict.fromkeys(d)


def test_no_exception_and_finite_for_any_decodable_inputs() -> None:
    for t in (-163.835, -127.99, -40.0, 0.0, 163.835):
        for rh in (0.0, 0.0025, 100.0, 163.835):
            for p in (50000, 115535):
                d = derived({"temperature": t, "humidity": rh, "pressure": p})
                assert all(v is None or math.isfinite(v) for v in d.values())
    # Outside what decoders produce the formulas have poles; derived() yields None there, never raises.
    assert derived({"temperature": -243.5, "humidity": 50.0, "pressure": 1})["dew_point"] is None
    assert derived({"temperature": 1e308, "humidity": 50.0})["absolute_humidity"] is None
    assert derived({"temperature": 20.0, "humidity": -5.0})["dew_point"] is None
