"""Values derived from decoded fields, with RuuviCollector's formulas.

Source: Scrin/RuuviCollector ``MeasurementValueCalculator.java`` (ported unchanged to RuuviBridge
``value_calculator/calculator.go``). T in °C, RH in %, P in Pa, acceleration in mG. Each result is rounded
to 3 decimals and is None when an input is None or missing, or when the formula has no real value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any


def equilibrium_vapor_pressure(t: float) -> float:
    """Saturation vapour pressure over water, Pa (Magnus formula)."""
    return 611.2 * math.exp(17.67 * t / (243.5 + t))


def absolute_humidity(t: float, rh: float) -> float:
    """g/m³."""
    return equilibrium_vapor_pressure(t) * rh * 0.021674 / (273.15 + t)


def dew_point(t: float, rh: float) -> float | None:
    """°C; undefined (None) at 0 % RH, where the logarithm diverges."""
    if rh == 0:
        return None
    v = math.log(rh / 100 * equilibrium_vapor_pressure(t) / 611.2)
    return -243.5 * v / (v - 17.67)


def air_density(t: float, rh: float, p: float) -> float:
    """kg/m³ of moist air."""
    return 1.2929 * 273.15 / (t + 273.15) * (p - 0.3783 * rh / 100 * equilibrium_vapor_pressure(t)) / 101300


def acceleration_total(x: float, y: float, z: float) -> float:
    """Length of the acceleration vector, in the unit of its components (mG here)."""
    return math.sqrt(x * x + y * y + z * z)


def _safe(fn: Callable[..., float | None], *args: Any) -> float | None:
    if any(a is None for a in args):
        return None
    try:
        value = fn(*args)
    except (ArithmeticError, ValueError):
        # ZeroDivisionError/OverflowError (ArithmeticError) or a math domain error: no real value.
        return None
    if value is None or not math.isfinite(value):
        return None
    return round(value, 3)


def derived(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The derived values for one decoded reading, in canonical key order.

    All five keys are always present; a value is None when its inputs are not there (e.g.
    ``acceleration_total`` for formats without acceleration).
    """
    t = fields.get("temperature")
    rh = fields.get("humidity")
    p = fields.get("pressure")
    return {
        "dew_point": _safe(dew_point, t, rh),
        "absolute_humidity": _safe(absolute_humidity, t, rh),
        "equilibrium_vapor_pressure": _safe(equilibrium_vapor_pressure, t),
        "air_density": _safe(air_density, t, rh, p),
        "acceleration_total": _safe(
            acceleration_total,
            fields.get("acceleration_x"),
            fields.get("acceleration_y"),
            fields.get("acceleration_z"),
        ),
    }
